//! A helper the integration tests and benchmarks run as a task, so they need no
//! tool a fresh machine may lack (`setsid`, python). Subcommands:
//!
//! - `daemonize PIDFILE`: double-fork a daemon into a new session that writes
//!   its pid to PIDFILE and sleeps forever; the original process exits at once.
//! - `ignore-term PIDFILE`: write our pid, ignore SIGTERM, sleep forever.
//! - `term-exit PIDFILE`: write our pid, exit 0 on SIGTERM.
//! - `http-server PORT STATUSFILE`: serve HTTP/1.1 on 127.0.0.1:PORT. Every
//!   request is appended to `requests.log` (in the working directory) and
//!   answered with the status read from STATUSFILE at that moment: `CODE` or
//!   `CODE LOCATION` (a redirect); `/ok` always answers 200. Writes
//!   `server.pid` once listening. Health-check tests flip the answer by
//!   rewriting STATUSFILE.
//! - `https-server PORT STATUSFILE`: the same over TLS, with a self-signed
//!   certificate generated at start.
//! - `tcp-server PORT`: accept and close connections on 127.0.0.1:PORT, one
//!   line per connection in `connections.log`; writes `server.pid`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

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

fn die(message: &str) -> ! {
    eprintln!("task-helper: {message}");
    std::process::exit(2);
}

fn append_line(file: &str, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn listen(port: &str) -> TcpListener {
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| die(&format!("bad port {port:?}")));
    let listener = reuseport_listener(port)
        .unwrap_or_else(|e| die(&format!("cannot listen on port {port}: {e}")));
    write_pid("server.pid");
    listener
}

/// Listens on 127.0.0.1:`port` with `SO_REUSEPORT`, so that a test may hold
/// the port reserved (bound, not listening) until this server takes it.
fn reuseport_listener(port: u16) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let socket = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    setsockopt(&socket, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrIn::new(127, 0, 0, 1, port),
    )?;
    listen(&socket, Backlog::new(128).map_err(std::io::Error::from)?)?;
    Ok(TcpListener::from(socket))
}

/// The answer configured in `status_file` for `path`: (code, location).
fn answer(status_file: &str, path: &str) -> (u16, Option<String>) {
    if path == "/ok" {
        return (200, None);
    }
    let text = std::fs::read_to_string(status_file).unwrap_or_default();
    let mut words = text.split_whitespace();
    let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(503);
    (code, words.next().map(str::to_owned))
}

/// Reads one request head and answers it.
fn respond(stream: &mut impl ReadWrite, status_file: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    append_line("requests.log", &request_line);
    let (code, location) = answer(status_file, &path);
    let location = location
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let response =
        format!("HTTP/1.1 {code} Test\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap_or_else(|e| die(&format!("generating a certificate: {e}")));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
        })
        .unwrap_or_else(|e| die(&format!("TLS setup: {e}")));
    Arc::new(config)
}

fn serve_http(port: &str, status_file: &str, tls: Option<Arc<rustls::ServerConfig>>) -> ! {
    let listener = listen(port);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let status_file = status_file.to_owned();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = match tls {
                Some(config) => serve_tls(stream, config, &status_file),
                None => respond(&mut &stream, &status_file),
            };
        });
    }
    die("listener closed");
}

fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    status_file: &str,
) -> std::io::Result<()> {
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    respond(&mut tls, status_file)?;
    tls.conn.send_close_notify();
    tls.flush()
}

fn serve_tcp(port: &str) -> ! {
    let listener = listen(port);
    for stream in listener.incoming() {
        if stream.is_ok() {
            append_line("connections.log", "connected");
        }
    }
    die("listener closed");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, path) = match args.as_slice() {
        [cmd, port, status] if cmd == "http-server" => serve_http(port, status, None),
        [cmd, port, status] if cmd == "https-server" => serve_http(port, status, Some(self_signed_tls())),
        [cmd, port] if cmd == "tcp-server" => serve_tcp(port),
        [cmd, path] => (cmd.as_str(), path.as_str()),
        _ => die("usage: task-helper daemonize|ignore-term|term-exit PIDFILE | http-server|https-server PORT STATUSFILE | tcp-server PORT"),
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
