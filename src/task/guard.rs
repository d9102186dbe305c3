//! The guard every auxiliary child runs under (hook scripts, COMMAND checks,
//! remote commands): a forked copy of the executor that never execs, leads the
//! child's process group and owns everything the child starts.
//!
//! # Why
//! - A death signal on the child alone would leave its own children (a shell
//!   script's `sleep`) running with nobody to enforce a timeout once the
//!   executor is SIGKILLed.
//! - A process that leaves the child's group (`setsid`, a double fork) is out
//!   of reach of `killpg`, and once its parent exits it would be re-parented
//!   to the executor, where nothing tells it apart from the task's orphans.
//!
//! # How
//! Between fork and exec (std's `pre_exec`) the child makes its own group,
//! switches user if asked, and forks once more: the new process goes on to
//! exec the command (with SIGKILL as its parent-death signal), while this one
//! stays behind as the *guard*, the group leader whose pid the caller sees.
//! The guard is a child subreaper, so everything the command starts stays in
//! its tree. It:
//! - exits as the command did (same code, or killed by the same signal),
//!   after SIGKILLing whatever the command left behind when asked to
//!   ([`Leftovers::Kill`], remote commands: nothing they start outlives
//!   them), or leaving it in the group for the caller to judge
//!   ([`Leftovers::Leave`], hooks and checks, whose runner reports a
//!   leftover that holds their output and then kills the group);
//! - forwards SIGTERM (which the group gets from a terminate) to its
//!   descendants outside the group, and otherwise ignores the catchable
//!   signals a terminate sends, so the command decides how to end;
//! - on [`KILL_REQUEST`] (from the executor when a grace expires, and its own
//!   parent-death signal) SIGKILLs its whole tree;
//! - keeps no descriptor open (a pipe's reader sees EOF when the command and
//!   what it started are done).
//!
//! No exec means no second program start (the dynamic loader alone costs a
//! fresh exec more than `fork`), but the guard runs in a forked child of a
//! multi-threaded process: raw system calls only, nothing allocates. It walks
//! `/proc` with `getdents64` into stack buffers.

use std::{ffi::c_int, io, os::unix::process::CommandExt, process::Command};

use nix::sys::signal::Signal;

use super::process::{self, UserSwitch};

/// Asks a guard to SIGKILL its whole tree; also its parent-death signal.
pub(crate) const KILL_REQUEST: Signal = Signal::SIGUSR1;

/// Descendants of one guard tracked by one `/proc` walk; more are found by
/// the next round (every kill loop repeats until nothing is left).
const MAX_TREE: usize = 1024;

/// What a guard does with what its command left behind when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leftovers {
    /// SIGKILL it (with what left the group) before exiting.
    Kill,
    /// Leave it in the group: the caller judges and kills the group.
    Leave,
}

/// Makes `command` run under a guard (see the module docs), as `user` when
/// given, doing as `leftovers` says when the command ends. (A `pre_exec` makes std fork instead of `posix_spawn`. The death
/// signal follows the spawning *thread*: every auxiliary is spawned from the
/// runtime's long-lived thread.)
pub(crate) fn guard(command: &mut Command, user: Option<UserSwitch>, leftovers: Leftovers) {
    let executor = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec only raw system calls run (setpgid,
    // setgroups, setgid, setuid, sigprocmask, fork, prctl, getppid, open,
    // getdents64, read, close, close_range, signal, sigwaitinfo, waitpid,
    // kill, setrlimit, _exit): all async-signal-safe, nothing allocates.
    unsafe {
        command.pre_exec(move || {
            // Our own group, set here (not by std) so the command, forked
            // below, shares it.
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            process::switch_user(user.as_ref())?;
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &watched(), &mut previous);
            // Both before the fork: a command that forks and exits at once
            // must leave its children to us, not to the executor, and
            // neither setting passes to a forked child. KILL_REQUEST
            // (blocked, so it waits for sigwaitinfo) when the executor dies;
            // the loop's first check covers a death before this point.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                KILL_REQUEST as libc::c_ulong,
                0,
                0,
                0,
            );
            let guard = libc::getpid();
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    // The command: back to the signal mask it had, dies with the guard.
                    libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
                    process::die_with_parent(Signal::SIGKILL, guard)
                }
                command => guard_loop(executor, command, leftovers),
            }
        });
    }
}

/// The signals the guard waits for (blocked, taken by `sigwaitinfo`).
fn watched() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGCHLD, libc::SIGTERM, KILL_REQUEST as c_int] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// The guard's life (see the module docs); never returns.
///
/// # Safety
/// Runs in a forked child of a multi-threaded process: raw system calls only.
unsafe fn guard_loop(executor: libc::pid_t, command: libc::pid_t, leftovers: Leftovers) -> ! {
    // SAFETY: see the function's contract; every pointer is to a local.
    unsafe {
        // No descriptor of ours stays open: not the command's pipes, not std's
        // exec-error pipe (whose reader waits for every copy to close).
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            let mut limit: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                c_int::try_from(limit.rlim_cur.min(65_536)).unwrap_or(1024)
            } else {
                1024
            };
            for fd in 0..max {
                libc::close(fd);
            }
        }
        for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Our own exit may mirror a core-dumping signal: no core of ours.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        let me = libc::getpid();
        let watched = watched();
        let mut ended: Option<c_int> = None;
        loop {
            if libc::getppid() != executor {
                kill_tree(me, command, &mut ended);
                libc::_exit(137);
            }
            reap(command, &mut ended);
            if let Some(status) = ended {
                if leftovers == Leftovers::Kill {
                    kill_tree(me, command, &mut ended);
                }
                mirror(status);
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            match libc::sigwaitinfo(&watched, &mut info) {
                libc::SIGTERM => signal_descendants(me, libc::SIGTERM, Some(me)),
                s if s == KILL_REQUEST as c_int => {
                    kill_tree(me, command, &mut ended);
                    mirror(ended.unwrap_or(libc::SIGKILL));
                }
                _ => {}
            }
        }
    }
}

/// What one `waitpid(-1)` found.
enum Waited {
    /// A child was reaped.
    Reaped,
    /// Children are left, none has ended (only without blocking).
    Running,
    /// No child is left.
    NoChild,
}

/// One `waitpid(-1, flags)`, again on EINTR, keeping the command's status
/// if it was the command that ended.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn wait_child(flags: c_int, command: libc::pid_t, ended: &mut Option<c_int>) -> Waited {
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid with a pointer to a local.
        match unsafe { libc::waitpid(-1, &mut status, flags) } {
            0 => return Waited::Running,
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            -1 => return Waited::NoChild,
            pid => {
                if pid == command {
                    *ended = Some(status);
                }
                return Waited::Reaped;
            }
        }
    }
}

/// Reaps every exited child without waiting, keeping the command's status.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn reap(command: libc::pid_t, ended: &mut Option<c_int>) {
    // SAFETY: the caller's contract.
    while let Waited::Reaped = unsafe { wait_child(libc::WNOHANG, command, ended) } {}
}

/// SIGKILLs every descendant and reaps them all, until no child is left;
/// keeps the command's status if it is among them. With no child left there
/// is nothing to find: a subreaper's every living descendant hangs from a
/// living child of its own. So the common case, a command that leaves
/// nothing behind, costs one `waitpid` and no `/proc` walk.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn kill_tree(me: libc::pid_t, command: libc::pid_t, ended: &mut Option<c_int>) {
    // SAFETY: the caller's contract.
    unsafe {
        loop {
            match wait_child(libc::WNOHANG, command, ended) {
                Waited::Reaped => {}
                Waited::NoChild => return,
                Waited::Running => {
                    signal_descendants(me, libc::SIGKILL, None);
                    wait_child(0, command, ended);
                }
            }
        }
    }
}

/// Sends `signal` to every descendant of `me` (outside the group `outside`
/// only, when given), found by walking `/proc` until a walk finds no one new.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn signal_descendants(me: libc::pid_t, signal: c_int, outside: Option<libc::pid_t>) {
    let mut tree = [0 as libc::pid_t; MAX_TREE];
    tree[0] = me;
    let mut len = 1;
    loop {
        let before = len;
        // SAFETY: the caller's contract.
        unsafe {
            for_each_process(|pid, ppid, pgrp| {
                let known = &tree[..len];
                if len < MAX_TREE && known.contains(&ppid) && !known.contains(&pid) {
                    tree[len] = pid;
                    len += 1;
                    if outside.is_none_or(|group| pgrp != group) {
                        // SAFETY: kill is a plain system call.
                        libc::kill(pid, signal);
                    }
                }
            });
        }
        if len == before || len == MAX_TREE {
            return;
        }
    }
}

/// Calls `visit(pid, ppid, pgrp)` for every process in `/proc`.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn for_each_process(mut visit: impl FnMut(libc::pid_t, libc::pid_t, libc::pid_t)) {
    // SAFETY: open/getdents64/close on our own descriptor and stack buffer.
    unsafe {
        let dir = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return;
        }
        // 8-byte aligned, as `struct linux_dirent64` needs.
        let mut buf = [0u64; 1024];
        loop {
            let got = libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                std::mem::size_of_val(&buf),
            );
            let Ok(got) = usize::try_from(got) else { break };
            if got == 0 {
                break;
            }
            let bytes = std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), got);
            for name in dirent_names(bytes) {
                let Some(pid) = parse_pid(name) else { continue };
                if let Some((ppid, pgrp)) = read_stat(pid) {
                    visit(pid, ppid, pgrp);
                }
            }
        }
        libc::close(dir);
    }
}

/// The names in a `getdents64` buffer (`d_reclen` at offset 16, the
/// NUL-terminated `d_name` at 19).
fn dirent_names(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let record = bytes.get(offset..)?;
        let len = usize::from(u16::from_ne_bytes([*record.get(16)?, *record.get(17)?]));
        let name = record.get(19..len.min(record.len()))?;
        if len == 0 {
            return None;
        }
        offset += len;
        Some(name.split(|b| *b == 0).next().unwrap_or_default())
    })
}

/// A `/proc` entry's name as a pid (digits only).
fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Parent and group of `pid`, read from `/proc/<pid>/stat`.
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn read_stat(pid: libc::pid_t) -> Option<(libc::pid_t, libc::pid_t)> {
    let mut path = [0u8; 32];
    stat_path(pid, &mut path)?;
    let mut line = [0u8; 512];
    // SAFETY: a NUL-terminated path; read into a local buffer.
    let got = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let got = libc::read(fd, line.as_mut_ptr().cast(), line.len());
        libc::close(fd);
        got
    };
    let (ppid, pgrp, _) = process::stat_numbers(line.get(..usize::try_from(got).ok()?)?)?;
    Some((ppid, pgrp))
}

/// Writes `/proc/<pid>/stat` and a NUL into `out`.
fn stat_path(pid: libc::pid_t, out: &mut [u8; 32]) -> Option<()> {
    let mut digits = [0u8; 12];
    let mut n = u32::try_from(pid).ok()?;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + u8::try_from(n % 10).ok()?;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts: [&[u8]; 4] = [b"/proc/", &digits[start..], b"/stat", b"\0"];
    let mut at = 0;
    for part in parts {
        out.get_mut(at..at + part.len())?.copy_from_slice(part);
        at += part.len();
    }
    Some(())
}

/// Ends the guard the way the command ended (`status` from `waitpid`).
///
/// # Safety
/// Raw system calls only; for the guard.
unsafe fn mirror(status: c_int) -> ! {
    // SAFETY: signal/sigprocmask/kill/_exit on ourselves.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut one: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut one);
            libc::sigaddset(&mut one, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_paths_are_built_without_allocating() {
        let mut out = [0u8; 32];
        stat_path(4_194_304, &mut out).expect("fits");
        assert_eq!(&out[..21], b"/proc/4194304/stat\0\0\0");
        let mut out = [0u8; 32];
        stat_path(1, &mut out).expect("fits");
        assert_eq!(&out[..14], b"/proc/1/stat\0\0");
        assert!(stat_path(-1, &mut out).is_none());
    }

    #[test]
    fn proc_names_that_are_pids() {
        assert_eq!(parse_pid(b"123"), Some(123));
        assert_eq!(parse_pid(b"self"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    #[test]
    fn dirent_records_are_walked_by_their_length() {
        let record = |name: &[u8]| {
            let len = (19 + name.len() + 1).next_multiple_of(8);
            let mut r = vec![0u8; len];
            r[16..18].copy_from_slice(&u16::try_from(len).expect("small").to_ne_bytes());
            r[19..19 + name.len()].copy_from_slice(name);
            r
        };
        let buf: Vec<u8> = [record(b"."), record(b"1"), record(b"self"), record(b"4242")].concat();
        let names: Vec<&[u8]> = dirent_names(&buf).collect();
        assert_eq!(names, vec![&b"."[..], b"1", b"self", b"4242"]);
        assert_eq!(
            dirent_names(&buf[..10]).count(),
            0,
            "a cut record is not read"
        );
    }

    #[test]
    fn this_process_is_found_with_its_parent_and_group() {
        let me = i32::try_from(std::process::id()).expect("a pid");
        let mut seen = None;
        // SAFETY: a plain walk in a normal process.
        unsafe {
            for_each_process(|pid, ppid, pgrp| {
                if pid == me {
                    seen = Some((ppid, pgrp));
                }
            });
        }
        assert_eq!(
            seen,
            Some((
                nix::unistd::getppid().as_raw(),
                nix::unistd::getpgrp().as_raw()
            ))
        );
    }
}
