//! One remote command: its state as readers see it ([`RemoteCommand`]) and
//! its supervisor ([`supervise`]).
//!
//! The supervisor is the only owner of the process: it reads both pipes into
//! the capped [`Output`], waits for the reaper's exit status and drives the
//! SIGTERM → grace → SIGKILL sequence of the command's process group on
//! timeout or terminate. Readers (result waits, SSE streams) follow a
//! per-command `watch` version counter, so no reader ever buffers output of
//! its own: memory is the capped capture per stream, times running plus
//! retained commands.

use std::{
    io,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use nix::sys::signal::Signal;
use tokio::{
    io::AsyncReadExt,
    net::unix::pipe,
    sync::{watch, Notify},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    output::{LineCursor, Output, Stream},
    types::{CommandResult, RunningResponse},
};
use crate::{
    task::guard::KILL_REQUEST,
    task::process::{self, Auxiliary},
    task::termination::ExitOutcome,
    util::{lock, sleep_until},
};

/// How long after the command's leader exits its pipes may stay open (held
/// by a process that left the group) before the result is closed anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How a command ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    /// The leader's exit.
    pub(crate) outcome: ExitOutcome,
    /// The timeout fired (SIGTERM was sent).
    pub(crate) timed_out: bool,
    /// `DELETE` asked for it (SIGTERM was sent).
    pub(crate) terminated: bool,
    /// When the result was closed.
    pub(crate) at: Instant,
}

#[derive(Debug)]
struct State {
    output: Output,
    finished: Option<Finished>,
}

/// One remote command, running or finished.
#[derive(Debug)]
pub(crate) struct RemoteCommand {
    /// Its pid, also its process group id.
    pub(crate) pid: i32,
    /// Its command line, for display.
    pub(crate) display: String,
    /// Start order in the registry (a pid may be reused).
    pub(crate) seq: u64,
    started: Instant,
    state: Mutex<State>,
    /// Bumped on every output append and at the end.
    version: watch::Sender<u64>,
    /// `DELETE /remote/task/{pid}`.
    terminate: Notify,
}

/// A view of a command for a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Snapshot {
    /// Still running.
    Running(RunningResponse),
    /// Done.
    Finished(CommandResult),
}

impl RemoteCommand {
    /// A command that just started, capturing at most `max_output` bytes per stream.
    pub(crate) fn new(pid: i32, display: String, seq: u64, max_output: usize) -> Self {
        Self {
            pid,
            display,
            seq,
            started: Instant::now(),
            state: Mutex::new(State {
                output: Output::new(max_output),
                finished: None,
            }),
            version: watch::channel(0).0,
            terminate: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Captures `data`; returns whether `stream` is now full, so that the
    /// supervisor discards the rest without copying it ([`discard`]).
    /// Readers are woken only when something was kept.
    fn append(&self, stream: Stream, data: &[u8]) -> bool {
        let (kept, full) = {
            let mut st = self.state();
            let kept = st.output.append(stream, data);
            (kept, st.output.full(stream))
        };
        if kept {
            self.bump();
        }
        full
    }

    /// Flags `stream` as truncated: output past the cap was discarded.
    fn truncated(&self, stream: Stream) {
        self.state().output.truncate(stream);
    }

    /// Records how it ended and wakes every reader; returns the bytes its
    /// retained result keeps.
    pub(crate) fn record(&self, finished: Finished) -> usize {
        let bytes = {
            let mut st = self.state();
            st.finished = Some(finished);
            st.output.seal()
        };
        self.bump();
        info!(
            pid = self.pid,
            outcome = ?finished.outcome,
            timed_out = finished.timed_out,
            terminated = finished.terminated,
            duration = ?finished.at.saturating_duration_since(self.started),
            "remote command finished"
        );
        bytes
    }

    /// When its result was closed, once finished.
    #[must_use]
    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.state().finished.map(|f| f.at)
    }

    /// The command as a response body.
    #[must_use]
    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.state();
        let text = |s| String::from_utf8_lossy(st.output.bytes(s)).into_owned();
        match st.finished {
            Some(f) => {
                let (exit_code, signaled) = match f.outcome {
                    ExitOutcome::Exited(code) => (code, false),
                    ExitOutcome::Signaled { signal, .. } => (signal, true),
                    // Only the task is started this way; as a shell says it.
                    ExitOutcome::NotExecuted { .. } => (127, false),
                };
                Snapshot::Finished(CommandResult {
                    exit_code,
                    signaled,
                    stdout: text(Stream::Stdout),
                    stderr: text(Stream::Stderr),
                    timed_out: f.timed_out,
                    terminated: f.terminated,
                    stdout_truncated: st.output.truncated(Stream::Stdout),
                    stderr_truncated: st.output.truncated(Stream::Stderr),
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
    pub(crate) fn finished(&self) -> bool {
        self.state().finished.is_some()
    }

    /// Waits until it finishes, or `limit` passes (`None`: no limit).
    pub(crate) async fn wait(&self, limit: Option<Duration>) -> Snapshot {
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
    pub(crate) fn request_terminate(&self) {
        self.terminate.notify_one();
    }

    /// New output lines since `cursor` and, once finished, the tails and the result.
    pub(crate) fn follow(&self, cursor: &mut LineCursor) -> (Vec<(Stream, String)>, bool) {
        let st = self.state();
        if st.finished.is_some() {
            (cursor.flush(&st.output), true)
        } else {
            (cursor.advance(&st.output), false)
        }
    }

    /// A receiver that changes whenever output arrives or the command ends.
    #[must_use]
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Signals the command's process group; a failure other than "already gone"
/// is only logged (the supervisor goes on: the group is SIGKILLed at the end).
fn signal(pid: i32, signal: Signal) {
    if let Err(e) = process::signal_group(pid, signal) {
        warn!(pgid = pid, %signal, cause = %e, "could not signal a remote command's process group");
    }
}

/// What one wake-up of a pipe gave.
enum Pumped {
    /// Bytes read into the buffer (0: end of stream).
    Read(usize),
    /// Bytes thrown away (0: end of stream).
    Discarded(usize),
}

/// Reads a pipe into `buf`, or, once its capture is full (`discard` is
/// `/dev/null`), throws its data away: after [`DISCARD_PAUSE`], `splice(2)`
/// moves up to [`DISCARD_CHUNK`] without copying it through our memory;
/// where splice is refused, it reads into `buf` (reused) instead. A pipe
/// that was not there reads as ended.
async fn pump(
    pipe: &mut Option<pipe::Receiver>,
    buf: &mut [u8],
    discard: Option<(&std::fs::File, Instant)>,
) -> io::Result<Pumped> {
    use std::os::fd::AsRawFd;
    let Some(p) = pipe else {
        return Ok(Pumped::Read(0));
    };
    let Some((null, not_before)) = discard else {
        return p.read(buf).await.map(Pumped::Read);
    };
    // Let the pipe fill first: draining on every write of a fast writer
    // would cost a wake-up per write; this way it is at most one per pause
    // (the writer blocks on the full pipe meanwhile). The instant is kept
    // by the caller, so a future dropped by `select!` does not restart it.
    tokio::time::sleep_until(not_before).await;
    loop {
        p.readable().await?;
        let moved = p.try_io(|| {
            // SAFETY: both are open descriptors we own for the whole call;
            // no memory of ours is passed.
            let n = unsafe {
                libc::splice(
                    p.as_raw_fd(),
                    std::ptr::null_mut(),
                    null.as_raw_fd(),
                    std::ptr::null_mut(),
                    DISCARD_CHUNK,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        match moved {
            Ok(n) => return Ok(Pumped::Discarded(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match p.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other.map(Pumped::Discarded),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Bytes moved to `/dev/null` per wake-up once a capture is full.
const DISCARD_CHUNK: usize = 1 << 20;
/// Pause before each drain of a pipe whose capture is full: output past the
/// cap flows at up to [`DISCARD_CHUNK`] per pause (50 MiB/s), for 50
/// wake-ups a second instead of one per write: freeing the writer's pipe
/// pages is the cost that is left, and it is proportional to that rate.
const DISCARD_PAUSE: Duration = Duration::from_millis(20);

/// Grows a pipe whose output is being discarded, so each wake-up moves more
/// (best effort: the pipe-max-size limit may refuse it).
fn enlarge(pipe: Option<&pipe::Receiver>) {
    use std::os::fd::AsRawFd;
    if let Some(p) = pipe {
        // SAFETY: fcntl on a descriptor we own; an error is harmless.
        let _ = unsafe { libc::fcntl(p.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
}

/// Owns `child` (the process of `cmd`) until it is finished: captures its
/// output, applies `timeout` and terminate requests (SIGTERM, then SIGKILL
/// after `kill_grace`), and says how it ended. Its group is SIGKILLed when
/// the leader exits and when `child` is dropped here.
pub(crate) async fn supervise(
    cmd: &RemoteCommand,
    mut child: Auxiliary,
    timeout: Option<Duration>,
    kill_grace: Duration,
) -> Finished {
    let pid = cmd.pid;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    let (mut out_open, mut err_open) = (true, true);
    // Set once a stream's capture is full: the rest goes to /dev/null.
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
    let (mut out_full, mut err_full) = (false, false);
    // When each stream may next be drained (once full: see `pump`).
    let (mut out_next, mut err_next) = (Instant::now(), Instant::now());
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
            r = pump(&mut stdout, &mut out_buf, null.as_ref().ok().filter(|_| out_full).map(|n| (n, out_next))), if out_open => match r {
                Ok(Pumped::Read(n)) if n > 0 => {
                    out_full = cmd.append(Stream::Stdout, &out_buf[..n]);
                    if out_full {
                        enlarge(stdout.as_ref());
                    }
                }
                Ok(Pumped::Discarded(n)) if n > 0 => {
                    cmd.truncated(Stream::Stdout);
                    out_next = Instant::now() + DISCARD_PAUSE;
                }
                _ => out_open = false,
            },
            r = pump(&mut stderr, &mut err_buf, null.as_ref().ok().filter(|_| err_full).map(|n| (n, err_next))), if err_open => match r {
                Ok(Pumped::Read(n)) if n > 0 => {
                    err_full = cmd.append(Stream::Stderr, &err_buf[..n]);
                    if err_full {
                        enlarge(stderr.as_ref());
                    }
                }
                Ok(Pumped::Discarded(n)) if n > 0 => {
                    cmd.truncated(Stream::Stderr);
                    err_next = Instant::now() + DISCARD_PAUSE;
                }
                _ => err_open = false,
            },
            o = child.wait(), if leader.is_none() => {
                leader = Some(o.unwrap_or(ExitOutcome::Exited(-1)));
                // What the leader left in its group goes with it, as for the task.
                signal(pid, Signal::SIGKILL);
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
            }
            () = sleep_until(term_at), if leader.is_none() && !(timed_out || terminated) => {
                timed_out = true;
                info!(pid, timeout = ?timeout, "remote command timed out; sending SIGTERM to its process group");
                signal(pid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + kill_grace);
            }
            () = cmd.terminate.notified(), if leader.is_none() && !(timed_out || terminated) => {
                terminated = true;
                info!(pid, "terminating remote command: SIGTERM to its process group");
                signal(pid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + kill_grace);
            }
            () = sleep_until(kill_at), if leader.is_none() => {
                kill_at = None;
                warn!(pid, grace = ?kill_grace, "remote command outlived its grace; its guard SIGKILLs its processes");
                // Not SIGKILL to the group: that would kill the guard before
                // it kills what left the group (see `crate::task::guard`).
                if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), KILL_REQUEST) {
                    warn!(pid, cause = %e, "could not signal a remote command's guard");
                }
            }
            () = sleep_until(drain_until) => {
                debug!(pid, "remote command's output still open after its exit (held by an escaped process); closing the result");
                break;
            }
        }
    }
    drop(child);
    Finished {
        outcome: leader.unwrap_or(ExitOutcome::Exited(-1)),
        timed_out,
        terminated,
        at: Instant::now(),
    }
}
