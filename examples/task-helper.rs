//! A helper the integration tests and benchmarks run as a task, so they need no
//! tool a fresh machine may lack (`setsid`, python). Subcommands:
//!
//! - `daemonize PIDFILE`: double-fork a daemon into a new session that writes
//!   its pid to PIDFILE and sleeps forever; the original process exits at once.
//! - `ignore-term PIDFILE`: write our pid, ignore SIGTERM, sleep forever.
//! - `term-exit PIDFILE`: write our pid, exit 0 on SIGTERM.

use std::{io::Write, time::Duration};

fn write_pid(path: &str) {
    let tmp = format!("{path}.tmp");
    if let Ok(mut f) = std::fs::File::create(&tmp) {
        let _ = writeln!(f, "{}", std::process::id());
    }
    let _ = std::fs::rename(&tmp, path);
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, path) = match args.as_slice() {
        [cmd, path] => (cmd.as_str(), path.as_str()),
        _ => {
            eprintln!("usage: task-helper daemonize|ignore-term|term-exit PIDFILE");
            std::process::exit(2);
        }
    };
    match cmd {
        "daemonize" => {
            // SAFETY: single-threaded program; plain fork/setsid.
            match unsafe { libc::fork() } {
                0 => {
                    unsafe { libc::setsid() };
                    match unsafe { libc::fork() } {
                        0 => {
                            write_pid(path);
                            sleep_forever();
                        }
                        _ => std::process::exit(0),
                    }
                }
                -1 => std::process::exit(1),
                child => {
                    let mut status = 0;
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    // Wait for the grandchild's pid file so callers can rely on it.
                    for _ in 0..500 {
                        if std::path::Path::new(path).exists() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        "ignore-term" => {
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            write_pid(path);
            sleep_forever();
        }
        "term-exit" => {
            write_pid(path);
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
            }
            std::process::exit(0);
        }
        other => {
            eprintln!("unknown subcommand {other}");
            std::process::exit(2);
        }
    }
}
