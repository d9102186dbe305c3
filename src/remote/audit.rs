//! The audit line: one per execute request, accepted or refused, naming the
//! peer and what it asked to run (target `mesos_hook_executor::audit`).

use std::time::Duration;

use tracing::info;

use super::{error::ApiError, plan::Plan, server::Peer, types::ExecuteRequest};

/// What an execute request asked for, as far as it was understood; the
/// audit line's subject.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// `command` (or `value`).
    pub(crate) command: Option<String>,
    /// `arguments`.
    pub(crate) arguments: Vec<String>,
    /// `shell` as decided.
    pub(crate) shell: Option<bool>,
    /// The timeout as decided.
    pub(crate) timeout: Option<Duration>,
}

impl Attempt {
    /// What a parsed request asks for (before validation).
    #[must_use]
    pub(crate) fn of_request(req: &ExecuteRequest) -> Self {
        Self {
            command: req.command.clone().or_else(|| req.value.clone()),
            arguments: req.arguments.clone().unwrap_or_default(),
            shell: req.shell,
            timeout: None,
        }
    }

    /// What a validated plan runs.
    #[must_use]
    pub(crate) fn of_plan(plan: &Plan) -> Self {
        Self {
            command: Some(plan.command.clone()),
            arguments: plan.arguments.clone(),
            shell: Some(plan.shell),
            timeout: plan.timeout,
        }
    }
}

/// The one audit line of an execute request, accepted or refused.
pub(crate) fn audit(peer: &Peer, attempt: &Attempt, result: Result<i32, &ApiError>) {
    // Each fact once: the started command's pid is the `pid` field only.
    let outcome = match result {
        Ok(_) => "started".to_owned(),
        Err(e) => format!("refused ({}): {e}", e.status().as_u16()),
    };
    // Unix peers are named by uid and pid, TCP peers by address; an absent
    // field is left out of the line.
    info!(
        target: "mesos_hook_executor::audit",
        event = "execute",
        peer_uid = peer.uid(),
        peer_pid = peer.pid(),
        peer_addr = peer.addr().map(tracing::field::display),
        command = ?attempt.command,
        arguments = ?attempt.arguments,
        shell = ?attempt.shell,
        timeout = ?attempt.timeout,
        pid = result.as_ref().ok(),
        outcome = %outcome,
        "remote execute"
    );
}
