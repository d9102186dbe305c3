//! Mesos health checks (`TaskInfo.health_check`) and generic checks
//! (`TaskInfo.check`), as the Mesos command executor runs them
//! (Apache Mesos' `src/checks/health_checker.cpp`, `checker.cpp`,
//! `checker_process.cpp`), but without a helper process per probe: HTTP,
//! HTTPS and TCP probes are made in-process, only COMMAND checks fork.
//!
//! # Shape
//! - [`spec`]: `HealthCheck`/`CheckInfo` → validated [`spec::Probe`] and
//!   [`spec::Schedule`] (pure).
//! - [`verdict`]: what an [`Observation`] means (pure): health and check state,
//!   the statuses to report.
//! - [`probe`]: the checkers that make the HTTP, TCP and COMMAND probes.
//! - here: [`Checks`], the owner's view of its task's checks.
//!
//! A *checker* is one spawned tokio task per check. It sleeps `delay`, runs the
//! probe under its timeout, hands the raw [`Observation`] to the executor's
//! inbox, then sleeps `interval` counted from the end of the probe (fixed delay,
//! as Mesos), so a slow check is never run twice at once. It never decides
//! anything: the owner ([`crate::executor`]) feeds each observation to
//! [`Checks`], whose pure parts ([`verdict::HealthState::observe`],
//! [`verdict::CheckState::observe`]) decide what to report, and then sends the update.
//! A checker ends when the owner aborts it (the task is being killed or has
//! ended); a COMMAND check's process group dies with the run that spawned it
//! ([`crate::task::process::Auxiliary`]), so no check process outlives its run, let alone the
//! executor.
//!
//! # Semantics (Mesos' own)
//! * Health: COMMAND exit 0, HTTP status in `[200, 400)` (`statuses` is ignored),
//!   TCP connected. A probe that cannot be performed (timeout, refused HTTP
//!   connection, a command killed by a signal) is a failure.
//! * A failure is ignored while no success has been seen yet and the check is
//!   inside `grace_period_seconds` (counted from the checker's start). Every
//!   counted failure reports `healthy = false` (each time, not only on the
//!   transition); the `consecutive_failures`-th one (default 3; 0 means the
//!   first) also kills the task. A success reports `healthy = true` only the
//!   first time ever and the first time after failures.
//! * Generic checks report a `CheckStatusInfo` only when it differs from the
//!   previous one (initially the empty typed message); an error yields the
//!   empty typed message.
//! * Each report is a copy of the last status sent for the task (TASK_RUNNING,
//!   its message, `check_status`, `healthy`…) with a new uuid and timestamp and
//!   reason `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED` or
//!   `REASON_TASK_CHECK_STATUS_UPDATED`. Every status created from scratch for
//!   a task with a `CheckInfo` carries the empty typed `check_status`.
//! * An invalid check (negative durations, unknown type, missing fields) is
//!   logged and the task runs without it, as Mesos does.
//!
//! Our additions: port 0 means the task's first port resource; a port above
//! 65535 or a NaN/infinite duration is invalid (Mesos would crash or build a
//! bad URL). Redirects are followed at most
//! [`MAX_REDIRECTS`](crate::net::http::MAX_REDIRECTS) times (curl `-L`).

mod probe;
mod spec;
mod verdict;

use std::{collections::BTreeMap, path::PathBuf};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tracing::{debug, error, info, warn};

pub use verdict::Observation;

use self::{
    probe::{spawn_checker, ProbeRunner},
    spec::{check_spec, health_spec, task_port, Probe, Schedule},
    verdict::{derived_status, empty_check_status, health_failure, CheckState, HealthState},
};
use crate::{
    proto::v1::{self, check_info, task_status::Reason},
    task::process::Reaper,
};

/// A health update to send, and what follows from it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    /// The TASK_RUNNING update with `healthy` set.
    pub status: v1::TaskStatus,
    /// Kill the task (after sending the update).
    pub kill: bool,
    /// The first healthy result of the task.
    pub first_healthy: bool,
}

/// Where COMMAND checks run: the task's environment and sandbox.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's complete environment.
    pub env: BTreeMap<String, String>,
    /// The task's working directory.
    pub cwd: PathBuf,
    /// The executor's child reaper.
    pub reaper: Reaper,
}

/// The executor's view of its task's checks: their interpretation state and
/// the last status sent (which reports copy). Pure: it lives in the owner's
/// state; the probes themselves run in [`Checkers`], which the owner loop holds.
#[derive(Debug, Default)]
pub struct Checks {
    task_id: Option<v1::TaskId>,
    check_kind: Option<check_info::Type>,
    last_status: Option<v1::TaskStatus>,
    health: Option<(HealthState, Instant)>,
    check: Option<CheckState>,
}

/// Which of the task's checks a probe serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckRole {
    /// `TaskInfo.health_check`.
    Health,
    /// `TaskInfo.check` (a generic check).
    Check,
}

/// A check to probe, as [`Checks::arm`] accepted it.
#[derive(Debug, Clone)]
pub(crate) struct Armed {
    role: CheckRole,
    probe: Probe,
    schedule: Schedule,
}

/// The running probes of a task; dropping them stops them (a COMMAND check in
/// flight has its process group killed).
#[derive(Debug, Default)]
pub(crate) struct Checkers(Vec<JoinHandle<()>>);

impl Checkers {
    /// Starts one checker task per armed check, reporting to `inbox`.
    pub(crate) fn spawn<T: Send + 'static>(
        armed: Vec<Armed>,
        ctx: &TaskContext,
        inbox: &mpsc::Sender<T>,
        health_input: fn(Observation) -> T,
        check_input: fn(Observation) -> T,
    ) -> Self {
        let handles = armed
            .into_iter()
            .map(|a| {
                let (name, input) = match a.role {
                    CheckRole::Health => ("health check", health_input),
                    CheckRole::Check => ("check", check_input),
                };
                let runner = ProbeRunner::new(name, a.probe, &a.schedule, ctx);
                spawn_checker(runner, a.schedule, inbox.clone(), input)
            })
            .collect();
        Self(handles)
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            debug!(count = self.0.len(), "stopping checkers");
        }
        for handle in self.0.drain(..) {
            handle.abort();
        }
    }
}

impl Checks {
    /// For a task just received: remembers its id and check type so every
    /// status of it carries `check_status`. Nothing runs yet.
    #[must_use]
    pub fn for_task(task: &v1::TaskInfo) -> Self {
        let check_kind = task
            .check
            .as_ref()
            .and_then(|c| c.r#type)
            .and_then(|t| check_info::Type::try_from(t).ok())
            .filter(|t| *t != check_info::Type::Unknown);
        Self {
            task_id: Some(task.task_id.clone()),
            check_kind,
            last_status: None,
            health: None,
            check: None,
        }
    }

    /// The task's health as last reported (`None` until a health check has).
    #[must_use]
    pub fn healthy(&self) -> Option<bool> {
        self.last_status.as_ref().and_then(|s| s.healthy)
    }

    /// Whether a health checker runs for the task (a valid `health_check`);
    /// without one, after-healthy follows after-start.
    #[must_use]
    pub fn has_health_checker(&self) -> bool {
        self.health.is_some()
    }

    /// Called for every status the executor records: a status of our task
    /// created from scratch gets the empty typed `check_status` (as Mesos'
    /// `createTaskStatus`), and the status becomes the one reports copy.
    pub fn on_status(&mut self, status: &mut v1::TaskStatus) {
        if self.task_id.as_ref() != Some(&status.task_id) {
            return;
        }
        if status.check_status.is_none() {
            status.check_status = self.check_kind.and_then(empty_check_status);
        }
        self.last_status = Some(status.clone());
    }

    /// Arms the task's checks (right after TASK_RUNNING, at `now`) and
    /// returns what to probe. An invalid check is logged and skipped; the task
    /// runs without it, as with Mesos.
    pub(crate) fn arm(&mut self, task: &v1::TaskInfo, now: Instant) -> Vec<Armed> {
        let port = task_port(task);
        let task_id = task.task_id.value.as_str();
        let mut armed = Vec::new();
        if let Some(hc) = &task.health_check {
            match health_spec(hc, port) {
                Ok(spec) => {
                    info!(task_id, probe = ?spec.probe, schedule = ?spec.schedule, grace = ?spec.grace,
                        consecutive_failures = spec.consecutive_failures, "starting the health check");
                    self.health =
                        Some((HealthState::new(spec.grace, spec.consecutive_failures), now));
                    armed.push(Armed {
                        role: CheckRole::Health,
                        probe: spec.probe,
                        schedule: spec.schedule,
                    });
                }
                Err(e) => {
                    error!(task_id, cause = %e, "invalid health check; the task runs without it")
                }
            }
        }
        if let Some(ci) = &task.check {
            match check_spec(ci, port) {
                Ok(spec) => {
                    info!(task_id, probe = ?spec.probe, schedule = ?spec.schedule, "starting the check");
                    self.check = Some(CheckState::new(spec.kind));
                    armed.push(Armed {
                        role: CheckRole::Check,
                        probe: spec.probe,
                        schedule: spec.schedule,
                    });
                }
                Err(e) => error!(task_id, cause = %e, "invalid check; the task runs without it"),
            }
        }
        armed
    }

    /// Disarms the checks (the task is being killed or has ended): later
    /// results are ignored, as Mesos pauses its checkers. Whether any was armed.
    pub(crate) fn disarm(&mut self) -> bool {
        let armed = self.health.is_some() || self.check.is_some();
        self.health = None;
        self.check = None;
        armed
    }

    /// Interprets a health observation; the update to send, if any.
    pub fn health_update(
        &mut self,
        observation: &Observation,
        now: Instant,
    ) -> Option<HealthUpdate> {
        let (state, started) = self.health.as_mut()?;
        let failure = health_failure(observation);
        let since_start = now.saturating_duration_since(*started);
        let verdict = state.observe(failure.is_none(), since_start);
        match (&failure, verdict.report) {
            (Some(cause), None) => {
                info!(cause = %cause, "ignoring a health check failure: still in the grace period")
            }
            (Some(cause), Some(_)) => {
                warn!(cause = %cause, failures = state.failures(), "health check failed")
            }
            (None, Some(_)) => info!("health check passed; task is healthy"),
            (None, None) => debug!("health check passed"),
        }
        let healthy = verdict.report?;
        let Some(last) = &self.last_status else {
            warn!("a health result before any status was sent; ignored");
            return None;
        };
        let status = derived_status(
            last,
            Reason::TaskHealthCheckStatusUpdated,
            Some(healthy),
            None,
        );
        Some(HealthUpdate {
            status,
            kill: verdict.kill,
            first_healthy: verdict.first_healthy,
        })
    }

    /// Interprets a generic check observation; the update to send, if any.
    pub fn check_update(&mut self, observation: &Observation) -> Option<v1::TaskStatus> {
        let state = self.check.as_mut()?;
        if let Observation::Error(e) = observation {
            warn!(cause = %e, "check failed");
        }
        let changed = state.observe(observation)?;
        info!(check_status = ?changed, "check status changed");
        let last = self.last_status.as_ref()?;
        Some(derived_status(
            last,
            Reason::TaskCheckStatusUpdated,
            None,
            Some(changed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::updates;

    #[test]
    fn fresh_statuses_of_a_checked_task_carry_the_empty_typed_check_status() {
        let task = v1::TaskInfo {
            task_id: v1::TaskId { value: "t".into() },
            check: Some(v1::CheckInfo {
                r#type: Some(check_info::Type::Command as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut checks = Checks::for_task(&task);
        let mut running = updates::new_status(&task.task_id, v1::TaskState::TaskRunning, "e");
        checks.on_status(&mut running);
        assert_eq!(
            running.check_status,
            empty_check_status(check_info::Type::Command)
        );
        let mut other = updates::new_status(
            &v1::TaskId {
                value: "other".into(),
            },
            v1::TaskState::TaskFailed,
            "e",
        );
        checks.on_status(&mut other);
        assert_eq!(other.check_status, None);
        // Without checkers nothing is reported.
        assert_eq!(
            checks.health_update(&Observation::Exited(0), Instant::now()),
            None
        );
        assert_eq!(checks.check_update(&Observation::Exited(0)), None);
    }
}
