//! The owner's inbox: everything that can change the executor's state.

use crate::{
    agent::{subscription::Report, AgentError},
    health,
    hooks::{ChainResult, HookEvent},
    proto::{
        executor::{Call, Event},
        v1::task_status::Reason,
    },
    task::termination::ExitOutcome,
};

/// One input to [`super::State::step`]. Most arrive through the inbox from
/// the tasks that do I/O; `TaskSpawned`, `SpawnFailed` and `Deadline` are made
/// by the owner loop itself.
#[derive(Debug)]
pub(crate) enum Input {
    /// The subscription loop is about to SUBSCRIBE and needs the call (carrying
    /// the unacknowledged tasks and updates); `None` stops the loop.
    SubscribeRequest(tokio::sync::oneshot::Sender<Option<Call>>),
    /// SUBSCRIBE was answered `200 OK`; events follow.
    StreamOpened,
    /// A SUBSCRIBE attempt failed.
    SubscribeFailed(AgentError),
    /// An event from the agent.
    Agent(Box<Event>),
    /// The event stream ended.
    Disconnected(String),
    /// The agent answered `202 Accepted` to the UPDATE with this uuid.
    UpdateAccepted(Vec<u8>),
    /// The agent refused an UPDATE (4xx); it stays unacknowledged.
    UpdateRefused {
        /// The update's uuid.
        uuid: Vec<u8>,
        /// What the agent said.
        error: String,
    },
    /// The task's root process started with this pid.
    TaskSpawned(i32),
    /// The task's root process could not be started.
    SpawnFailed {
        /// For the TASK_FAILED message.
        message: String,
        /// For the TASK_FAILED reason.
        reason: Option<Reason>,
    },
    /// The task's root process ended.
    TaskExited(ExitOutcome),
    /// The executor received SIGTERM or SIGINT.
    Signal(&'static str),
    /// A hook chain finished.
    HookDone {
        /// Which chain.
        event: HookEvent,
        /// How it ended.
        result: ChainResult,
    },
    /// A health check's raw result.
    HealthProbe(health::Observation),
    /// A generic check's raw result.
    CheckProbe(health::Observation),
    /// The task's output pipeline has drained (or ran out of time).
    OutputDrained,
    /// The owner's nearest deadline passed.
    Deadline,
}

impl From<Report> for Input {
    fn from(report: Report) -> Self {
        match report {
            Report::SubscribeRequest(reply) => Self::SubscribeRequest(reply),
            Report::StreamOpened => Self::StreamOpened,
            Report::SubscribeFailed(e) => Self::SubscribeFailed(e),
            Report::Event(e) => Self::Agent(e),
            Report::Disconnected(why) => Self::Disconnected(why),
            Report::UpdateAccepted(uuid) => Self::UpdateAccepted(uuid),
            Report::UpdateRefused { uuid, error } => Self::UpdateRefused { uuid, error },
        }
    }
}
