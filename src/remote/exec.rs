//! Remote commands: validation of an execute request into a [`Plan`], the
//! [`Registry`] of running and finished commands, each command's supervisor
//! (output capture, timeout, terminate, reaping) and the audit line.
//!
//! The registry is not the task's state, so it lives outside the executor's
//! owner loop, behind a `std` mutex held only for short, non-awaiting
//! sections. Each command has one supervisor task that owns its process:
//! it reads both pipes, waits for the reaper's exit status and drives the
//! SIGTERM → grace → SIGKILL sequence of the command's process group. Readers
//! (result waits, SSE streams) follow a per-command `watch` version counter,
//! so no reader ever buffers output of its own: memory is the capped capture
//! per stream, times running plus retained commands.
//!
//! Commands run as the executor's user, in the sandbox, in their own process
//! group, with the task's environment rules (the executor's environment minus
//! `HOOK_EXECUTOR_*` and the secret deny-list) plus the request's variables.

use crate::util::sleep_until;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::AsyncReadExt,
    sync::{watch, Notify},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    types::{CommandResult, ExecuteRequest, RunningResponse},
    ApiError, Peer,
};
use crate::{
    task::launch::DEFAULT_PATH,
    task::process::{Reaper, Role},
    task::termination::ExitOutcome,
};

/// The longest timeout or wait accepted (a typo like `1e12` is an error,
/// not a never-ending command).
pub const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// How long after the command's leader exits its pipes may stay open (held
/// by a process that left the group) before the result is closed anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What to run, decided from a request by [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The executable (absolute, resolved on the command's `PATH`).
    pub program: PathBuf,
    /// `argv[0]`.
    pub argv0: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The command line, for listings and logs.
    pub display: String,
    /// The request's command, for the audit line.
    pub command: String,
    /// The request's arguments, for the audit line.
    pub arguments: Vec<String>,
    /// Whether it runs through `/bin/sh -c`.
    pub shell: bool,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// When to send SIGTERM.
    pub timeout: Option<Duration>,
    /// What was ignored, for the response and the log.
    pub warnings: Vec<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// Seconds as a duration: a finite, non-negative number up to
/// [`MAX_SECONDS`]; zero means none.
pub fn seconds(what: &str, value: f64) -> Result<Option<Duration>, ApiError> {
    if !value.is_finite() || !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(bad(format!("{what} must be a number of seconds from 0 to {MAX_SECONDS}, got {value}")));
    }
    Ok(Some(Duration::from_secs_f64(value)).filter(|d| !d.is_zero()))
}

fn no_nul(what: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('\0') {
        return Err(bad(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

/// Finds `name` the way `execvp` would with the command's own `PATH`, so the
/// lookup uses the environment the command gets, not the executor's.
fn resolve(name: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let p = cwd.join(name);
        return if executable(&p) { Ok(p) } else { Err(bad(format!("cannot execute {name:?}: not an executable file"))) };
    }
    path_var
        .split(':')
        .map(|dir| if dir.is_empty() { cwd.to_path_buf() } else { cwd.join(dir) }.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| bad(format!("command not found: {name:?} (not on the command's PATH)")))
}

/// Validates a request into a plan (pure but for the `PATH` lookup). `base`
/// is the environment every command starts from.
pub fn plan(req: ExecuteRequest, base: &BTreeMap<String, String>, cwd: &Path) -> Result<Plan, ApiError> {
    let mut warnings: Vec<String> = req.unknown.keys().map(|k| format!("unknown field {k:?} ignored")).collect();
    let command = match (req.command, req.value) {
        (Some(c), Some(v)) if c != v => return Err(bad("both \"command\" and \"value\" are given and differ")),
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(bad("missing \"command\" (or \"value\")")),
    };
    if command.trim().is_empty() {
        return Err(bad("the command is empty"));
    }
    no_nul("the command", &command)?;
    let shell = req.shell.unwrap_or(true);
    let arguments = req.arguments.unwrap_or_default();
    for a in &arguments {
        no_nul("an argument", a)?;
    }
    let mut env = base.clone();
    for v in req.environment.map(|e| e.variables).unwrap_or_default() {
        if v.name.is_empty() || v.name.contains('=') {
            return Err(bad(format!("invalid environment variable name {:?}", v.name)));
        }
        no_nul("an environment variable", &v.name)?;
        match v.kind.as_deref() {
            None | Some("VALUE") => {}
            Some(other) => {
                warnings.push(format!("environment variable {:?} of type {other} ignored (only VALUE is supported)", v.name));
                continue;
            }
        }
        let value = v.value.unwrap_or_default();
        no_nul("an environment variable", &value)?;
        env.insert(v.name, value);
    }
    let timeout = match req.timeout {
        Some(t) => seconds("\"timeout\"", t)?,
        None => match env.get("EXECUTE_TIMEOUT_SEC") {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => match v.parse::<u64>() {
                #[allow(clippy::cast_precision_loss)]
                Ok(n) => seconds("EXECUTE_TIMEOUT_SEC", n as f64)?,
                Err(_) => return Err(bad(format!("EXECUTE_TIMEOUT_SEC {v:?} is out of range"))),
            },
            Some(v) => return Err(bad(format!("EXECUTE_TIMEOUT_SEC must be an integer number of seconds, got {v:?}"))),
            None => None,
        },
    };
    env.entry("PATH".to_owned()).or_insert_with(|| DEFAULT_PATH.to_owned());
    let (program, argv0, args, display) = if shell {
        if !arguments.is_empty() {
            warnings.push(
                "\"arguments\" are ignored when \"shell\" is true (the default); set \"shell\": false to pass them verbatim".to_owned(),
            );
        }
        (PathBuf::from("/bin/sh"), "sh".to_owned(), vec!["-c".to_owned(), command.clone()], command.clone())
    } else {
        let program = resolve(&command, env.get("PATH").map_or(DEFAULT_PATH, String::as_str), cwd)?;
        let display = std::iter::once(command.as_str()).chain(arguments.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        (program, command.clone(), arguments.clone(), display)
    };
    Ok(Plan { program, argv0, args, display, command, arguments, shell, env, timeout, warnings })
}

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Commands running at once.
    pub max_running: usize,
    /// Finished results kept.
    pub max_retained: usize,
    /// How long a finished result is kept.
    pub retention: Duration,
    /// Bytes captured per stream.
    pub max_output: usize,
    /// SIGTERM → SIGKILL grace.
    pub kill_grace: Duration,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The SSE event name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A command's captured output: both streams capped, plus the order in which
/// runs of bytes arrived on them (one entry per switch between streams), so
/// the SSE replay interleaves lines as they were produced.
#[derive(Debug, Default)]
pub struct Output {
    cap: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    order: Vec<(Stream, usize)>,
}

impl Output {
    fn new(cap: usize) -> Self {
        Self { cap, ..Self::default() }
    }

    /// Appends what fits under the cap; the rest is dropped and flagged.
    fn append(&mut self, stream: Stream, data: &[u8]) {
        let cap = self.cap;
        let (buf, truncated) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.stdout_truncated),
            Stream::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
        };
        let take = cap.saturating_sub(buf.len()).min(data.len());
        if take < data.len() {
            *truncated = true;
        }
        if take == 0 {
            return;
        }
        if buf.capacity() - buf.len() < take {
            // Grow geometrically but never past the cap.
            let want = (buf.len() + take).max(buf.capacity() * 2).max(4096).min(cap);
            buf.reserve_exact(want.saturating_sub(buf.len()));
        }
        buf.extend_from_slice(&data[..take]);
        let end = buf.len();
        match self.order.last_mut() {
            Some((s, e)) if *s == stream => *e = end,
            _ => self.order.push((stream, end)),
        }
    }

    /// The captured bytes of one stream.
    #[must_use]
    pub fn bytes(&self, stream: Stream) -> &[u8] {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

/// A reader's position in an [`Output`], producing complete lines in arrival
/// order; [`LineCursor::flush`] gives the unterminated tails at the end.
#[derive(Debug, Default)]
pub struct LineCursor {
    index: usize,
    emitted: [usize; 2],
}

fn slot(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LineCursor {
    /// Complete lines not yet returned, without their `\n`.
    pub fn advance(&mut self, out: &Output) -> Vec<(Stream, String)> {
        let mut lines = Vec::new();
        for &(stream, end) in out.order.iter().skip(self.index) {
            let buf = out.bytes(stream);
            let from = &mut self.emitted[slot(stream)];
            while let Some(nl) = buf.get(*from..end).and_then(|b| b.iter().position(|c| *c == b'\n')) {
                lines.push((stream, String::from_utf8_lossy(&buf[*from..*from + nl]).into_owned()));
                *from += nl + 1;
            }
        }
        // The last run may still grow; it is scanned again next time.
        self.index = out.order.len().saturating_sub(1);
        lines
    }

    /// The unterminated last line of each stream.
    pub fn flush(&mut self, out: &Output) -> Vec<(Stream, String)> {
        let mut lines = self.advance(out);
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = out.bytes(stream);
            let from = &mut self.emitted[slot(stream)];
            if *from < buf.len() {
                lines.push((stream, String::from_utf8_lossy(&buf[*from..]).into_owned()));
                *from = buf.len();
            }
        }
        lines
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy)]
struct Finished {
    outcome: ExitOutcome,
    timed_out: bool,
    terminated: bool,
    at: Instant,
}

#[derive(Debug)]
struct State {
    output: Output,
    finished: Option<Finished>,
}

/// One remote command, running or finished.
#[derive(Debug)]
pub struct RemoteCommand {
    /// Its pid, also its process group id.
    pub pid: i32,
    /// Its command line, for display.
    pub display: String,
    seq: u64,
    started: Instant,
    state: Mutex<State>,
    /// Bumped on every output append and at the end.
    version: watch::Sender<u64>,
    /// `DELETE /remote/task/{pid}`.
    terminate: Notify,
}

/// A view of a command for a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// Still running.
    Running(RunningResponse),
    /// Done.
    Finished(CommandResult),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if it did, the data is still
    // consistent enough to answer from.
    crate::util::lock(m)
}

impl RemoteCommand {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The command as a response body.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state();
        let text = |s| String::from_utf8_lossy(st.output.bytes(s)).into_owned();
        match st.finished {
            Some(f) => {
                let (exit_code, signaled) = match f.outcome {
                    ExitOutcome::Exited(code) => (code, false),
                    ExitOutcome::Signaled { signal, .. } => (signal, true),
                };
                Snapshot::Finished(CommandResult {
                    exit_code,
                    signaled,
                    stdout: text(Stream::Stdout),
                    stderr: text(Stream::Stderr),
                    timed_out: f.timed_out,
                    terminated: f.terminated,
                    stdout_truncated: st.output.stdout_truncated,
                    stderr_truncated: st.output.stderr_truncated,
                })
            }
            None => Snapshot::Running(RunningResponse {
                running: true,
                pid: self.pid,
                command: self.display.clone(),
                elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                stdout: text(Stream::Stdout),
                stderr: text(Stream::Stderr),
            }),
        }
    }

    /// Whether it has finished.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.state().finished.is_some()
    }

    /// Waits until it finishes, or `limit` passes (`None`: no limit).
    pub async fn wait(&self, limit: Option<Duration>) -> Snapshot {
        let mut rx = self.version.subscribe();
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            rx.borrow_and_update();
            if self.finished() {
                break;
            }
            let changed = rx.changed();
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, changed).await.is_err() {
                        break;
                    }
                }
                None => {
                    if changed.await.is_err() {
                        break;
                    }
                }
            }
        }
        self.snapshot()
    }

    /// Asks the supervisor to terminate the command (no effect once done).
    pub fn request_terminate(&self) {
        self.terminate.notify_one();
    }

    /// New output lines since `cursor` and, once finished, the tails and the result.
    pub fn follow(&self, cursor: &mut LineCursor) -> (Vec<(Stream, String)>, bool) {
        let st = self.state();
        if st.finished.is_some() {
            (cursor.flush(&st.output), true)
        } else {
            (cursor.advance(&st.output), false)
        }
    }

    /// A receiver that changes whenever output arrives or the command ends.
    #[must_use]
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[derive(Debug, Default)]
struct Inner {
    commands: HashMap<i32, Arc<RemoteCommand>>,
    /// Finished commands in the order they finished: (pid, seq).
    finished: VecDeque<(i32, u64)>,
    running: usize,
    next_seq: u64,
    closed: bool,
}

/// Running and finished remote commands. Cheap to share.
pub struct Registry {
    inner: Mutex<Inner>,
    reaper: Reaper,
    limits: Limits,
    cwd: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Makes a close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// `killpg`, ignoring a group that is already gone.
fn signal_group(pgid: i32, signal: Signal) {
    match nix::sys::signal::killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => warn!(pgid, %signal, cause = %e, "could not signal a remote command's process group"),
    }
}

impl Registry {
    /// A registry spawning through `reaper`, running commands in `cwd`.
    #[must_use]
    pub fn new(reaper: Reaper, limits: Limits, cwd: PathBuf) -> Self {
        Self { inner: Mutex::new(Inner::default()), reaper, limits, cwd }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The directory commands run in.
    #[must_use]
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Starts `plan`; returns the pid. The caller audits (see [`audit`]).
    pub fn execute(self: &Arc<Self>, plan: &Plan) -> Result<i32, ApiError> {
        let result = self.spawn(plan);
        for w in &plan.warnings {
            warn!(pid = result.as_ref().ok(), warning = %w, "remote execute request");
        }
        result
    }

    fn spawn(self: &Arc<Self>, plan: &Plan) -> Result<i32, ApiError> {
        let mut inner = self.inner();
        if inner.closed {
            return Err(ApiError::ShuttingDown);
        }
        if inner.running >= self.limits.max_running {
            return Err(ApiError::TooManyRunning(self.limits.max_running));
        }
        let (out_r, out_w) = pipe().map_err(ApiError::Spawn)?;
        let (err_r, err_w) = pipe().map_err(ApiError::Spawn)?;
        let mut command = std::process::Command::new(&plan.program);
        command
            .arg0(&plan.argv0)
            .args(&plan.args)
            .env_clear()
            .envs(&plan.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            // Its own group, so timeout and terminate reach what it forks;
            // no pre_exec, so std can use posix_spawn (fast).
            .process_group(0);
        let spawned = self.reaper.spawn(&mut command, Role::Auxiliary);
        // Drop our copies of the write ends now, or the pipes never reach EOF.
        drop(command);
        let (pid, exit) = spawned.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput => {
                ApiError::BadRequest(format!("cannot start {:?}: {e}", plan.command))
            }
            _ => ApiError::Spawn(e),
        })?;
        let pid = i32::try_from(pid).unwrap_or(i32::MAX);
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r).map_err(ApiError::Spawn);
        let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r).map_err(ApiError::Spawn);
        inner.next_seq += 1;
        let cmd = Arc::new(RemoteCommand {
            pid,
            display: plan.display.clone(),
            seq: inner.next_seq,
            started: Instant::now(),
            state: Mutex::new(State { output: Output::new(self.limits.max_output), finished: None }),
            version: watch::channel(0).0,
            terminate: Notify::new(),
        });
        // A retained result under a reused pid gives way to the new command.
        inner.commands.insert(pid, Arc::clone(&cmd));
        inner.running += 1;
        drop(inner);
        let (stdout, stderr) = match (stdout, stderr) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                // Cannot capture: do not leave it running unobserved.
                signal_group(pid, Signal::SIGKILL);
                let registry = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = exit.await.unwrap_or(ExitOutcome::Exited(-1));
                    registry.finish(&cmd, Finished { outcome, timed_out: false, terminated: true, at: Instant::now() });
                });
                return Err(e);
            }
        };
        let registry = Arc::clone(self);
        let timeout = plan.timeout;
        tokio::spawn(async move { registry.supervise(cmd, exit, stdout, stderr, timeout).await });
        Ok(pid)
    }

    /// Owns one command until it is finished and recorded.
    async fn supervise(
        self: Arc<Self>,
        cmd: Arc<RemoteCommand>,
        mut exit: tokio::sync::oneshot::Receiver<ExitOutcome>,
        mut stdout: tokio::net::unix::pipe::Receiver,
        mut stderr: tokio::net::unix::pipe::Receiver,
        timeout: Option<Duration>,
    ) {
        let pid = cmd.pid;
        let mut out_buf = vec![0u8; 4096];
        let mut err_buf = vec![0u8; 4096];
        let (mut out_open, mut err_open) = (true, true);
        let term_at = timeout.map(|t| Instant::now() + t);
        let mut kill_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        let mut leader: Option<ExitOutcome> = None;
        // SIGTERM was sent once either is set; `Registry::shutdown` SIGKILLs the
        // group itself when the executor exits.
        let (mut timed_out, mut terminated) = (false, false);
        loop {
            if leader.is_some() && !out_open && !err_open {
                break;
            }
            tokio::select! {
                // Fixed order: output before the exit, stdout before stderr when
                // both are ready, so replays are deterministic.
                biased;
                r = stdout.read(&mut out_buf), if out_open => match r {
                    Ok(n) if n > 0 => { cmd.state().output.append(Stream::Stdout, &out_buf[..n]); cmd.bump(); }
                    _ => out_open = false,
                },
                r = stderr.read(&mut err_buf), if err_open => match r {
                    Ok(n) if n > 0 => { cmd.state().output.append(Stream::Stderr, &err_buf[..n]); cmd.bump(); }
                    _ => err_open = false,
                },
                o = &mut exit, if leader.is_none() => {
                    leader = Some(o.unwrap_or(ExitOutcome::Exited(-1)));
                    // What the leader left in its group goes with it, as for the task.
                    signal_group(pid, Signal::SIGKILL);
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                }
                () = sleep_until(term_at), if leader.is_none() && !(timed_out || terminated) => {
                    timed_out = true;
                    info!(pid, timeout = ?timeout, "remote command timed out; sending SIGTERM to its process group");
                    signal_group(pid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + self.limits.kill_grace);
                }
                () = cmd.terminate.notified(), if leader.is_none() && !(timed_out || terminated) => {
                    terminated = true;
                    info!(pid, "terminating remote command: SIGTERM to its process group");
                    signal_group(pid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + self.limits.kill_grace);
                }
                () = sleep_until(kill_at), if leader.is_none() => {
                    kill_at = None;
                    warn!(pid, grace = ?self.limits.kill_grace, "remote command outlived its grace; sending SIGKILL to its process group");
                    signal_group(pid, Signal::SIGKILL);
                }
                () = sleep_until(drain_until) => {
                    debug!(pid, "remote command's output still open after its exit (held by an escaped process); closing the result");
                    break;
                }
            }
        }
        let outcome = leader.unwrap_or(ExitOutcome::Exited(-1));
        self.finish(&cmd, Finished { outcome, timed_out, terminated, at: Instant::now() });
    }

    /// Records the end of a command, frees its running slot and prunes.
    fn finish(&self, cmd: &Arc<RemoteCommand>, finished: Finished) {
        {
            let mut st = cmd.state();
            st.finished = Some(finished);
        }
        cmd.bump();
        info!(
            pid = cmd.pid,
            outcome = ?finished.outcome,
            timed_out = finished.timed_out,
            terminated = finished.terminated,
            duration = ?finished.at.saturating_duration_since(cmd.started),
            "remote command finished"
        );
        let mut inner = self.inner();
        inner.running = inner.running.saturating_sub(1);
        inner.finished.push_back((cmd.pid, cmd.seq));
        self.prune(&mut inner);
    }

    /// Drops finished results past the count or the age limit, oldest first.
    fn prune(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some(&(pid, seq)) = inner.finished.front() {
            let current = inner.commands.get(&pid).filter(|c| c.seq == seq).cloned();
            let Some(cmd) = current else {
                // Replaced by a newer command with the same pid.
                inner.finished.pop_front();
                continue;
            };
            let old = cmd.state().finished.is_some_and(|f| now.saturating_duration_since(f.at) >= self.limits.retention);
            if inner.finished.len() > self.limits.max_retained || old {
                inner.finished.pop_front();
                inner.commands.remove(&pid);
            } else {
                break;
            }
        }
    }

    /// The command with `pid`, running or retained.
    pub fn get(&self, pid: i32) -> Result<Arc<RemoteCommand>, ApiError> {
        let mut inner = self.inner();
        self.prune(&mut inner);
        inner.commands.get(&pid).cloned().ok_or(ApiError::UnknownPid(pid))
    }

    /// Pids of running and retained commands, oldest first.
    pub fn pids(&self) -> Vec<i32> {
        let mut inner = self.inner();
        self.prune(&mut inner);
        let mut all: Vec<(u64, i32)> = inner.commands.values().map(|c| (c.seq, c.pid)).collect();
        all.sort_unstable();
        all.into_iter().map(|(_, pid)| pid).collect()
    }

    /// (running, retained finished) counts.
    pub fn counts(&self) -> (usize, usize) {
        let mut inner = self.inner();
        self.prune(&mut inner);
        (inner.running, inner.commands.len().saturating_sub(inner.running))
    }

    /// Refuses new commands and SIGKILLs every running command's group at
    /// once. It does not wait for their results: nobody will read them, and the
    /// executor's exit sits inside the agent's shutdown margin.
    pub fn shutdown(&self) {
        let mut inner = self.inner();
        inner.closed = true;
        let running: Vec<i32> = inner.commands.values().filter(|c| !c.finished()).map(|c| c.pid).collect();
        drop(inner);
        for pgid in &running {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*pgid), nix::sys::signal::Signal::SIGKILL);
        }
        if !running.is_empty() {
            info!(count = running.len(), "killed running remote commands at exit");
        }
    }
}

/// What an execute request asked for, as far as it was understood; the
/// audit line's subject.
#[derive(Debug, Default)]
pub struct Attempt {
    /// `command` (or `value`).
    pub command: Option<String>,
    /// `arguments`.
    pub arguments: Vec<String>,
    /// `shell` as decided.
    pub shell: Option<bool>,
    /// The timeout as decided.
    pub timeout: Option<Duration>,
}

impl Attempt {
    /// What a parsed request asks for (before validation).
    #[must_use]
    pub fn of_request(req: &ExecuteRequest) -> Self {
        Self {
            command: req.command.clone().or_else(|| req.value.clone()),
            arguments: req.arguments.clone().unwrap_or_default(),
            shell: req.shell,
            timeout: None,
        }
    }

    /// What a validated plan runs.
    #[must_use]
    pub fn of_plan(plan: &Plan) -> Self {
        Self { command: Some(plan.command.clone()), arguments: plan.arguments.clone(), shell: Some(plan.shell), timeout: plan.timeout }
    }
}

/// The one audit line of an execute request, accepted or refused.
pub fn audit(peer: &Peer, attempt: &Attempt, result: Result<i32, &ApiError>) {
    let outcome = match result {
        Ok(pid) => format!("started pid {pid}"),
        Err(e) => format!("refused ({}): {e}", e.status().as_u16()),
    };
    info!(
        target: "mesos_hook_executor::audit",
        event = "execute",
        peer = %peer,
        peer_uid = peer.uid(),
        peer_pid = peer.pid(),
        command = ?attempt.command,
        arguments = ?attempt.arguments,
        shell = ?attempt.shell,
        timeout = ?attempt.timeout,
        pid = result.as_ref().ok(),
        outcome = %outcome,
        "remote execute"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::types::{Environment, Variable};

    fn base() -> BTreeMap<String, String> {
        [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into_iter().collect()
    }

    fn req(json: &str) -> ExecuteRequest {
        serde_json::from_str(json).expect("valid request json")
    }

    #[test]
    fn shell_is_the_default_and_ignores_arguments_with_a_warning() {
        let p = plan(req(r#"{"command": "echo hi", "arguments": ["x"]}"#), &base(), Path::new("/")).expect("plan");
        assert_eq!(p.program, PathBuf::from("/bin/sh"));
        assert_eq!(p.args, vec!["-c".to_owned(), "echo hi".to_owned()]);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("ignored"));
    }

    #[test]
    fn no_shell_passes_arguments_verbatim_after_the_program() {
        let p = plan(req(r#"{"command": "echo", "arguments": ["$PATH"], "shell": false}"#), &base(), Path::new("/")).expect("plan");
        assert!(p.program.ends_with("echo"));
        assert_eq!((p.argv0.as_str(), p.args.clone()), ("echo", vec!["$PATH".to_owned()]));
        assert!(p.warnings.is_empty());
        assert_eq!(p.display, "echo $PATH");
    }

    #[test]
    fn command_info_spelling_environment_and_timeouts() {
        let p = plan(
            req(r#"{"value": "env", "environment": {"variables": [{"name": "A", "value": "1"}, {"name": "EXECUTE_TIMEOUT_SEC", "value": "7"}]}, "user": "x"}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(p.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(p.timeout, Some(Duration::from_secs(7)));
        assert_eq!(p.warnings, vec!["unknown field \"user\" ignored".to_owned()]);
        let p = plan(req(r#"{"command": "true", "timeout": 1.5}"#), &base(), Path::new("/")).expect("plan");
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        let p = plan(req(r#"{"command": "true", "timeout": 0}"#), &base(), Path::new("/")).expect("plan");
        assert_eq!(p.timeout, None);
    }

    #[test]
    fn bad_requests_are_400() {
        for body in [
            r#"{"command": ""}"#,
            r#"{"command": "   "}"#,
            r"{}",
            r#"{"command": "a", "value": "b"}"#,
            r#"{"command": "true", "timeout": -1}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "ten"}]}}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "1.5"}]}}"#,
            r#"{"command": "no-such-program-here", "shell": false}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "A=B", "value": "1"}]}}"#,
        ] {
            let r = plan(req(body), &base(), Path::new("/"));
            assert!(matches!(r, Err(ApiError::BadRequest(_))), "{body}: {r:?}");
        }
        let secret = ExecuteRequest {
            command: Some("true".into()),
            environment: Some(Environment { variables: vec![Variable { name: "S".into(), value: None, kind: Some("SECRET".into()) }] }),
            ..ExecuteRequest::default()
        };
        let p = plan(secret, &base(), Path::new("/")).expect("plan");
        assert!(!p.env.contains_key("S"));
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn output_is_capped_and_lines_keep_their_order() {
        let mut out = Output::new(10);
        out.append(Stream::Stdout, b"ab");
        out.append(Stream::Stderr, b"x\n");
        out.append(Stream::Stdout, b"c\nd");
        let mut cursor = LineCursor::default();
        assert_eq!(cursor.advance(&out), vec![(Stream::Stderr, "x".to_owned()), (Stream::Stdout, "abc".to_owned())]);
        out.append(Stream::Stdout, b"e\nfghijkl");
        assert!(out.stdout_truncated);
        assert_eq!(out.bytes(Stream::Stdout), b"abc\nde\nfgh");
        assert_eq!(cursor.advance(&out), vec![(Stream::Stdout, "de".to_owned())]);
        assert_eq!(cursor.flush(&out), vec![(Stream::Stdout, "fgh".to_owned())]);
        assert!(cursor.flush(&out).is_empty());
        // A second reader replays everything in the same order.
        let mut replay = LineCursor::default();
        let all: Vec<String> = replay.flush(&out).into_iter().map(|(_, l)| l).collect();
        assert_eq!(all, ["x", "abc", "de", "fgh"]);
    }
}
