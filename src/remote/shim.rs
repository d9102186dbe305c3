//! The keeper of one remote command: the executor's own binary, started as
//! the command's process-group leader (argv[0] [`SHIM_ARGV0`]), which runs
//! the command as its child and owns everything the command starts.
//!
//! # Why
//! A process that leaves the command's group (`setsid`, a double fork) is out
//! of reach of `killpg`, and once its parent exits it is re-parented to the
//! nearest subreaper: the executor, where nothing tells it apart from the
//! task's own orphans. The keeper is a child subreaper itself, so every such
//! process stays in *its* tree; when the command ends, it SIGKILLs that whole
//! tree before it exits. It also gets [`KILL_REQUEST`] as its parent-death
//! signal, so a SIGKILLed executor still takes its remote commands with it
//! (the command gets SIGKILL as its own parent-death signal, should the
//! keeper itself be SIGKILLed).
//!
//! # Protocol with the executor
//! - argv: `[SHIM_ARGV0, executor pid, program, argv0, args…]`; the
//!   environment, working directory and stdio are the command's.
//! - SIGTERM to the group (timeout, `DELETE`): the command's group gets it
//!   from the kernel; the keeper forwards it to the processes that left the
//!   group and goes on waiting.
//! - [`KILL_REQUEST`] to the keeper alone (the grace expired, the executor
//!   exits or died): the keeper SIGKILLs its whole tree.
//! - The keeper exits as the command did: the same exit code, or killed by
//!   the same signal, so results read as if the command were the leader.

use std::{
    ffi::{OsStr, OsString},
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, raise, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{getpgrp, getppid, Pid},
};

use crate::task::process::{self, ProcInfo};

/// `argv[0]` that makes the executor binary act as a command's keeper.
pub const SHIM_ARGV0: &str = "mesos-hook-executor:remote-command";

/// Asks a keeper to SIGKILL its whole tree; also its parent-death signal.
pub(crate) const KILL_REQUEST: Signal = Signal::SIGUSR1;

/// Runs as a keeper if this process was started as one; `None` otherwise.
/// Call first thing in `main`, before anything else reads the environment.
#[must_use]
pub fn run_if_keeper() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    if args.next().as_deref() != Some(OsStr::new(SHIM_ARGV0)) {
        return None;
    }
    let rest: Vec<OsString> = args.collect();
    Some(keep(&rest))
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Signaled(Signal),
}

fn keep(args: &[OsString]) -> ExitCode {
    let [executor, program, argv0, rest @ ..] = args else {
        eprintln!("{SHIM_ARGV0}: started without a command");
        return ExitCode::from(127);
    };
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, KILL_REQUEST] {
        signals.add(s);
    }
    if signals.thread_block().is_err() {
        return ExitCode::from(127);
    }
    // The executor may have died before our parent-death signal was armed
    // (it checks before exec, this covers exec itself).
    let parent = executor.to_str().and_then(|p| p.parse::<i32>().ok());
    if parent != Some(getppid().as_raw()) {
        return ExitCode::from(137);
    }
    if let Err(e) = process::set_child_subreaper() {
        eprintln!("{SHIM_ARGV0}: cannot become a subreaper: {e}");
        return ExitCode::from(127);
    }
    let me = Pid::this();
    let mut command = Command::new(program);
    command.arg0(argv0).args(rest);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || process::die_with_parent(Signal::SIGKILL, me.as_raw()));
    }
    let leader = match command.spawn() {
        Ok(child) => Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
        Err(e) => {
            eprintln!("{SHIM_ARGV0}: cannot start {program:?}: {e}");
            return ExitCode::from(127);
        }
    };
    release_stdio();
    // Our own exit may mirror a core-dumping signal: no core of ours.
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
    loop {
        if let Some(end) = reap(leader) {
            // The command is over: nothing it started outlives it.
            let _ = kill_tree(leader);
            return mirror(end);
        }
        match signals.wait() {
            Ok(Signal::SIGTERM) => forward_to_escaped(Signal::SIGTERM),
            Ok(s) if s == KILL_REQUEST => {
                let _ = kill(leader, Signal::SIGKILL);
                let end = kill_tree(leader).unwrap_or(Ended::Signaled(Signal::SIGKILL));
                return mirror(end);
            }
            _ => {}
        }
    }
}

/// Points our copies of the command's stdio at `/dev/null`, so the
/// executor's pipes end when the command's processes close theirs.
fn release_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto our own standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// How the command ended, if `status` is its leader's end.
fn ended(status: WaitStatus, leader: Pid) -> Option<Ended> {
    match status {
        WaitStatus::Exited(pid, code) if pid == leader => Some(Ended::Exited(code)),
        WaitStatus::Signaled(pid, signal, _) if pid == leader => Some(Ended::Signaled(signal)),
        _ => None,
    }
}

/// Collects every exited child; says how the command ended once it has.
fn reap(leader: Pid) -> Option<Ended> {
    let mut end = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return end,
            Ok(status) => end = end.or(ended(status, leader)),
            Err(Errno::EINTR) => {}
            Err(_) => return end,
        }
    }
}

/// SIGKILLs every descendant (repeating until none is left to find) and
/// reaps them all; says how the command ended if its leader was among them.
fn kill_tree(leader: Pid) -> Option<Ended> {
    let mut end = None;
    loop {
        process::kill_all_descendants();
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) => end = end.or(ended(status, leader)),
            Err(Errno::EINTR) => {}
            Err(_) => return end,
        }
    }
}

/// Sends `signal` to our descendants outside our process group (the group
/// itself gets the group's signals from the kernel).
fn forward_to_escaped(signal: Signal) {
    let procs = process::list_processes();
    for pid in escaped(&procs, Pid::this().as_raw(), getpgrp().as_raw()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Descendants of `me` not in the group `pgrp`.
fn escaped(procs: &[ProcInfo], me: i32, pgrp: i32) -> Vec<i32> {
    process::descendants(procs, me)
        .into_iter()
        .filter(|pid| procs.iter().any(|p| p.pid == *pid && p.pgrp != pgrp))
        .collect()
}

/// Ends this process the way the command ended.
fn mirror(ended: Ended) -> ExitCode {
    match ended {
        Ended::Exited(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Ended::Signaled(signal) => {
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: restoring the default action has no handler to be unsafe.
            let _ = unsafe { sigaction(signal, &default) };
            let mut only = SigSet::empty();
            only.add(signal);
            let _ = only.thread_unblock();
            let _ = raise(signal);
            ExitCode::from(u8::try_from(128 + signal as i32).unwrap_or(u8::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp,
            session: pgrp,
            comm: format!("p{pid}"),
        }
    }

    #[test]
    fn escaped_are_descendants_outside_the_group() {
        // keeper 10 (group 10); command 11 and its child 12 in group 10;
        // 13 left the group (setsid) under 11; 14 is the keeper's adopted
        // orphan in its own group; 20 is not ours.
        let procs = vec![
            p(10, 1, 10),
            p(11, 10, 10),
            p(12, 11, 10),
            p(13, 11, 13),
            p(14, 10, 14),
            p(20, 1, 20),
        ];
        let mut got = escaped(&procs, 10, 10);
        got.sort_unstable();
        assert_eq!(got, vec![13, 14]);
    }

    #[test]
    fn only_the_keepers_argv0_makes_a_keeper() {
        assert!(run_if_keeper().is_none(), "the test binary is no keeper");
    }
}
