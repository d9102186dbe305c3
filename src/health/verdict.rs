//! The pure part of checks: what an observation means. Health results go
//! through [`HealthState`] (grace period, consecutive failures: Mesos'
//! `HealthChecker`), generic check results through [`CheckState`] (report on
//! change: Mesos' `Checker`), and every report is a [`derived_status`] of the
//! last status sent. No I/O and no clock here: the caller passes the time
//! since the checker started.

use std::time::Duration;

use crate::{
    agent::updates,
    proto::v1::{self, check_info, check_status_info, task_status::Reason},
};

/// What one run of a check saw, before any interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A COMMAND check's process exited with this code.
    Exited(i32),
    /// An HTTP(S) check got this status (after redirects).
    Http(u16),
    /// A TCP check connected (`true`) or could not (`false`).
    Tcp(bool),
    /// The check could not be performed: timeout, failed HTTP connection,
    /// command not started or killed by a signal.
    Error(String),
}

/// Why a health observation is a failure; `None` means healthy
/// (`interpretCheckStatusInfo` plus "an error is a failure").
#[must_use]
pub(crate) fn health_failure(observation: &Observation) -> Option<String> {
    match observation {
        Observation::Exited(0) | Observation::Tcp(true) => None,
        Observation::Http(status) if (200..400).contains(status) => None,
        Observation::Exited(code) => Some(format!("Command exited with status {code}")),
        Observation::Http(status) => Some(format!("Unexpected HTTP response code: {status}")),
        Observation::Tcp(false) => Some("TCP connection failed".to_owned()),
        Observation::Error(e) => Some(e.clone()),
    }
}

/// The empty typed `CheckStatusInfo` Mesos puts in every status of a task with
/// a check before (and outside) a result; `None` for the UNKNOWN type.
#[must_use]
pub(crate) fn empty_check_status(kind: check_info::Type) -> Option<v1::CheckStatusInfo> {
    let mut status = v1::CheckStatusInfo {
        r#type: Some(kind as i32),
        ..Default::default()
    };
    match kind {
        check_info::Type::Command => status.command = Some(check_status_info::Command::default()),
        check_info::Type::Http => status.http = Some(check_status_info::Http::default()),
        check_info::Type::Tcp => status.tcp = Some(check_status_info::Tcp::default()),
        check_info::Type::Unknown => return None,
    }
    Some(status)
}

/// The `CheckStatusInfo` for an observation of a check of type `kind`: the
/// result when there is one, the empty typed message on an error.
#[must_use]
pub(crate) fn check_status(
    kind: check_info::Type,
    observation: &Observation,
) -> Option<v1::CheckStatusInfo> {
    let mut status = empty_check_status(kind)?;
    match (kind, observation) {
        (check_info::Type::Command, Observation::Exited(code)) => {
            status.command = Some(check_status_info::Command {
                exit_code: Some(*code),
            })
        }
        (check_info::Type::Http, Observation::Http(code)) => {
            status.http = Some(check_status_info::Http {
                status_code: Some(u32::from(*code)),
            })
        }
        (check_info::Type::Tcp, Observation::Tcp(ok)) => {
            status.tcp = Some(check_status_info::Tcp {
                succeeded: Some(*ok),
            })
        }
        _ => {}
    }
    Some(status)
}

/// What the owner should do after a health observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Verdict {
    /// Send a health update with this `healthy` value.
    pub report: Option<bool>,
    /// The allowed consecutive failures are used up: kill the task.
    pub kill: bool,
    /// This is the first healthy result ever (the after-healthy event).
    pub first_healthy: bool,
}

/// The health interpretation state of one task (`HealthChecker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthState {
    grace: Duration,
    max_failures: u32,
    failures: u32,
    /// No success seen yet.
    initializing: bool,
}

impl HealthState {
    /// A fresh state: failures within `grace` of the start are ignored until
    /// the first success; `max_failures` consecutive failures kill.
    #[must_use]
    pub(crate) fn new(grace: Duration, max_failures: u32) -> Self {
        Self {
            grace,
            max_failures,
            failures: 0,
            initializing: true,
        }
    }

    /// Consecutive failures counted so far.
    #[must_use]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Applies one result, `since_start` after the checker started.
    pub(crate) fn observe(&mut self, healthy: bool, since_start: Duration) -> Verdict {
        if healthy {
            let report = self.initializing || self.failures > 0;
            let first_healthy = self.initializing;
            self.initializing = false;
            self.failures = 0;
            return Verdict {
                report: report.then_some(true),
                kill: false,
                first_healthy,
            };
        }
        if self.initializing && !self.grace.is_zero() && since_start <= self.grace {
            return Verdict::default();
        }
        self.failures = self.failures.saturating_add(1);
        Verdict {
            report: Some(false),
            kill: self.failures >= self.max_failures,
            first_healthy: false,
        }
    }
}

/// The generic check state of one task (`Checker`): the last status reported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckState {
    kind: check_info::Type,
    previous: Option<v1::CheckStatusInfo>,
}

impl CheckState {
    /// Starts from the empty typed status, as Mesos does.
    #[must_use]
    pub(crate) fn new(kind: check_info::Type) -> Self {
        Self {
            kind,
            previous: empty_check_status(kind),
        }
    }

    /// The status to report for `observation`, if it differs from the last one.
    pub(crate) fn observe(&mut self, observation: &Observation) -> Option<v1::CheckStatusInfo> {
        let status = check_status(self.kind, observation)?;
        if self.previous.as_ref() == Some(&status) {
            return None;
        }
        self.previous = Some(status);
        Some(status)
    }
}

/// A status derived from the last one sent (`protobuf::createTaskStatus` with
/// a previous status): everything kept, new uuid and timestamp, and the given
/// reason, `healthy` and `check_status` where set.
#[must_use]
pub(crate) fn derived_status(
    last: &v1::TaskStatus,
    reason: Reason,
    healthy: Option<bool>,
    check: Option<v1::CheckStatusInfo>,
) -> v1::TaskStatus {
    let mut status = last.clone();
    status.uuid = Some(uuid::Uuid::new_v4().into_bytes().to_vec());
    status.timestamp = Some(updates::now_secs());
    status.reason = Some(reason as i32);
    if healthy.is_some() {
        status.healthy = healthy;
    }
    if check.is_some() {
        status.check_status = check;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_success_and_first_success_after_failures_are_reported() {
        let mut h = HealthState::new(Duration::ZERO, 3);
        assert_eq!(
            h.observe(true, S),
            Verdict {
                report: Some(true),
                kill: false,
                first_healthy: true
            }
        );
        assert_eq!(h.observe(true, S), Verdict::default());
        assert_eq!(
            h.observe(false, S),
            Verdict {
                report: Some(false),
                kill: false,
                first_healthy: false
            }
        );
        assert_eq!(
            h.observe(true, S),
            Verdict {
                report: Some(true),
                kill: false,
                first_healthy: false
            }
        );
        assert_eq!(h.observe(true, S), Verdict::default());
    }

    #[test]
    fn every_counted_failure_is_reported_and_the_nth_consecutive_kills() {
        let mut h = HealthState::new(Duration::ZERO, 3);
        let v: Vec<Verdict> = (0..4).map(|_| h.observe(false, S)).collect();
        assert!(v.iter().all(|v| v.report == Some(false)));
        assert_eq!(
            v.iter().map(|v| v.kill).collect::<Vec<_>>(),
            vec![false, false, true, true]
        );
        // A success resets the count.
        let mut h = HealthState::new(Duration::ZERO, 2);
        assert!(!h.observe(false, S).kill);
        h.observe(true, S);
        assert!(!h.observe(false, S).kill);
        assert!(h.observe(false, S).kill);
    }

    #[test]
    fn zero_consecutive_failures_kills_on_the_first() {
        let mut h = HealthState::new(Duration::ZERO, 0);
        assert_eq!(
            h.observe(false, S),
            Verdict {
                report: Some(false),
                kill: true,
                first_healthy: false
            }
        );
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let grace = Duration::from_secs(10);
        let mut h = HealthState::new(grace, 1);
        assert_eq!(h.observe(false, Duration::from_secs(1)), Verdict::default());
        assert_eq!(
            h.observe(false, grace),
            Verdict::default(),
            "the grace bound is inclusive"
        );
        assert_eq!(h.failures(), 0);
        assert_eq!(
            h.observe(false, grace + Duration::from_millis(1)),
            Verdict {
                report: Some(false),
                kill: true,
                first_healthy: false
            }
        );
        // After a success the grace no longer applies, even inside it.
        let mut h = HealthState::new(grace, 3);
        assert!(h.observe(true, Duration::from_secs(1)).first_healthy);
        assert_eq!(h.observe(false, Duration::from_secs(2)).report, Some(false));
        // A zero grace ignores nothing.
        let mut h = HealthState::new(Duration::ZERO, 3);
        assert_eq!(h.observe(false, Duration::ZERO).report, Some(false));
    }

    #[test]
    fn health_interpretation_matches_mesos() {
        assert_eq!(health_failure(&Observation::Exited(0)), None);
        assert_eq!(
            health_failure(&Observation::Exited(1)).as_deref(),
            Some("Command exited with status 1")
        );
        for ok in [200, 204, 302, 399] {
            assert_eq!(health_failure(&Observation::Http(ok)), None, "{ok}");
        }
        for bad in [100, 199, 400, 404, 500] {
            assert!(health_failure(&Observation::Http(bad)).is_some(), "{bad}");
        }
        assert_eq!(health_failure(&Observation::Tcp(true)), None);
        assert!(health_failure(&Observation::Tcp(false)).is_some());
        assert_eq!(
            health_failure(&Observation::Error("timed out".into())).as_deref(),
            Some("timed out")
        );
    }

    #[test]
    fn check_status_is_reported_on_change_and_errors_give_the_empty_typed_message() {
        let mut c = CheckState::new(check_info::Type::Http);
        // An error before any result equals the initial empty message: nothing.
        assert_eq!(c.observe(&Observation::Error("refused".into())), None);
        let ok = c.observe(&Observation::Http(200)).expect("first result");
        assert_eq!(ok.r#type, Some(check_info::Type::Http as i32));
        assert_eq!(ok.http.and_then(|h| h.status_code), Some(200));
        assert_eq!(c.observe(&Observation::Http(200)), None);
        assert!(c.observe(&Observation::Http(503)).is_some());
        let empty = c
            .observe(&Observation::Error("timed out".into()))
            .expect("back to empty");
        assert_eq!(Some(empty), empty_check_status(check_info::Type::Http));
        let mut t = CheckState::new(check_info::Type::Tcp);
        assert_eq!(
            t.observe(&Observation::Tcp(false))
                .and_then(|s| s.tcp)
                .and_then(|t| t.succeeded),
            Some(false)
        );
        let mut k = CheckState::new(check_info::Type::Command);
        assert_eq!(
            k.observe(&Observation::Exited(3))
                .and_then(|s| s.command)
                .and_then(|c| c.exit_code),
            Some(3)
        );
        assert_eq!(empty_check_status(check_info::Type::Unknown), None);
    }

    #[test]
    fn derived_status_copies_the_last_one() {
        let mut last = updates::new_status(
            &v1::TaskId { value: "t".into() },
            v1::TaskState::TaskRunning,
            "e",
        );
        last.message = Some("m".into());
        last.check_status = empty_check_status(check_info::Type::Tcp);
        let s = derived_status(
            &last,
            Reason::TaskHealthCheckStatusUpdated,
            Some(false),
            None,
        );
        assert_eq!(
            (s.state(), s.message.as_deref(), s.healthy),
            (v1::TaskState::TaskRunning, Some("m"), Some(false))
        );
        assert_eq!(s.reason, Some(Reason::TaskHealthCheckStatusUpdated as i32));
        assert_eq!(s.check_status, last.check_status);
        assert_ne!(s.uuid, last.uuid);
        let c = derived_status(
            &s,
            Reason::TaskCheckStatusUpdated,
            None,
            check_status(check_info::Type::Tcp, &Observation::Tcp(true)),
        );
        assert_eq!(
            c.healthy,
            Some(false),
            "health is kept from the last status"
        );
        assert_eq!(
            c.check_status.and_then(|s| s.tcp).and_then(|t| t.succeeded),
            Some(true)
        );
    }
}
