//! Child processes: spawning, reaping and signalling whole process trees.
//!
//! # Spawning
//! Every child is started through the one [`Reaper`]:
//! - [`Reaper::spawn_task`] for the task's root (its [`task_command`] puts it
//!   in its own session);
//! - [`Reaper::spawn_guarded`] for everything else (hook scripts, COMMAND
//!   checks, remote commands): under a [`super::guard`] that leads its own
//!   process group and owns all it starts, stdio as the caller says
//!   ([`AuxiliaryStdio`]), and an [`Auxiliary`] handle that yields the exit
//!   status and SIGKILLs the whole group when dropped, so nothing of it
//!   survives a timeout (its future is dropped) or an aborted task; the
//!   guard's parent-death signal ends it (and what it started) if the
//!   executor itself dies.
//!
//! # Reaping
//! The executor makes itself a *child subreaper* at start, so any descendant
//! whose parent dies (a double-forked daemon, a background job of `sh -c`) is
//! re-parented to us rather than to init, and stays inside our reach. Such
//! orphans must be reaped by us, which needs a blanket `waitpid(-1)`; that is
//! only correct if *every* child we spawn goes through the one [`Reaper`], which
//! hands each exit status to whoever registered that pid. So nothing in this
//! crate uses `tokio::process` or `std::process::Child::wait`.
//!
//! `std::process::Command::spawn` itself waits for a child whose `exec` failed;
//! the reaper therefore holds its lock both while spawning and while calling
//! `waitpid`, so it can never steal that status from std.
//!
//! # The task's tree
//! The task runs in its own session (`setsid`). Its tree is: the root and its
//! descendants, every process in its session, and every orphan re-parented to
//! the executor that we did not spawn for something else (hook, check, remote
//! command) — with all their descendants. Signalling follows Mesos'
//! `os::killtree`: SIGSTOP every member (repeating the walk until it no longer
//! grows, so nothing forks past us), send the signal, then SIGCONT.
//!
//! # Errors
//! [`SpawnError`] keeps the OS error as its `source()`; its message repeats
//! the cause's text too, because TASK_FAILED messages and API answers show
//! only the top-level message.

use std::{
    collections::{HashMap, HashSet},
    ffi::NulError,
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, MutexGuard},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, killpg, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use tokio::{
    net::unix::pipe,
    sync::oneshot::{self, error::RecvError},
};

pub(crate) use super::spawner::AuxCommand;
use crate::{task::launch::LaunchSpec, task::termination::ExitOutcome};

/// What a spawned child is for; decides whether its orphans count as the task's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The task's root process.
    Task,
    /// Anything else (hook, health check, remote command).
    Auxiliary,
}

#[derive(Default)]
struct ReaperState {
    waiters: HashMap<i32, (Role, oneshot::Sender<ExitOutcome>)>,
    /// Guards forked by the spawner whose exit is still to come.
    spawned: HashSet<i32>,
}

impl ReaperState {
    /// Hands `pid`'s exit to its waiter; `unknown` is logged when it has none.
    fn deliver(&mut self, pid: i32, outcome: ExitOutcome, unknown: &str) {
        match self.waiters.remove(&pid) {
            Some((_, tx)) => {
                let _ = tx.send(outcome);
            }
            None => tracing::debug!(pid, ?outcome, "{unknown}"),
        }
    }
}

/// The single place that waits for children. Cheap to clone. (`pub` only
/// because `health::TaskContext`, a `pub` struct, holds one; every method is
/// crate-private.)
#[derive(Clone)]
pub struct Reaper {
    state: Arc<Mutex<ReaperState>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// Becomes a child subreaper, subscribes to SIGCHLD and starts reaping.
    /// Must run inside a tokio runtime, before any child is spawned.
    pub(crate) fn install() -> io::Result<Self> {
        set_child_subreaper()?;
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Self {
            state: Arc::new(Mutex::new(ReaperState::default())),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        if let Some(spawner) = super::spawner::get() {
            // The spawner is a child of ours but not part of the task (nor
            // are its guards): registered as an auxiliary.
            let (tx, _) = oneshot::channel();
            reaper
                .lock()
                .waiters
                .insert(spawner.pid(), (Role::Auxiliary, tx));
            if let Some(exits) = spawner.take_exits() {
                exits.set_nonblocking(true)?;
                let exits = tokio::net::UnixStream::from_std(exits)?;
                let r = reaper.clone();
                tokio::spawn(async move { r.deliver_spawner_exits(exits).await });
            }
        }
        Ok(reaper)
    }

    /// Delivers the exits of guards the spawner forked, as [`Self::reap_all`]
    /// does for our own children, until the spawner is gone.
    async fn deliver_spawner_exits(&self, mut exits: tokio::net::UnixStream) {
        use tokio::io::AsyncReadExt;
        let mut record = [0u8; super::spawner::EXIT_RECORD];
        while exits.read_exact(&mut record).await.is_ok() {
            let (pid, status) = super::spawner::exit_record(&record);
            let Some((pid, outcome)) = WaitStatus::from_raw(Pid::from_raw(pid), status)
                .ok()
                .and_then(ended)
            else {
                continue;
            };
            let mut state = self.lock();
            state.spawned.remove(&pid);
            state.deliver(pid, outcome, "spawner reported an unknown guard");
        }
        // Unexpected unless we stopped using it first (a failed request, or
        // the sweep before exit).
        if let Some(spawner) = super::spawner::get().filter(|s| s.available()) {
            tracing::warn!(
                pid = spawner.pid(),
                "the spawner is gone; guards are forked by the executor from now on"
            );
            spawner.disconnect();
        }
        // Its guards kill their trees and exit (parent-death signal); being
        // re-parented to us (the subreaper), they are reaped by
        // `reap_all` like our own children. Only a guard the spawner reaped
        // without reporting it is gone for good: its exit is lost.
        let mut state = self.lock();
        for pid in std::mem::take(&mut state.spawned) {
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                state.waiters.remove(&pid);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReaperState> {
        // A poisoned lock only means another thread panicked mid-update of a
        // HashMap insert/remove; the map itself is still usable.
        crate::util::lock(&self.state)
    }

    /// Collects every exited child and delivers the statuses of registered ones.
    fn reap_all(&self) {
        loop {
            let mut state = self.lock();
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, outcome)) = ended(status) {
                        state.deliver(pid, outcome, "reaped an orphaned descendant");
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(cause = %e, "waitpid failed");
                    return;
                }
            }
        }
    }

    /// Spawns `command` and registers it for its exit status. The lock is
    /// held across the spawn (see the module docs). The `Child` must never be
    /// waited for: the reaper owns the exit status.
    fn register(
        &self,
        command: &mut Command,
        role: Role,
    ) -> io::Result<(Child, oneshot::Receiver<ExitOutcome>)> {
        let mut state = self.lock();
        let child = command.spawn()?;
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(pid_i32(child.id()), (role, tx));
        Ok((child, rx))
    }

    /// Spawns the task's root process as `spec` says, switching to `user`;
    /// [`TaskProcess::end`] yields how it ended. Without a user switch it is
    /// cloned when the exec will start ([`super::spawn`]), else forked
    /// ([`task_command`]). `output` (stdout, stderr) replaces the inherited
    /// descriptors when the executor drains the task's output.
    pub(crate) fn spawn_task(
        &self,
        spec: &LaunchSpec,
        user: Option<UserSwitch>,
        output: Option<&[OwnedFd; 2]>,
    ) -> io::Result<TaskProcess> {
        if user.is_none() {
            // Under the lock, as every spawn: the reaper must not collect the
            // child before its waiter is registered.
            let mut state = self.lock();
            let raw = output.map(|[o, e]| [o.as_raw_fd(), e.as_raw_fd()]);
            if let Some(started) = super::spawn::spawn_session(spec, raw) {
                let started = started?;
                let (tx, rx) = oneshot::channel();
                state.waiters.insert(started.pid, (Role::Task, tx));
                return Ok(TaskProcess {
                    pid: u32::try_from(started.pid).unwrap_or_default(),
                    exit: rx,
                    exec: Some(started.report),
                });
            }
        }
        let mut command = task_command(spec, user);
        if let Some([out, err]) = output {
            command
                .stdout(Stdio::from(out.try_clone()?))
                .stderr(Stdio::from(err.try_clone()?));
        }
        let (child, rx) = self.register(&mut command, Role::Task)?;
        Ok(TaskProcess {
            pid: child.id(),
            exit: rx,
            exec: None,
        })
    }

    /// Spawns an auxiliary (hook script, COMMAND check, remote command) under
    /// a [`super::guard`], as `user` when given (an exec hook run as the
    /// task's user), with `stdio`, `leftovers` saying what becomes of what it
    /// leaves behind when it ends. The guard leads the child's process group
    /// and owns everything it starts, so all of it dies with the executor.
    /// The [`super::spawner`] forks the guard when there is one (the
    /// executor binary starts it), else the guard is forked from here.
    /// The returned handle owns the group: dropping it SIGKILLs everything
    /// left in it.
    pub(crate) fn spawn_guarded(
        &self,
        command: AuxCommand,
        stdio: AuxiliaryStdio,
        user: Option<UserSwitch>,
        leftovers: super::guard::Leftovers,
    ) -> Result<Auxiliary, SpawnError> {
        let pipes = |cause: nix::Error| SpawnError::Start(io::Error::from(cause));
        let [stdin, stdout, stderr] = [stdio.stdin, stdio.stdout, stdio.stderr];
        let (stdin_child, stdin_ours) = stdin.split(true).map_err(pipes)?;
        let (stdout_child, stdout_ours) = stdout.split(false).map_err(pipes)?;
        let (stderr_child, stderr_ours) = stderr.split(false).map_err(pipes)?;
        let child_ends = [stdin_child, stdout_child, stderr_child];
        let ours = [stdin_ours, stdout_ours, stderr_ours];
        if let Some(spawner) = super::spawner::get().filter(|s| s.available()) {
            // Under the lock, as every spawn: no exit is delivered before its
            // waiter is registered.
            let mut state = self.lock();
            let ends = child_ends.each_ref().map(Option::as_ref);
            match spawner.spawn(&command, ends, user.as_ref(), leftovers) {
                Ok(pid) => {
                    let (tx, rx) = oneshot::channel();
                    state.waiters.insert(pid, (Role::Auxiliary, tx));
                    state.spawned.insert(pid);
                    drop(state);
                    // Our copies of the child's ends close here: a pipe's
                    // reader sees EOF once the child's side is done.
                    drop(child_ends);
                    return Auxiliary::new(pid, rx, ours);
                }
                Err(super::spawner::SpawnerError::Spawn(e)) => return Err(SpawnError::Start(e)),
                Err(e @ super::spawner::SpawnerError::Unavailable(_)) => {
                    tracing::warn!(cause = %e, "forking guards in the executor from now on");
                    // Not reaped yet (its waiter is still there), so the pid
                    // is still the spawner's: make sure it is gone.
                    if state.waiters.contains_key(&spawner.pid()) {
                        let _ = kill(Pid::from_raw(spawner.pid()), Signal::SIGKILL);
                    }
                }
            }
        }
        let mut std_command = command.to_command();
        super::guard::guard(&mut std_command, user, leftovers);
        let [i, o, e] = child_ends.map(|end| end.map_or_else(Stdio::null, Stdio::from));
        std_command.stdin(i).stdout(o).stderr(e);
        let (child, rx) = self
            .register(&mut std_command, Role::Auxiliary)
            .map_err(SpawnError::Start)?;
        // As above: the command held our copies of the child's ends.
        drop(std_command);
        Auxiliary::new(pid_i32(child.id()), rx, ours)
    }

    /// A reaper that does not reap, for unit tests that spawn nothing.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            state: Arc::new(Mutex::new(ReaperState::default())),
        }
    }

    /// Pids of live children spawned for something other than the task.
    #[must_use]
    pub(crate) fn auxiliary_pids(&self) -> HashSet<i32> {
        self.lock()
            .waiters
            .iter()
            .filter(|(_, (role, _))| *role == Role::Auxiliary)
            .map(|(pid, _)| *pid)
            .collect()
    }
}

/// Where an auxiliary child's standard streams go. Required by
/// every auxiliary spawn so no auxiliary inherits the sandbox's stdout
/// by accident.
#[derive(Debug)]
pub(crate) struct AuxiliaryStdio {
    /// Its stdin ([`AuxIo::Piped`]: [`Auxiliary::stdin`] is the write end).
    pub(crate) stdin: AuxIo,
    /// Its stdout ([`AuxIo::Piped`]: [`Auxiliary::stdout`] is the read end).
    pub(crate) stdout: AuxIo,
    /// Its stderr ([`AuxIo::Piped`]: [`Auxiliary::stderr`] is the read end).
    pub(crate) stderr: AuxIo,
}

impl AuxiliaryStdio {
    /// All three piped to us.
    #[must_use]
    pub(crate) fn piped() -> Self {
        Self {
            stdin: AuxIo::Piped,
            stdout: AuxIo::Piped,
            stderr: AuxIo::Piped,
        }
    }
}

/// One standard stream of an auxiliary child.
#[derive(Debug)]
pub(crate) enum AuxIo {
    /// `/dev/null`.
    Null,
    /// A pipe to or from the executor.
    Piped,
    /// This descriptor (e.g. a copy of the executor's stderr).
    Fd(OwnedFd),
}

impl AuxIo {
    /// The child's end (`None`: `/dev/null`) and ours, creating the pipe
    /// (close-on-exec; the child's copy is made by `dup2`). `input`: the
    /// child reads from it (stdin).
    fn split(self, input: bool) -> nix::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
        match self {
            Self::Null => Ok((None, None)),
            Self::Fd(fd) => Ok((Some(fd), None)),
            Self::Piped => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                Ok(if input {
                    (Some(read), Some(write))
                } else {
                    (Some(write), Some(read))
                })
            }
        }
    }
}

/// The pid and exit of a child that ended; `None` for a stop or continue.
fn ended(status: WaitStatus) -> Option<(i32, ExitOutcome)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitOutcome::Exited(code))),
        WaitStatus::Signaled(pid, signal, core_dumped) => Some((
            pid.as_raw(),
            ExitOutcome::Signaled {
                signal: signal as i32,
                core_dumped,
            },
        )),
        _ => None,
    }
}

#[derive(Debug)]
enum Exit {
    Pending(oneshot::Receiver<ExitOutcome>),
    Done(Result<ExitOutcome, RecvError>),
}

/// A running auxiliary child and its process group. Dropping it SIGKILLs
/// the group (ESRCH, an empty group, is harmless): the cleanup after a run,
/// on timeout and when the owning task is aborted.
#[derive(Debug)]
#[must_use = "dropping an Auxiliary kills its process group"]
pub(crate) struct Auxiliary {
    pid: i32,
    exit: Exit,
    /// Write end of its stdin, if piped.
    pub(crate) stdin: Option<pipe::Sender>,
    /// Read end of its stdout, if piped.
    pub(crate) stdout: Option<pipe::Receiver>,
    /// Read end of its stderr, if piped.
    pub(crate) stderr: Option<pipe::Receiver>,
}

impl Auxiliary {
    /// The handle of a spawned guard `pid`; `ours` are our ends of its
    /// stdin, stdout and stderr pipes. An error drops the handle, which
    /// kills the group.
    fn new(
        pid: i32,
        exit: oneshot::Receiver<ExitOutcome>,
        ours: [Option<OwnedFd>; 3],
    ) -> Result<Self, SpawnError> {
        let [stdin, stdout, stderr] = ours;
        let mut aux = Self {
            pid,
            exit: Exit::Pending(exit),
            stdin: None,
            stdout: None,
            stderr: None,
        };
        let pipes = |cause| SpawnError::Pipes { pid, cause };
        aux.stdin = stdin
            .map(pipe::Sender::from_owned_fd)
            .transpose()
            .map_err(pipes)?;
        aux.stdout = stdout
            .map(pipe::Receiver::from_owned_fd)
            .transpose()
            .map_err(pipes)?;
        aux.stderr = stderr
            .map(pipe::Receiver::from_owned_fd)
            .transpose()
            .map_err(pipes)?;
        Ok(aux)
    }

    /// Its pid, also its process group id.
    #[must_use]
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the group leader's exit (reaped by the [`Reaper`]). Cancel
    /// safe, and answers again once it has answered.
    pub(crate) async fn wait(&mut self) -> Result<ExitOutcome, ExitLost> {
        let got = match &mut self.exit {
            Exit::Pending(rx) => {
                let got = rx.await;
                self.exit = Exit::Done(got.clone());
                got
            }
            Exit::Done(got) => got.clone(),
        };
        got.map_err(|cause| ExitLost {
            pid: self.pid,
            cause,
        })
    }
}

impl Drop for Auxiliary {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// Switches to `user` (groups, gid, then uid), if given.
pub(crate) fn switch_user(user: Option<&UserSwitch>) -> io::Result<()> {
    if let Some(u) = user {
        nix::unistd::setgroups(&u.groups).map_err(io::Error::from)?;
        nix::unistd::setgid(u.gid).map_err(io::Error::from)?;
        nix::unistd::setuid(u.uid).map_err(io::Error::from)?;
    }
    Ok(())
}

/// `killpg`; a group that is already gone (ESRCH) is not an error.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The reaper went away before delivering a child's exit status (only a
/// unit test's non-reaping reaper does that).
#[derive(Debug, thiserror::Error)]
#[error("the exit status of pid {pid} was lost")]
pub(crate) struct ExitLost {
    pid: i32,
    #[source]
    cause: RecvError,
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// For a forked child between fork and exec (`pre_exec`): asks for `signal`
/// when its parent `parent` dies (`PR_SET_PDEATHSIG`; kept across exec), and
/// fails if the parent already died (the child was re-parented before the
/// request was armed). Async-signal-safe. The signal follows the death of
/// the parent's forking *thread*: fork from a thread that lives as long as
/// the process (the executor's runtime is current-thread).
pub(crate) fn die_with_parent(signal: Signal, parent: i32) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe system calls.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Makes this process the child subreaper (`PR_SET_CHILD_SUBREAPER`), so
/// descendants orphaned by a double fork are re-parented to us and can be
/// found and killed with the task.
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// A user to run the task as, resolved before fork (lookups are not safe
/// between fork and exec).
#[derive(Debug, Clone)]
pub(crate) struct UserSwitch {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
}

impl UserSwitch {
    /// From raw ids (a request to the spawner).
    pub(crate) fn from_raw(uid: u32, gid: u32, groups: &[u32]) -> Self {
        Self {
            uid: nix::unistd::Uid::from_raw(uid),
            gid: nix::unistd::Gid::from_raw(gid),
            groups: groups
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect(),
        }
    }

    /// Uid, gid and groups as raw ids.
    pub(crate) fn raw(&self) -> (u32, u32, Vec<u32>) {
        (
            self.uid.as_raw(),
            self.gid.as_raw(),
            self.groups.iter().map(|g| g.as_raw()).collect(),
        )
    }

    /// The uid switched to.
    #[must_use]
    pub(crate) fn uid(&self) -> u32 {
        self.uid.as_raw()
    }
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// `CommandInfo.user` does not exist on this host.
    #[error("user {0:?} does not exist on this agent")]
    NoSuchUser(String),
    /// Looking the user up failed.
    #[error("looking up user {user:?}: {cause}")]
    UserLookup {
        /// User name.
        user: String,
        /// The lookup's error.
        #[source]
        cause: Errno,
    },
    /// The user name cannot be passed to the C library.
    #[error("user name {user:?} contains a NUL byte")]
    UserName {
        /// User name.
        user: String,
        /// Where the NUL is.
        #[source]
        cause: NulError,
    },
    /// The task's fork/exec failed.
    #[error("cannot start `{command}` in {cwd}: {cause}")]
    Exec {
        /// The command line.
        command: String,
        /// Working directory.
        cwd: String,
        /// OS error.
        #[source]
        cause: io::Error,
    },
    /// An auxiliary child's fork/exec failed. The message is the OS error's
    /// alone: the caller says what it was starting.
    #[error(transparent)]
    Start(io::Error),
    /// An auxiliary child's pipes could not be registered with the runtime;
    /// it was killed.
    #[error("cannot watch the pipes of pid {pid}: {cause}")]
    Pipes {
        /// The child.
        pid: i32,
        /// OS error.
        #[source]
        cause: io::Error,
    },
}

/// Resolves the user the task should run as: only when the executor is root
/// and a different user is asked for; otherwise the task runs as we do (the
/// agent already started us as the framework's user).
pub(crate) fn resolve_user(user: Option<&str>) -> Result<Option<UserSwitch>, SpawnError> {
    let Some(name) = user else { return Ok(None) };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let found = nix::unistd::User::from_name(name).map_err(|cause| SpawnError::UserLookup {
        user: name.to_owned(),
        cause,
    })?;
    let Some(u) = found else {
        return Err(SpawnError::NoSuchUser(name.to_owned()));
    };
    if u.uid == nix::unistd::geteuid() {
        return Ok(None);
    }
    let cname = std::ffi::CString::new(name).map_err(|cause| SpawnError::UserName {
        user: name.to_owned(),
        cause,
    })?;
    let groups = nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_else(|_| vec![u.gid]);
    Ok(Some(UserSwitch {
        uid: u.uid,
        gid: u.gid,
        groups,
    }))
}

/// The task's root process as started.
pub(crate) struct TaskProcess {
    pub(crate) pid: u32,
    /// How it ends, from the reaper.
    exit: oneshot::Receiver<ExitOutcome>,
    /// How its exec went, when it was cloned rather than forked by std
    /// (which reports a failed exec from `spawn` itself).
    exec: Option<super::spawn::ExecReport>,
}

impl TaskProcess {
    /// How the task ended: its exit, or that its program could not be
    /// executed (the errno its process reported before exiting 127).
    pub(crate) async fn end(self) -> ExitOutcome {
        let lost = |o: Result<ExitOutcome, _>| o.unwrap_or(ExitOutcome::Exited(-1));
        let Self { exit, exec, .. } = self;
        let Some(mut report) = exec else {
            return lost(exit.await);
        };
        tokio::pin!(exit);
        // Normally the pipe ends first: at the exec, or right before the
        // exit of a child that could not exec. If the exit comes first (or
        // the pipe cannot be watched), what the child wrote is there by now.
        tokio::select! {
            Ok(errno) = report.wait() => not_executed_or(errno, lost((&mut exit).await)),
            outcome = &mut exit => not_executed_or(report.after_exit(), lost(outcome)),
        }
    }
}

fn not_executed_or(errno: Option<i32>, outcome: ExitOutcome) -> ExitOutcome {
    errno.map_or(outcome, |errno| ExitOutcome::NotExecuted { errno })
}

/// The `Command` for a launch spec: environment from empty, cwd, stdin from
/// `/dev/null`, stdout/stderr inherited (the sandbox files: zero copying), a new
/// session, and the user switch if any.
#[must_use]
pub(crate) fn task_command(spec: &LaunchSpec, user: Option<UserSwitch>) -> Command {
    // The environment cleared, as for every child: only the spec's.
    let mut cmd = AuxCommand::program(&spec.program).to_command();
    cmd.envs(&spec.env)
        .envs(spec.unshadowed_other_env().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, setgroups, setgid, setuid)
    // between fork and exec; the user was resolved before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if let Some(u) = &user {
                nix::unistd::setgroups(&u.groups).map_err(io::Error::from)?;
                nix::unistd::setgid(u.gid).map_err(io::Error::from)?;
                nix::unistd::setuid(u.uid).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd
}

/// One line of `/proc/<pid>/stat`, the fields we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    /// Process id.
    pub(crate) pid: i32,
    /// Parent.
    pub(crate) ppid: i32,
    /// Process group.
    pub(crate) pgrp: i32,
    /// Session.
    pub(crate) session: i32,
    /// `comm` (at most 15 bytes).
    pub(crate) comm: String,
}

/// Parses `/proc/<pid>/stat`; `comm` may contain spaces and parentheses, so
/// the fields after it are found from the last `)`.
#[must_use]
pub(crate) fn parse_stat(line: &str) -> Option<ProcInfo> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_owned();
    let (ppid, pgrp, session) = stat_numbers(line.as_bytes())?;
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        session,
        comm,
    })
}

/// Parent, group and session from a `/proc/<pid>/stat` line (the fields
/// after the last `)`). Allocates nothing: the guard uses it after a fork.
pub(crate) fn stat_numbers(line: &[u8]) -> Option<(i32, i32, i32)> {
    let close = line.iter().rposition(|b| *b == b')')?;
    let mut rest = line[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let _state = rest.next()?;
    let mut number = || -> Option<i32> { std::str::from_utf8(rest.next()?).ok()?.parse().ok() };
    Some((number()?, number()?, number()?))
}

/// Every process visible in `/proc`.
#[must_use]
pub(crate) fn list_processes() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|l| parse_stat(&l))
        .collect()
}

/// Identifies the task's tree among `procs` (see the module docs).
#[must_use]
pub(crate) fn task_tree(
    procs: &[ProcInfo],
    root: i32,
    executor: i32,
    auxiliary: &HashSet<i32>,
) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut members: HashSet<i32> = HashSet::new();
    let mut queue: Vec<i32> = Vec::new();
    for p in procs {
        let in_session = p.session == root || p.pgrp == root;
        let orphan = p.ppid == executor && !auxiliary.contains(&p.pid);
        if p.pid != executor && (p.pid == root || in_session || orphan) {
            queue.push(p.pid);
        }
    }
    while let Some(pid) = queue.pop() {
        if pid == executor || !members.insert(pid) {
            continue;
        }
        if let Some(kids) = children.get(&pid) {
            queue.extend(kids.iter().copied().filter(|k| {
                !auxiliary.contains(k) || procs.iter().any(|p| p.pid == *k && p.session == root)
            }));
        }
    }
    let mut out: Vec<i32> = members.into_iter().collect();
    out.sort_unstable();
    out
}

/// Every descendant of `ancestor` (not itself).
#[must_use]
pub(crate) fn descendants(procs: &[ProcInfo], ancestor: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    let mut queue = children.get(&ancestor).cloned().unwrap_or_default();
    while let Some(pid) = queue.pop() {
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            queue.extend(kids);
        }
    }
    out.sort_unstable();
    out
}

fn process_name_matches(pid: i32, comm: &str, names: &[String]) -> bool {
    if names.is_empty() {
        return false;
    }
    let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            let first = b.split(|c| *c == 0).next()?.to_vec();
            let s = String::from_utf8(first).ok()?;
            Some(s.rsplit('/').next().unwrap_or_default().to_owned())
        });
    names
        .iter()
        .any(|n| n == comm || argv0.as_deref() == Some(n.as_str()))
}

/// Walks `/proc` with `select` and sends `signal` to every member not yet
/// signalled, repeating until a walk finds nothing new (a process may fork
/// between a walk and the signal). Returns the pids signalled and the last walk.
fn signal_until_stable(
    select: impl Fn(&[ProcInfo]) -> Vec<i32>,
    signal: Signal,
) -> (Vec<i32>, Vec<ProcInfo>) {
    let mut done: Vec<i32> = Vec::new();
    let mut procs = list_processes();
    for _ in 0..8 {
        let fresh: Vec<i32> = select(&procs)
            .into_iter()
            .filter(|p| !done.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in &fresh {
            let _ = kill(Pid::from_raw(*pid), signal);
        }
        done.extend(fresh);
        procs = list_processes();
    }
    (done, procs)
}

/// Signals the task's tree as described in the module docs. Processes whose
/// name is in `spared` do not get `signal` (used for SIGTERM exclusions).
/// Returns the pids signalled.
pub(crate) fn signal_task_tree(
    root: i32,
    auxiliary: &HashSet<i32>,
    signal: Signal,
    spared: &[String],
) -> Vec<i32> {
    let executor = pid_i32(std::process::id());
    let select = |procs: &[ProcInfo]| task_tree(procs, root, executor, auxiliary);
    if signal == Signal::SIGKILL {
        // Nothing survives SIGKILL to fork again; no need to freeze.
        return signal_until_stable(select, Signal::SIGKILL).0;
    }
    // Freeze the tree first so that nothing forks past the walk.
    let (frozen, procs) = signal_until_stable(select, Signal::SIGSTOP);
    let mut signalled = Vec::new();
    for pid in &frozen {
        let comm = procs
            .iter()
            .find(|p| p.pid == *pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default();
        if process_name_matches(*pid, &comm, spared) {
            tracing::info!(
                pid,
                comm,
                "sparing process from {signal} (HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES)"
            );
            continue;
        }
        if kill(Pid::from_raw(*pid), signal).is_ok() {
            signalled.push(*pid);
        }
    }
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
    }
    signalled
}

/// SIGKILLs every remaining descendant of the executor: the last line of
/// defence before exit, so no process of the task outlives us.
pub(crate) fn kill_all_descendants() -> usize {
    let me = pid_i32(std::process::id());
    // The spawner is killed too, but it is ours, not a leftover.
    let spawner = super::spawner::get().map(|s| {
        s.disconnect();
        s.pid()
    });
    let killed = signal_until_stable(|procs| descendants(procs, me), Signal::SIGKILL)
        .0
        .into_iter()
        .filter(|pid| Some(*pid) != spawner)
        .count();
    reap_children_soon();
    killed
}

/// Collects every child as it dies, for at most 100 ms after the final
/// SIGKILL (the spawner, a guard the executor forked itself), so that the
/// executor does not end leaving zombies to whoever inherits them (an init
/// that does not reap, in some containers). Called only as the executor
/// ends: nothing waits for these children any more.
fn reap_children_soon() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
    while std::time::Instant::now() < deadline {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            // Not dead yet (SIGKILL is delivered, not waited for).
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Ok(_) => {}
            // ECHILD: no child left.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32, session: i32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp,
            session,
            comm: format!("p{pid}"),
        }
    }

    /// The guard exits exactly as its command did (code, signal), keeps no
    /// pipe open (EOF once the command is done), a command that cannot be
    /// executed is a spawn error, not a hang, and what the command leaves
    /// behind is killed or left as asked.
    #[tokio::test]
    #[allow(
        clippy::await_holding_lock,
        reason = "held for the whole test on purpose, against other tests' threads"
    )]
    async fn a_guarded_child_reports_like_its_command() {
        use super::super::guard::Leftovers;
        use tokio::io::AsyncReadExt;
        let _turn = crate::util::lock(&super::super::CHILDREN_OF_THE_TEST_PROCESS);
        let reaper = Reaper::install().expect("reaper");
        let run = |script: &str| {
            let mut c = AuxCommand::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        };
        let guarded = |script: &str, leftovers| {
            reaper.spawn_guarded(run(script), AuxiliaryStdio::piped(), None, leftovers)
        };
        async fn stdout_of(aux: &mut Auxiliary) -> String {
            let mut out = String::new();
            if let Some(mut stdout) = aux.stdout.take() {
                stdout.read_to_string(&mut out).await.expect("read");
            }
            out
        }
        for leftovers in [Leftovers::Kill, Leftovers::Leave] {
            let mut aux = guarded("echo out; exit 3", leftovers).expect("spawned");
            assert_eq!(stdout_of(&mut aux).await, "out\n");
            assert_eq!(aux.wait().await.ok(), Some(ExitOutcome::Exited(3)));
            let mut aux = guarded("kill -TERM $$", leftovers).expect("spawned");
            assert!(matches!(
                aux.wait().await,
                Ok(ExitOutcome::Signaled { signal: 15, .. })
            ));
            let err = reaper
                .spawn_guarded(
                    AuxCommand::new("/nonexistent/program"),
                    AuxiliaryStdio::piped(),
                    None,
                    leftovers,
                )
                .expect_err("cannot exec");
            assert!(err.to_string().contains("No such file"), "{err}");
            // A background child left behind (its output elsewhere, so the
            // pipe ends with the shell): killed by the guard, or left.
            let mut aux =
                guarded("sleep 600 >/dev/null 2>&1 & echo $!", leftovers).expect("spawned");
            let out = stdout_of(&mut aux).await;
            assert_eq!(aux.wait().await.ok(), Some(ExitOutcome::Exited(0)));
            let left: i32 = out.trim().parse().expect("the child's pid");
            let alive = kill(Pid::from_raw(left), None).is_ok()
                && std::fs::read_to_string(format!("/proc/{left}/stat"))
                    .ok()
                    .and_then(|l| parse_stat(&l))
                    .is_some_and(|p| p.comm == "sleep");
            assert_eq!(alive, leftovers == Leftovers::Leave, "{leftovers:?}");
            // Dropping the handle kills what is left in the group.
            drop(aux);
        }
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let info = parse_stat("1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560").expect("parses");
        assert_eq!(
            info,
            ProcInfo {
                pid: 1234,
                ppid: 1,
                pgrp: 1234,
                session: 1234,
                comm: "my (weird) proc".into()
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn tree_covers_session_groups_descendants_and_orphans() {
        // executor 10; task root 20 (session 20); 21 child in a new group;
        // 30 double-forked daemon (new session) re-parented to the executor;
        // 31 its child; 40 a hook (auxiliary) with child 41; 50 unrelated.
        let procs = vec![
            p(10, 1, 10, 10),
            p(20, 10, 20, 20),
            p(21, 20, 21, 20),
            p(22, 21, 21, 20),
            p(30, 10, 30, 30),
            p(31, 30, 30, 30),
            p(40, 10, 40, 40),
            p(41, 40, 40, 40),
            p(50, 1, 50, 50),
        ];
        let aux: HashSet<i32> = [40].into_iter().collect();
        assert_eq!(task_tree(&procs, 20, 10, &aux), vec![20, 21, 22, 30, 31]);
        // After the root died, its session still identifies its processes.
        let without_root: Vec<ProcInfo> = procs
            .iter()
            .filter(|x| x.pid != 20)
            .cloned()
            .map(|mut x| {
                if x.ppid == 20 {
                    x.ppid = 10;
                }
                x
            })
            .collect();
        assert_eq!(task_tree(&without_root, 20, 10, &aux), vec![21, 22, 30, 31]);
        assert_eq!(descendants(&procs, 40), vec![41]);
    }
}
