//! The executor's state, grouped by what each part belongs to: the agent
//! link, the task's life, and how the executor ends. Variants own their data,
//! so combinations that cannot happen cannot be written.

use std::{sync::Arc, time::SystemTime};

use tokio::time::Instant;

use super::effect::Effect;
use crate::{
    agent::updates::UpdateLog,
    config::Config,
    health,
    proto::v1::{self, TaskState},
    task::{
        launch::LaunchSpec,
        lifetime::Schedule,
        termination::{ExitOutcome, KillCause},
    },
};

/// The executor's whole state. Only [`State::step`] changes it.
#[derive(Debug)]
pub struct State {
    /// The configuration (read-only).
    pub(super) cfg: Arc<Config>,
    /// Whether any hook is configured: an empty chain completes without a
    /// round trip, so LAUNCH goes straight to the fork.
    pub(super) hooks_configured: bool,
    /// The connection to the agent.
    pub(super) link: Link,
    /// What the last SUBSCRIBED told us; kept across reconnects.
    pub(super) agent: Option<AgentSession>,
    /// Updates not yet acknowledged, and the tasks they belong to.
    pub(super) log: UpdateLog,
    /// The task's life.
    pub(super) task: Task,
    /// How the executor ends, once it does.
    pub(super) ending: Ending,
    /// A task that never launched but was killed (lost LAUNCH) is remembered
    /// so a second KILL does not produce a second terminal update.
    pub(super) killed_unknown: Vec<String>,
    /// The task's health check and generic check interpretation (the probes
    /// themselves run in the owner loop's tasks).
    pub(super) checks: health::Checks,
    /// Whether the task's output goes through the executor, and where the
    /// drain at its end stands.
    pub(super) output: Output,
    /// Wall-clock time at an instant of the step's clock: places a
    /// certificate's NotAfter on that clock (no clock is read in the step).
    pub(super) wall_anchor: (SystemTime, Instant),
    /// Random margins of scheduled ends; seeded, so tests are repeatable.
    pub(super) rng: fastrand::Rng,
    /// `HOOK_EXECUTOR_CERTIFICATE_FILE`'s text, read once at start (or why not).
    pub(super) certificate_file: Option<Result<String, String>>,
    /// The task's scheduled end (certificate expiry or maximum lifetime).
    pub(super) planned_end: Option<PlannedEnd>,
    /// Effects produced by the step in progress.
    pub(super) effects: Vec<Effect>,
}

/// The task's output, as far as the terminal update depends on it.
#[derive(Debug, Default)]
pub(super) enum Output {
    /// The task writes to the sandbox files itself (the default).
    #[default]
    Inherited,
    /// Its output goes through the executor's pipeline.
    Captured,
    /// The task ended; the terminal update (already in the update log) goes
    /// out once the pipeline has drained.
    Draining(Box<v1::TaskStatus>),
}

/// A scheduled end of the task, fixed at LAUNCH.
#[derive(Debug, Clone)]
pub(super) struct PlannedEnd {
    pub(super) schedule: Schedule,
    /// When the graceful kill starts.
    pub(super) at: Instant,
    /// The same instant on the wall clock, RFC 3339 (logs, status API).
    pub(super) wall: String,
}

/// The agent link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Link {
    /// Never subscribed yet; give up at `deadline`.
    Registering {
        /// When to give up.
        deadline: Instant,
        /// Uuids carried by the SUBSCRIBE in flight: they need no UPDATE.
        in_subscribe: Vec<Vec<u8>>,
    },
    /// SUBSCRIBED received on the current stream.
    Subscribed,
    /// Lost after being subscribed (checkpointing); give up at `deadline`,
    /// measured from the first disconnect.
    Reconnecting {
        /// When to give up.
        deadline: Instant,
        /// Uuids carried by the SUBSCRIBE in flight.
        in_subscribe: Vec<Vec<u8>>,
    },
    /// Given up; no more SUBSCRIBE.
    Gone,
}

/// What SUBSCRIBED said about the framework, the executor and the agent.
#[derive(Debug, Clone)]
pub(super) struct AgentSession {
    /// The framework (its capabilities decide TASK_KILLING).
    pub(super) framework: v1::FrameworkInfo,
    /// Our ExecutorInfo (Marathon's command lives there).
    pub(super) executor: v1::ExecutorInfo,
    /// The agent's id and hostname, for hooks.
    pub(super) agent: v1::AgentInfo,
}

/// The task's life.
#[derive(Debug)]
pub(super) enum Task {
    /// No task launched yet.
    Idle,
    /// LAUNCH received; before-start hooks run; no process yet.
    Launching {
        info: Arc<v1::TaskInfo>,
        spec: Box<LaunchSpec>,
    },
    /// The fork is under way (between `Effect::Spawn` and its answer).
    Spawning {
        info: Arc<v1::TaskInfo>,
        spec: Box<LaunchSpec>,
    },
    /// The root process runs.
    Running {
        info: Arc<v1::TaskInfo>,
        pid: i32,
        max_completion: Option<Instant>,
    },
    /// Being killed; SIGKILL at `deadline`.
    Killing(Box<Kill>),
    /// The root exited by itself; before-terminate hooks run before the
    /// leftovers are killed and the terminal update is sent.
    Draining {
        info: Arc<v1::TaskInfo>,
        pid: i32,
        outcome: ExitOutcome,
    },
    /// The terminal update was recorded.
    Terminal {
        task_id: v1::TaskId,
        state: TaskState,
    },
}

/// A kill in progress.
#[derive(Debug)]
pub(super) struct Kill {
    pub(super) info: Arc<v1::TaskInfo>,
    pub(super) pid: i32,
    pub(super) cause: KillCause,
    /// Why, for the terminal message (a failed hook).
    pub(super) detail: Option<String>,
    pub(super) started: Instant,
    /// SIGKILL at this instant.
    pub(super) deadline: Instant,
    pub(super) phase: KillPhase,
    /// The root's exit, if it came while before-terminate hooks ran.
    pub(super) exited: Option<ExitOutcome>,
}

/// Where a kill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KillPhase {
    /// before-terminate hooks run; SIGTERM at their end or at `until`.
    Hooks { until: Instant },
    /// SIGTERM sent.
    Terminated,
    /// SIGKILL sent.
    Escalated,
}

/// How the executor ends.
#[derive(Debug, Default)]
pub(super) struct Ending {
    /// Why it is ending, once it is.
    pub(super) cause: Option<EndCause>,
    /// The once-only before-terminate chain.
    pub(super) before_terminate: Stage,
    /// When to stop waiting for the last acknowledgements.
    pub(super) ack_deadline: Option<Instant>,
}

/// Why the executor is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndCause {
    /// SHUTDOWN from the agent: the container is destroyed at `deadline`.
    Shutdown { deadline: Instant },
    /// The agent is gone for good.
    AgentLost,
    /// SIGTERM/SIGINT to the executor.
    Signal,
}

/// The once-only before-terminate chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Stage {
    /// Not run yet.
    #[default]
    Pending,
    /// Running now.
    Running,
    /// Ran (or nothing to run).
    Done,
}

impl State {
    /// The state at start: registering with the agent until
    /// `HOOK_EXECUTOR_REGISTRATION_TIMEOUT` from `now`.
    pub(crate) fn new(cfg: Arc<Config>, hooks_configured: bool, now: Instant) -> Self {
        let deadline = crate::util::deadline_after(now, cfg.settings.registration_timeout);
        Self {
            cfg,
            hooks_configured,
            link: Link::Registering {
                deadline,
                in_subscribe: Vec::new(),
            },
            agent: None,
            log: UpdateLog::default(),
            task: Task::Idle,
            // With no hooks there is nothing to run before terminating.
            ending: Ending {
                before_terminate: if hooks_configured {
                    Stage::Pending
                } else {
                    Stage::Done
                },
                ..Ending::default()
            },
            killed_unknown: Vec::new(),
            checks: health::Checks::default(),
            output: Output::Inherited,
            wall_anchor: (SystemTime::now(), now),
            rng: fastrand::Rng::new(),
            certificate_file: None,
            planned_end: None,
            effects: Vec::new(),
        }
    }

    /// Gives the step the certificate file's text (or why it could not be
    /// read), read by the caller once at start.
    pub(crate) fn with_certificate_file(mut self, text: Option<Result<String, String>>) -> Self {
        self.certificate_file = text;
        self
    }

    /// Seeds the random margins (tests).
    #[cfg(test)]
    pub(crate) fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The wall-clock time at `now` of the step's clock.
    pub(super) fn wall_at(&self, now: Instant) -> SystemTime {
        let (wall, at) = self.wall_anchor;
        wall.checked_add(now.saturating_duration_since(at))
            .unwrap_or(wall)
    }

    /// The scheduled end, for the status snapshot: RFC 3339 time and reason.
    pub(crate) fn scheduled_end(&self) -> Option<(&str, &'static str)> {
        self.planned_end
            .as_ref()
            .filter(|_| self.task_info().is_some())
            .map(|p| (p.wall.as_str(), p.schedule.reason.as_str()))
    }

    /// The nearest deadline among the link, the kill, max completion and the
    /// acknowledgement wait.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let link = match self.link {
            Link::Registering { deadline, .. } | Link::Reconnecting { deadline, .. } => {
                Some(deadline)
            }
            Link::Subscribed | Link::Gone => None,
        };
        let task = match &self.task {
            Task::Running { max_completion, .. } => {
                let planned = self.planned_end.as_ref().map(|p| p.at);
                [*max_completion, planned].into_iter().flatten().min()
            }
            Task::Killing(k) => match k.phase {
                KillPhase::Hooks { until } => Some(until.min(k.deadline)),
                KillPhase::Terminated => Some(k.deadline),
                KillPhase::Escalated => None,
            },
            _ => None,
        };
        [link, task, self.ending.ack_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The task's part of the status snapshot: id, state, root pid.
    pub(crate) fn task_view(&self) -> (Option<&str>, Option<TaskState>, Option<i32>) {
        match &self.task {
            Task::Idle => (None, None, None),
            Task::Launching { info, .. } | Task::Spawning { info, .. } => (
                Some(&info.task_id.value),
                Some(TaskState::TaskStarting),
                None,
            ),
            Task::Running { info, pid, .. } => (
                Some(&info.task_id.value),
                Some(TaskState::TaskRunning),
                Some(*pid),
            ),
            Task::Killing(k) => (
                Some(&k.info.task_id.value),
                Some(TaskState::TaskKilling),
                k.exited.is_none().then_some(k.pid),
            ),
            // The root has exited; the terminal update follows the hooks.
            Task::Draining { info, .. } => (
                Some(&info.task_id.value),
                Some(TaskState::TaskRunning),
                None,
            ),
            Task::Terminal { task_id, state } => (Some(&task_id.value), Some(*state), None),
        }
    }

    /// The task's health as last reported.
    pub(crate) fn healthy(&self) -> Option<bool> {
        self.checks.healthy()
    }

    /// The task's info while it is the executor's.
    pub(super) fn task_info(&self) -> Option<&Arc<v1::TaskInfo>> {
        match &self.task {
            Task::Launching { info, .. }
            | Task::Spawning { info, .. }
            | Task::Running { info, .. }
            | Task::Draining { info, .. } => Some(info),
            Task::Killing(k) => Some(&k.info),
            Task::Idle | Task::Terminal { .. } => None,
        }
    }
}
