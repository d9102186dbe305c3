//! What the owner loop must do after a step: the only place where the pure
//! core touches the world.

use std::{sync::Arc, time::Duration};

use nix::sys::signal::Signal;

use super::Outcome;
use crate::{
    hooks::HookEvent,
    proto::{executor::Call, v1},
    task::launch::LaunchSpec,
};

/// One effect of [`super::State::step`], carried out by the owner loop in
/// the order given.
#[derive(Debug)]
pub enum Effect {
    /// Answer the subscription loop's request for the SUBSCRIBE call.
    Subscribe {
        /// The loop's reply channel.
        reply: tokio::sync::oneshot::Sender<Option<Call>>,
        /// The call, or `None` to stop subscribing.
        call: Option<Call>,
    },
    /// Start a new update sender for this subscription and hand it `resend`
    /// (pending updates that the SUBSCRIBE in flight did not carry).
    StartSender {
        /// Updates to send first, oldest first.
        resend: Vec<v1::TaskStatus>,
    },
    /// Stop the current update sender (the stream ended, or we are done).
    StopSender,
    /// Hand an update (already recorded in the update log) to the sender,
    /// if there is one; otherwise it travels in the next SUBSCRIBE.
    SendUpdate(v1::TaskStatus),
    /// Run a hook chain off the loop; it reports `Input::HookDone`.
    RunHooks(HookCall),
    /// Abort the running before-start chain (the task was killed first).
    CancelBeforeStart,
    /// Start the task's root process; the loop steps again at once with the
    /// answer, `Input::TaskSpawned` or `Input::SpawnFailed`.
    Spawn {
        /// What to run.
        spec: Box<LaunchSpec>,
        /// Its output through the executor (pipes drained to the sandbox
        /// files, rotation, scraping); `None`: it inherits the sandbox files.
        output: Option<Box<crate::logs::OutputPlan>>,
    },
    /// The task has ended: drain its output pipes and the shipping queue
    /// for at most `within`, then report `Input::OutputDrained`.
    DrainOutput {
        /// `HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT`, or less when the agent's
        /// shutdown grace leaves less.
        within: std::time::Duration,
    },
    /// Start probing the task's armed health check and generic check.
    StartChecks {
        /// What to probe.
        armed: Vec<crate::health::Armed>,
        /// The task's environment and working directory, for COMMAND checks.
        spec: Box<LaunchSpec>,
    },
    /// Stop every probe of the task.
    StopChecks,
    /// Send `signal` to the task's process tree rooted at `root` (off the
    /// loop: walking `/proc` takes time).
    SignalTree {
        /// The root process.
        root: i32,
        /// SIGTERM or SIGKILL.
        signal: Signal,
        /// Spare the configured process names (SIGTERM only).
        spare: bool,
        /// Why, for the log line.
        why: &'static str,
        /// An update (already in the update log) to hand to the sender only
        /// once the signal is out: the terminal update follows the sweep of
        /// the task's leftovers.
        then: Option<Box<v1::TaskStatus>>,
    },
    /// The run is over.
    Exit(Outcome),
}

/// A hook chain to run, with the context the step knows of.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// The event.
    pub event: HookEvent,
    /// The task, when there is one.
    pub task: Option<Arc<v1::TaskInfo>>,
    /// The agent, as SUBSCRIBED described it.
    pub agent: Option<v1::AgentInfo>,
    /// The chain's whole budget, when bounded by a kill's grace.
    pub budget: Option<Duration>,
    /// The user the task runs as, if one is named.
    pub task_user: Option<String>,
}
