//! The [`Registry`] of remote commands: starting them within the limits
//! (executes beyond the running limit wait in a bounded FIFO queue),
//! retaining finished results by count, captured bytes and age, and killing
//! the running ones at exit.
//!
//! The registry is not the task's state, so it lives outside the executor's
//! owner loop, behind a `std` mutex held only for short, non-awaiting
//! sections. Commands run as the executor's user, in the sandbox, in their
//! own process group, led by a guard that owns what they start, even outside
//! their group, and dies with the executor ([`crate::task::guard`]).

use std::{
    collections::{HashMap, VecDeque},
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::{info, warn};

use super::{
    command::{supervise, Finished, RemoteCommand},
    error::ApiError,
    plan::Plan,
};
use crate::{
    task::guard::{Leftovers, KILL_REQUEST},
    task::process::{AuxCommand, AuxIo, AuxiliaryStdio, Reaper, SpawnError},
    util::lock,
};

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Commands running at once.
    pub(crate) max_running: usize,
    /// Finished results kept.
    pub(crate) max_retained: usize,
    /// Captured bytes kept in finished results, all together.
    pub(crate) max_retained_bytes: usize,
    /// How long a finished result is kept.
    pub(crate) retention: Duration,
    /// Bytes captured per stream.
    pub(crate) max_output: usize,
    /// SIGTERM → SIGKILL grace.
    pub(crate) kill_grace: Duration,
    /// Executes waiting for a running slot.
    pub(crate) max_queued: usize,
    /// How long an execute waits for one.
    pub(crate) queue_timeout: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    commands: HashMap<i32, Arc<RemoteCommand>>,
    /// Finished commands in the order they finished: (pid, seq, captured bytes).
    finished: VecDeque<(i32, u64, usize)>,
    /// Captured bytes of the finished commands in `finished`.
    retained_bytes: usize,
    running: usize,
    next_seq: u64,
    closed: bool,
}

/// One place in the execute queue, left when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    /// Joins the queue unless `max` already wait.
    fn join(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                crate::metrics::get().remote.queued.inc();
                Self(queued)
            })
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::get().remote.queued.dec();
    }
}

/// Running and finished remote commands. Cheap to share.
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// Running slots; executes beyond them wait here in FIFO order.
    slots: Arc<Semaphore>,
    /// Executes waiting for a slot now.
    queued: AtomicUsize,
    reaper: Reaper,
    limits: Limits,
    cwd: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry spawning through `reaper`, running commands in `cwd`.
    #[must_use]
    pub(crate) fn new(reaper: Reaper, limits: Limits, cwd: PathBuf) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            slots: Arc::new(Semaphore::new(limits.max_running)),
            queued: AtomicUsize::new(0),
            reaper,
            limits,
            cwd,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The directory commands run in.
    #[must_use]
    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// A running slot for one execute: at once if one is free, else after
    /// waiting in the queue (FIFO) up to the queue timeout. `429` only when
    /// the queue is full.
    pub(crate) async fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        use tokio::sync::TryAcquireError;
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(ApiError::ShuttingDown),
            Err(TryAcquireError::NoPermits) => {}
        }
        let queue =
            Queued::join(&self.queued, self.limits.max_queued).ok_or(ApiError::TooManyRunning {
                running: self.limits.max_running,
                queued: self.limits.max_queued,
            })?;
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await;
        drop(queue);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::ShuttingDown),
            Err(_elapsed) => Err(ApiError::QueueTimeout(self.limits.queue_timeout)),
        }
    }

    /// Starts `plan` in the running slot `permit` (held until it finishes);
    /// returns the pid. The caller audits (see [`super::audit`]).
    pub(crate) fn execute(
        self: &Arc<Self>,
        plan: &Plan,
        permit: OwnedSemaphorePermit,
    ) -> Result<i32, ApiError> {
        let result = self.spawn(plan, permit);
        for w in &plan.warnings {
            warn!(pid = result.as_ref().ok(), warning = %w, "remote execute request");
        }
        result
    }

    fn spawn(self: &Arc<Self>, plan: &Plan, permit: OwnedSemaphorePermit) -> Result<i32, ApiError> {
        let mut inner = self.inner();
        if inner.closed {
            return Err(ApiError::ShuttingDown);
        }
        // The command's guard (`task::guard`) leads its group and runs it.
        let mut command = AuxCommand::new(&plan.program);
        command
            .arg0(&plan.argv0)
            .args(&plan.args)
            .envs(&plan.env)
            .current_dir(&self.cwd);
        let stdio = AuxiliaryStdio {
            stdin: AuxIo::Null,
            stdout: AuxIo::Piped,
            stderr: AuxIo::Piped,
        };
        let child = self
            .reaper
            .spawn_guarded(command, stdio, None, Leftovers::Kill)
            .map_err(|e| match e {
                SpawnError::Start(ref os)
                    if matches!(
                        os.kind(),
                        io::ErrorKind::NotFound
                            | io::ErrorKind::PermissionDenied
                            | io::ErrorKind::InvalidInput
                    ) =>
                {
                    ApiError::Unstartable {
                        command: plan.command.clone(),
                        cause: e,
                    }
                }
                e => ApiError::Spawn(e),
            })?;
        let pid = child.pid();
        inner.next_seq += 1;
        let cmd = Arc::new(RemoteCommand::new(
            pid,
            plan.display.clone(),
            inner.next_seq,
            self.limits.max_output,
        ));
        // A retained result under a reused pid gives way to the new command.
        inner.commands.insert(pid, Arc::clone(&cmd));
        inner.running += 1;
        crate::metrics::get().remote.started.inc();
        crate::metrics::get().remote.running.inc();
        drop(inner);
        let registry = Arc::clone(self);
        let timeout = plan.timeout;
        tokio::spawn(async move {
            let finished = supervise(&cmd, child, timeout, registry.limits.kill_grace).await;
            registry.finish(&cmd, finished);
            drop(permit);
        });
        Ok(pid)
    }

    /// Records the end of a command, frees its running slot and prunes.
    fn finish(&self, cmd: &Arc<RemoteCommand>, finished: Finished) {
        let bytes = cmd.record(finished);
        let mut inner = self.inner();
        inner.running = inner.running.saturating_sub(1);
        crate::metrics::get().remote.running.dec();
        inner.finished.push_back((cmd.pid, cmd.seq, bytes));
        inner.retained_bytes += bytes;
        self.prune(&mut inner);
    }

    /// Drops finished results past the count, the bytes or the age limit,
    /// oldest first (the newest result stays whatever its size, so a command
    /// whose output alone is over the byte limit can still be read once).
    fn prune(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some(&(pid, seq, bytes)) = inner.finished.front() {
            let current = inner.commands.get(&pid).filter(|c| c.seq == seq).cloned();
            let drop_it = current.as_ref().is_none_or(|cmd| {
                let old = cmd
                    .finished_at()
                    .is_some_and(|at| now.saturating_duration_since(at) >= self.limits.retention);
                old || inner.finished.len() > self.limits.max_retained
                    || (inner.retained_bytes > self.limits.max_retained_bytes
                        && inner.finished.len() > 1)
            });
            if !drop_it {
                break;
            }
            inner.finished.pop_front();
            inner.retained_bytes = inner.retained_bytes.saturating_sub(bytes);
            // `None`: replaced by a newer command with the same pid.
            if current.is_some() {
                inner.commands.remove(&pid);
            }
        }
    }

    /// The command with `pid`, running or retained.
    pub(crate) fn get(&self, pid: i32) -> Result<Arc<RemoteCommand>, ApiError> {
        let mut inner = self.inner();
        self.prune(&mut inner);
        inner
            .commands
            .get(&pid)
            .cloned()
            .ok_or(ApiError::UnknownPid(pid))
    }

    /// Pids of running and retained commands, oldest first.
    pub(crate) fn pids(&self) -> Vec<i32> {
        let mut inner = self.inner();
        self.prune(&mut inner);
        let mut all: Vec<(u64, i32)> = inner.commands.values().map(|c| (c.seq, c.pid)).collect();
        all.sort_unstable();
        all.into_iter().map(|(_, pid)| pid).collect()
    }

    /// The reaper its commands are children of (their pids are not the task's).
    pub(crate) fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// (running, retained finished) counts.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let mut inner = self.inner();
        self.prune(&mut inner);
        (
            inner.running,
            inner.commands.len().saturating_sub(inner.running),
        )
    }

    /// Refuses new commands and SIGKILLs every running command's group at
    /// once. It does not wait for their results: nobody will read them, and the
    /// executor's exit sits inside the agent's shutdown margin.
    pub(crate) fn shutdown(&self) {
        self.slots.close();
        let mut inner = self.inner();
        inner.closed = true;
        let running: Vec<i32> = inner
            .commands
            .values()
            .filter(|c| !c.finished())
            .map(|c| c.pid)
            .collect();
        drop(inner);
        // Each guard SIGKILLs its command's whole tree (its group and what
        // left it); SIGKILL to the group would kill the guard first.
        for pid in &running {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), KILL_REQUEST);
        }
        if !running.is_empty() {
            info!(
                count = running.len(),
                "killed running remote commands at exit"
            );
        }
    }
}
