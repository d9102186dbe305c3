//! The [`Registry`] of remote commands: starting them within the limits,
//! retaining finished results by count and age, and killing the running
//! ones at exit.
//!
//! The registry is not the task's state, so it lives outside the executor's
//! owner loop, behind a `std` mutex held only for short, non-awaiting
//! sections. Commands run as the executor's user, in the sandbox, in their
//! own process group (see [`crate::task::process::Reaper::spawn_auxiliary`]).

use std::{
    collections::{HashMap, VecDeque},
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use nix::sys::signal::Signal;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    command::{supervise, Finished, RemoteCommand},
    error::ApiError,
    plan::Plan,
};
use crate::{
    task::process::{self, AuxiliaryStdio, Reaper, SpawnError},
    util::lock,
};

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Commands running at once.
    pub(crate) max_running: usize,
    /// Finished results kept.
    pub(crate) max_retained: usize,
    /// How long a finished result is kept.
    pub(crate) retention: Duration,
    /// Bytes captured per stream.
    pub(crate) max_output: usize,
    /// SIGTERM → SIGKILL grace.
    pub(crate) kill_grace: Duration,
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
pub(crate) struct Registry {
    inner: Mutex<Inner>,
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

    /// Starts `plan`; returns the pid. The caller audits (see [`super::audit`]).
    pub(crate) fn execute(self: &Arc<Self>, plan: &Plan) -> Result<i32, ApiError> {
        let result = self.spawn(plan);
        for w in &plan.warnings {
            warn!(pid = result.as_ref().ok(), warning = %w, "remote execute request");
        }
        result
    }

    fn spawn(self: &Arc<Self>, plan: &Plan) -> Result<i32, ApiError> {
        // Held across the spawn, so the running limit is exact.
        let mut inner = self.inner();
        if inner.closed {
            return Err(ApiError::ShuttingDown);
        }
        if inner.running >= self.limits.max_running {
            return Err(ApiError::TooManyRunning(self.limits.max_running));
        }
        let mut command = Command::new(&plan.program);
        command
            .arg0(&plan.argv0)
            .args(&plan.args)
            .env_clear()
            .envs(&plan.env)
            .current_dir(&self.cwd);
        let stdio = AuxiliaryStdio {
            stdin: Stdio::null(),
            stdout: Stdio::piped(),
            stderr: Stdio::piped(),
        };
        let child = self
            .reaper
            .spawn_auxiliary(command, stdio)
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
        });
        Ok(pid)
    }

    /// Records the end of a command, frees its running slot and prunes.
    fn finish(&self, cmd: &Arc<RemoteCommand>, finished: Finished) {
        cmd.record(finished);
        let mut inner = self.inner();
        inner.running = inner.running.saturating_sub(1);
        crate::metrics::get().remote.running.dec();
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
            let old = cmd
                .finished_at()
                .is_some_and(|at| now.saturating_duration_since(at) >= self.limits.retention);
            if inner.finished.len() > self.limits.max_retained || old {
                inner.finished.pop_front();
                inner.commands.remove(&pid);
            } else {
                break;
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
        let mut inner = self.inner();
        inner.closed = true;
        let running: Vec<i32> = inner
            .commands
            .values()
            .filter(|c| !c.finished())
            .map(|c| c.pid)
            .collect();
        drop(inner);
        for pgid in &running {
            let _ = process::signal_group(*pgid, Signal::SIGKILL);
        }
        if !running.is_empty() {
            info!(
                count = running.len(),
                "killed running remote commands at exit"
            );
        }
    }
}
