//! The step's rules, checked without I/O: each test feeds inputs to a
//! [`State`] under a paused tokio clock and looks at the effects.

use std::{sync::Arc, time::Duration};

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Effect, Input, Outcome, State};
use crate::{
    config::Config,
    hooks::{ChainResult, HookError, HookEvent},
    proto::{
        executor::{event, Event},
        v1::{self, framework_info::capability, TaskState},
    },
    task::termination::ExitOutcome,
};

const PID: i32 = 4242;

/// A state plus every effect it produced, with a clock that only moves when
/// told to.
struct Harness {
    state: State,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(extra: &[(&str, &str)], hooks: bool) -> Self {
        let mut vars: Vec<(String, String)> = [
            ("MESOS_FRAMEWORK_ID", "fw-1"),
            ("MESOS_EXECUTOR_ID", "ex-1"),
            ("MESOS_SLAVE_PID", "slave(1)@127.0.0.1:5051"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "20secs"),
            ("MESOS_SANDBOX", "/tmp/sandbox"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let cfg = Config::from_vars(vars).expect("valid configuration");
        Self {
            state: State::new(Arc::new(cfg), hooks, Instant::now()),
            effects: Vec::new(),
        }
    }

    /// Steps at the current (paused) instant; returns this step's effects.
    fn input(&mut self, input: Input) -> Vec<&Effect> {
        let new = self.state.step(input, Instant::now());
        let from = self.effects.len();
        self.effects.extend(new);
        self.effects[from..].iter().collect()
    }

    fn event(&mut self, event: Event) -> Vec<&Effect> {
        self.input(Input::Agent(Box::new(event)))
    }

    /// Advances the clock by `by` and delivers the deadline, as the loop does.
    async fn advance(&mut self, by: Duration) -> Vec<&Effect> {
        tokio::time::advance(by).await;
        self.input(Input::Deadline)
    }

    fn subscribe(&mut self, killing: bool) {
        let (reply, _rx) = tokio::sync::oneshot::channel();
        self.input(Input::SubscribeRequest(reply));
        let mut framework = v1::FrameworkInfo {
            name: "fw".into(),
            ..Default::default()
        };
        if killing {
            framework.capabilities.push(v1::framework_info::Capability {
                r#type: Some(capability::Type::TaskKillingState as i32),
            });
        }
        let subscribed = event::Subscribed {
            executor_info: v1::ExecutorInfo {
                executor_id: v1::ExecutorId {
                    value: "ex-1".into(),
                },
                ..Default::default()
            },
            framework_info: framework,
            agent_info: v1::AgentInfo {
                hostname: "agent-1".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        self.event(Event {
            r#type: Some(event::Type::Subscribed as i32),
            subscribed: Some(subscribed),
            ..Default::default()
        });
    }

    /// The LAUNCH event alone.
    fn launch_event(&mut self, task: v1::TaskInfo) -> Vec<&Effect> {
        self.event(Event {
            r#type: Some(event::Type::Launch as i32),
            launch: Some(event::Launch { task }),
            ..Default::default()
        })
    }

    /// LAUNCH, the before-start chain (when hooks run) and the fork.
    fn launch(&mut self, task: v1::TaskInfo) {
        let effects = self.launch_event(task);
        let spawned = effects.iter().any(|e| matches!(e, Effect::Spawn { .. }));
        if !spawned {
            let effects = self.input(Input::HookDone {
                event: HookEvent::BeforeStart,
                result: ChainResult::Ok { env: Vec::new() },
            });
            assert!(
                effects.iter().any(|e| matches!(e, Effect::Spawn { .. })),
                "the before-start chain allowed the fork"
            );
        }
        self.input(Input::TaskSpawned(PID));
    }

    fn kill(&mut self, grace: Option<Duration>) -> Vec<&Effect> {
        let kill_policy = grace.map(|g| v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: i64::try_from(g.as_nanos()).expect("small"),
            }),
        });
        let kill = event::Kill {
            task_id: task_id(),
            kill_policy,
        };
        self.event(Event {
            r#type: Some(event::Type::Kill as i32),
            kill: Some(kill),
            ..Default::default()
        })
    }

    fn hook_done(&mut self, event: HookEvent) -> Vec<&Effect> {
        self.input(Input::HookDone {
            event,
            result: ChainResult::Ok { env: Vec::new() },
        })
    }

    /// Acknowledges every pending update.
    fn ack_all(&mut self) -> Vec<&Effect> {
        let pending: Vec<v1::TaskStatus> = self.state.log.pending().to_vec();
        let from = self.effects.len();
        for status in pending {
            let ack = event::Acknowledged {
                task_id: status.task_id.clone(),
                uuid: status.uuid.clone().unwrap_or_default(),
            };
            let new = self.state.step(
                Input::Agent(Box::new(Event {
                    r#type: Some(event::Type::Acknowledged as i32),
                    acknowledged: Some(ack),
                    ..Default::default()
                })),
                Instant::now(),
            );
            self.effects.extend(new);
        }
        self.effects[from..].iter().collect()
    }

    fn count_hooks(&self, event: HookEvent) -> usize {
        self.effects
            .iter()
            .filter(|e| matches!(e, Effect::RunHooks(c) if c.event == event))
            .count()
    }

    fn states(&self) -> Vec<TaskState> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendUpdate(s) => Some(s.state()),
                Effect::SignalTree { then: Some(s), .. } => Some(s.state()),
                _ => None,
            })
            .collect()
    }

    fn kill_deadline(&self) -> Option<Instant> {
        match &self.state.task {
            super::state::Task::Killing(k) => Some(k.deadline),
            _ => None,
        }
    }
}

fn task_id() -> v1::TaskId {
    v1::TaskId {
        value: "task-1".into(),
    }
}

fn task(grace: Option<Duration>) -> v1::TaskInfo {
    v1::TaskInfo {
        name: "t".into(),
        task_id: task_id(),
        command: Some(v1::CommandInfo {
            value: Some("sleep 100".into()),
            ..Default::default()
        }),
        kill_policy: grace.map(|g| v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: i64::try_from(g.as_nanos()).expect("small"),
            }),
        }),
        ..Default::default()
    }
}

fn signals(effects: &[&Effect]) -> Vec<Signal> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::SignalTree { signal, .. } = e {
                Some(*signal)
            } else {
                None
            }
        })
        .collect()
}

fn exit(effects: &[&Effect]) -> Option<Outcome> {
    effects.iter().find_map(|e| {
        if let Effect::Exit(o) = e {
            Some(o.clone())
        } else {
            None
        }
    })
}

fn subscribe_call(effects: &[&Effect]) -> Option<crate::proto::executor::Call> {
    effects.iter().find_map(|e| {
        if let Effect::Subscribe { call, .. } = e {
            call.clone()
        } else {
            None
        }
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn launch_without_hooks_forks_in_the_same_step() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    let effects = h.launch_event(task(None));
    assert!(
        matches!(effects.as_slice(), [Effect::SendUpdate(s), Effect::Spawn { .. }] if s.state() == TaskState::TaskStarting)
    );
    let effects = h.input(Input::TaskSpawned(PID));
    assert!(
        matches!(effects.first(), Some(Effect::SendUpdate(s)) if s.state() == TaskState::TaskRunning)
    );
    assert!(
        effects.iter().all(|e| !matches!(e, Effect::RunHooks(_))),
        "no chain round trip without hooks"
    );
}

#[tokio::test(start_paused = true)]
async fn a_repeated_kill_can_only_shorten_the_grace() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(Some(secs(30))));
    let start = Instant::now();
    h.kill(Some(secs(10)));
    assert_eq!(
        h.kill_deadline(),
        Some(start + secs(10)),
        "the KILL's policy overrides the task's"
    );
    tokio::time::advance(secs(2)).await;
    h.kill(Some(secs(20)));
    assert_eq!(
        h.kill_deadline(),
        Some(start + secs(10)),
        "a longer grace is ignored"
    );
    h.kill(None);
    assert_eq!(
        h.kill_deadline(),
        Some(start + secs(10)),
        "the task's 30 s does not lengthen it"
    );
    h.kill(Some(secs(5)));
    assert_eq!(
        h.kill_deadline(),
        Some(start + secs(5)),
        "measured from the first KILL"
    );
    h.kill(Some(secs(1)));
    assert_eq!(h.kill_deadline(), Some(Instant::now()), "never before now");
    let effects = h.advance(Duration::ZERO).await;
    assert_eq!(signals(&effects), vec![Signal::SIGKILL]);
    assert_eq!(
        signals(&h.effects.iter().collect::<Vec<_>>()),
        vec![Signal::SIGTERM, Signal::SIGKILL],
        "one SIGTERM, one SIGKILL"
    );
}

#[tokio::test(start_paused = true)]
async fn kill_sends_killing_only_with_the_capability_and_escalates_at_the_deadline() {
    let mut h = Harness::new(&[], false);
    h.subscribe(true);
    h.launch(task(None));
    let effects = h.kill(None);
    assert!(
        matches!(effects.first(), Some(Effect::SendUpdate(s)) if s.state() == TaskState::TaskKilling)
    );
    assert_eq!(signals(&effects), vec![Signal::SIGTERM]);
    assert!(
        h.advance(secs(2)).await.is_empty(),
        "nothing before the 3 s default grace"
    );
    let effects = h.advance(secs(1)).await;
    assert_eq!(signals(&effects), vec![Signal::SIGKILL]);
    let effects = h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 9,
        core_dumped: false,
    }));
    assert_eq!(
        signals(&effects),
        vec![Signal::SIGKILL],
        "leftovers are swept"
    );
    assert_eq!(
        h.states(),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
            TaskState::TaskKilled
        ]
    );

    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(None));
    h.kill(None);
    assert!(
        !h.states().contains(&TaskState::TaskKilling),
        "no TASK_KILLING without the capability"
    );
}

/// Runs `end` on a running task with hooks configured and checks that
/// before-terminate runs exactly once, before the first SIGTERM.
async fn before_terminate_once(end: impl FnOnce(&mut Harness)) -> Harness {
    let mut h = Harness::new(&[("MESOS_CHECKPOINT", "0")], true);
    h.subscribe(false);
    h.launch(task(Some(secs(10))));
    end(&mut h);
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    let first_term = h.effects.iter().position(|e| {
        matches!(
            e,
            Effect::SignalTree {
                signal: Signal::SIGTERM,
                ..
            }
        )
    });
    let hooks_at = h
        .effects
        .iter()
        .position(|e| matches!(e, Effect::RunHooks(c) if c.event == HookEvent::BeforeTerminate));
    assert!(first_term.is_none(), "no SIGTERM while the hooks run");
    assert!(hooks_at.is_some());
    // A second trigger of any kind does not run the chain again.
    h.kill(Some(secs(5)));
    h.input(Input::Signal("SIGTERM"));
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    let effects = h.hook_done(HookEvent::BeforeTerminate);
    assert_eq!(
        signals(&effects),
        vec![Signal::SIGTERM],
        "SIGTERM follows the hooks"
    );
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    h
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_on_kill() {
    let h = before_terminate_once(|h| {
        h.kill(None);
    })
    .await;
    assert_eq!(h.states().last(), Some(&TaskState::TaskKilled));
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_on_shutdown() {
    let mut h = before_terminate_once(|h| {
        h.event(Event {
            r#type: Some(event::Type::Shutdown as i32),
            ..Default::default()
        });
    })
    .await;
    assert_eq!(h.states().last(), Some(&TaskState::TaskKilled));
    let effects = h.ack_all();
    assert_eq!(exit(&effects), Some(Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_on_executor_sigterm() {
    let mut h = before_terminate_once(|h| {
        h.input(Input::Signal("SIGTERM"));
    })
    .await;
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_on_agent_loss() {
    let h = before_terminate_once(|h| {
        h.input(Input::Disconnected("connection reset".into()));
    })
    .await;
    assert!(h.effects.iter().any(|e| matches!(e, Effect::StopSender)));
    assert_eq!(h.states().last(), Some(&TaskState::TaskKilled));
    assert_eq!(
        exit(&h.effects.iter().collect::<Vec<_>>()),
        Some(Outcome::AgentLost),
        "no ACK can come: exit at once"
    );
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_when_the_task_exits_by_itself() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(task(None));
    let effects = h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    assert!(signals(&effects).is_empty());
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    assert_eq!(
        h.states().last(),
        Some(&TaskState::TaskRunning),
        "the terminal update waits for the hooks"
    );
    let effects = h.hook_done(HookEvent::BeforeTerminate);
    // The terminal update rides on the sweep of the leftovers: the loop
    // hands it to the sender only once the SIGKILL is out.
    assert!(
        matches!(effects.as_slice(), [Effect::SignalTree { signal: Signal::SIGKILL, then: Some(s), .. }] if s.state() == TaskState::TaskFinished),
        "leftovers are swept before the report: {effects:?}"
    );
    assert_eq!(h.states().last(), Some(&TaskState::TaskFinished));
    h.kill(None);
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn before_terminate_runs_once_without_a_task() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    let effects = h.event(Event {
        r#type: Some(event::Type::Shutdown as i32),
        ..Default::default()
    });
    assert!(
        matches!(effects.as_slice(), [Effect::RunHooks(c)] if c.event == HookEvent::BeforeTerminate && c.task.is_none())
    );
    let effects = h.hook_done(HookEvent::BeforeTerminate);
    assert_eq!(exit(&effects), Some(Outcome::Completed));
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_exits_during_the_hooks_is_reported_after_them() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(task(None));
    h.kill(None);
    let effects = h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    assert!(
        effects.is_empty(),
        "nothing is reported while before-terminate runs"
    );
    let effects = h.hook_done(HookEvent::BeforeTerminate);
    assert!(
        signals(&effects).iter().all(|s| *s == Signal::SIGKILL),
        "no SIGTERM to a task that is gone"
    );
    assert_eq!(h.states().last(), Some(&TaskState::TaskKilled));
}

#[tokio::test(start_paused = true)]
async fn hooks_that_outlive_their_budget_do_not_delay_the_sigterm() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(task(Some(secs(10))));
    h.kill(None);
    assert!(
        h.advance(secs(8)).await.is_empty(),
        "budget: all of the grace but one second"
    );
    let effects = h.advance(secs(1)).await;
    assert_eq!(signals(&effects), vec![Signal::SIGTERM]);
    let effects = h.advance(secs(1)).await;
    assert_eq!(signals(&effects), vec![Signal::SIGKILL]);
}

#[tokio::test(start_paused = true)]
async fn a_finished_task_ignores_everything_but_acknowledgements() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(None));
    h.input(Input::TaskExited(ExitOutcome::Exited(3)));
    assert_eq!(h.states().last(), Some(&TaskState::TaskFailed));
    let before = h.effects.len();
    h.kill(None);
    h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    h.input(Input::HealthProbe(crate::health::Observation::Http(500)));
    h.input(Input::CheckProbe(crate::health::Observation::Exited(1)));
    h.input(Input::HookDone {
        event: HookEvent::AfterHealthy,
        result: ChainResult::Ok { env: Vec::new() },
    });
    assert_eq!(
        h.effects.len(),
        before,
        "no update, signal or hook after the terminal update"
    );
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn no_acknowledgement_in_time_exits_unacknowledged() {
    let mut h = Harness::new(&[("HOOK_EXECUTOR_ACK_TIMEOUT", "10secs")], false);
    h.subscribe(false);
    h.launch(task(None));
    h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    assert!(exit(&h.advance(secs(9)).await).is_none());
    assert_eq!(
        exit(&h.advance(secs(1)).await),
        Some(Outcome::Unacknowledged)
    );
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_accepted_updates_are_enough_at_the_end_of_the_budget() {
    for accepted in [true, false] {
        let mut h = Harness::new(&[], false);
        h.subscribe(false);
        h.launch(task(None));
        h.event(Event {
            r#type: Some(event::Type::Shutdown as i32),
            ..Default::default()
        });
        h.input(Input::TaskExited(ExitOutcome::Signaled {
            signal: 15,
            core_dumped: false,
        }));
        if accepted {
            let uuids: Vec<Vec<u8>> = h
                .state
                .log
                .pending()
                .iter()
                .filter_map(|s| s.uuid.clone())
                .collect();
            for uuid in uuids {
                h.input(Input::UpdateAccepted(uuid));
            }
        }
        // 20 s shutdown grace: wait until 0.5 s before it.
        assert!(exit(&h.advance(secs(19)).await).is_none());
        let outcome = exit(&h.advance(Duration::from_millis(500)).await);
        let expected = if accepted {
            Outcome::Completed
        } else {
            Outcome::Unacknowledged
        };
        assert_eq!(outcome, Some(expected));
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_may_come_back_within_the_recovery_timeout() {
    let mut h = Harness::new(
        &[
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_RECOVERY_TIMEOUT", "15mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
        ],
        false,
    );
    h.subscribe(false);
    h.launch(task(None));
    h.input(Input::Disconnected("agent restarting".into()));
    assert!(
        signals(&h.advance(Duration::from_secs(14 * 60)).await).is_empty(),
        "the task keeps running"
    );
    // An update produced while the agent is away travels in the next SUBSCRIBE.
    h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    let (reply, _rx) = tokio::sync::oneshot::channel();
    let effects = h.input(Input::SubscribeRequest(reply));
    let call = subscribe_call(&effects).expect("a SUBSCRIBE call");
    let carried = call.subscribe.expect("subscribe").unacknowledged_updates;
    assert_eq!(
        carried.last().map(|u| u.status.state()),
        Some(TaskState::TaskFinished)
    );
    let before = h.effects.len();
    h.subscribe(false);
    let resent: usize = h.effects[before..]
        .iter()
        .map(|e| {
            if let Effect::StartSender { resend } = e {
                resend.len()
            } else {
                0
            }
        })
        .sum();
    assert_eq!(resent, 0, "what the SUBSCRIBE carried is not sent again");
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn past_the_recovery_timeout_the_task_is_killed_and_the_executor_exits() {
    let mut h = Harness::new(
        &[
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_RECOVERY_TIMEOUT", "1mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
        ],
        false,
    );
    h.subscribe(false);
    h.launch(task(None));
    h.input(Input::Disconnected("agent gone".into()));
    let effects = h.advance(secs(60)).await;
    assert_eq!(signals(&effects), vec![Signal::SIGTERM]);
    let (reply, _rx) = tokio::sync::oneshot::channel();
    let effects = h.input(Input::SubscribeRequest(reply));
    assert!(
        matches!(effects.as_slice(), [Effect::Subscribe { call: None, .. }]),
        "no more SUBSCRIBE once the agent is given up"
    );
    let effects = h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    assert_eq!(exit(&effects), Some(Outcome::AgentLost));
}

#[tokio::test(start_paused = true)]
async fn never_registering_gives_up_at_the_registration_timeout() {
    let mut h = Harness::new(&[("HOOK_EXECUTOR_REGISTRATION_TIMEOUT", "30secs")], false);
    assert!(exit(&h.advance(secs(29)).await).is_none());
    assert_eq!(exit(&h.advance(secs(1)).await), Some(Outcome::AgentLost));
}

#[tokio::test(start_paused = true)]
async fn a_kill_before_the_process_exists_reports_killed_and_never_forks() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch_event(task(None));
    let effects = h.kill(None);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::CancelBeforeStart)));
    assert!(signals(&effects).is_empty());
    assert_eq!(
        h.states(),
        vec![TaskState::TaskStarting, TaskState::TaskKilled]
    );
    let effects = h.hook_done(HookEvent::BeforeStart);
    assert!(
        effects.iter().all(|e| !matches!(e, Effect::Spawn { .. })),
        "a late before-start result does not fork"
    );
    assert_eq!(
        h.count_hooks(HookEvent::BeforeTerminate),
        1,
        "before-terminate still runs once, without a process"
    );
    h.hook_done(HookEvent::BeforeTerminate);
    assert_eq!(
        exit(&h.ack_all()),
        Some(Outcome::Completed),
        "the ended task stays ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_kill_for_a_task_never_seen_is_answered_once() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.kill(None);
    h.kill(None);
    assert_eq!(h.states(), vec![TaskState::TaskKilled]);
}

#[tokio::test(start_paused = true)]
async fn a_second_executor_signal_escalates_at_once() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(Some(secs(30))));
    assert_eq!(
        signals(&h.input(Input::Signal("SIGTERM"))),
        vec![Signal::SIGTERM]
    );
    assert_eq!(
        signals(&h.advance(Duration::ZERO).await),
        Vec::<Signal>::new()
    );
    h.input(Input::Signal("SIGINT"));
    assert_eq!(
        signals(&h.advance(Duration::ZERO).await),
        vec![Signal::SIGKILL]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_before_start_hook_fails_the_task_without_a_process() {
    // A policy refusal is REASON_TASK_UNAUTHORIZED, whatever the hook's name.
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch_event(task(None));
    let effects = h.input(Input::HookDone {
        event: HookEvent::BeforeStart,
        result: ChainResult::Failed {
            hook: "policy",
            reason: HookError::Policy(crate::hooks::policy::Violation::Privileged),
        },
    });
    assert!(effects.iter().all(|e| !matches!(e, Effect::Spawn { .. })));
    let failed = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), v1::task_status::Reason::TaskUnauthorized);
}

#[tokio::test(start_paused = true)]
async fn a_failed_after_start_hook_kills_the_task_as_failed() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(task(None));
    h.input(Input::HookDone {
        event: HookEvent::AfterStart,
        result: ChainResult::Failed {
            hook: "exec",
            reason: HookError::ScriptFailed {
                script: "10-check".into(),
                outcome: ExitOutcome::Exited(1),
                stderr: "no".into(),
            },
        },
    });
    h.hook_done(HookEvent::BeforeTerminate);
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let last = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(last.state(), TaskState::TaskFailed);
    assert!(
        last.message()
            .starts_with("after-start hook `exec` failed: 10-check exited with status 1: no"),
        "{}",
        last.message()
    );
}

#[tokio::test(start_paused = true)]
async fn max_completion_time_fails_the_task_without_grace() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    let mut t = task(Some(secs(30)));
    t.max_completion_time = Some(v1::DurationInfo {
        nanoseconds: 5_000_000_000,
    });
    h.launch(t);
    let effects = h.advance(secs(5)).await;
    assert_eq!(signals(&effects), vec![Signal::SIGTERM]);
    assert_eq!(h.kill_deadline(), Some(Instant::now()), "no grace");
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let last = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(last.state(), TaskState::TaskFailed);
    assert_eq!(
        last.reason(),
        v1::task_status::Reason::MaxCompletionTimeReached
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_grace_does_not_overflow_the_clock() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(None));
    h.kill(Some(Duration::from_nanos(
        u64::try_from(i64::MAX).expect("fits"),
    )));
    assert!(h
        .kill_deadline()
        .is_some_and(|d| d > Instant::now() + secs(86_400)));
}

fn with_health_check(mut t: v1::TaskInfo, failures: u32) -> v1::TaskInfo {
    t.health_check = Some(v1::HealthCheck {
        r#type: Some(v1::health_check::Type::Http as i32),
        http: Some(v1::health_check::HttpCheckInfo {
            port: 8080,
            path: Some("/health".into()),
            ..Default::default()
        }),
        consecutive_failures: Some(failures),
        grace_period_seconds: Some(0.0),
        ..Default::default()
    });
    t
}

#[tokio::test(start_paused = true)]
async fn health_failures_in_a_row_kill_the_task_and_its_end_says_unhealthy() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(with_health_check(task(Some(secs(10))), 2));
    assert!(h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::StartChecks { armed, .. } if armed.len() == 1)));
    // Healthy first: one update, and after-healthy runs (not after after-start).
    h.hook_done(HookEvent::AfterStart);
    assert_eq!(
        h.count_hooks(HookEvent::AfterHealthy),
        0,
        "a health checker runs: after-healthy waits for it"
    );
    h.input(Input::HealthProbe(crate::health::Observation::Http(200)));
    assert_eq!(h.count_hooks(HookEvent::AfterHealthy), 1);
    assert_eq!(h.state.healthy(), Some(true));
    h.input(Input::HealthProbe(crate::health::Observation::Http(200)));
    assert_eq!(
        h.count_hooks(HookEvent::AfterHealthy),
        1,
        "only the first healthy result"
    );
    // Two failures in a row: reported, then the graceful kill.
    let effects = h.input(Input::HealthProbe(crate::health::Observation::Http(500)));
    assert!(
        signals(&effects).is_empty() && !effects.iter().any(|e| matches!(e, Effect::RunHooks(_))),
        "one failure is reported only"
    );
    let effects = h.input(Input::HealthProbe(crate::health::Observation::Http(503)));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::StopChecks)),
        "no probe runs while killing"
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::RunHooks(c) if c.event == HookEvent::BeforeTerminate)));
    let before = h.effects.len();
    h.input(Input::HealthProbe(crate::health::Observation::Http(500)));
    assert_eq!(
        h.effects.len(),
        before,
        "results after the kill started are dropped"
    );
    h.hook_done(HookEvent::BeforeTerminate);
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let last = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(last.state(), TaskState::TaskKilled);
    assert_eq!(last.healthy, Some(false));
    let health_updates = h
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::SendUpdate(s) if s.reason() == v1::task_status::Reason::TaskHealthCheckStatusUpdated))
        .count();
    assert_eq!(
        health_updates, 3,
        "the first healthy result, then every counted failure (as Mesos)"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_health_check_after_healthy_follows_after_start() {
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    h.launch(task(None));
    assert!(
        !h.effects
            .iter()
            .any(|e| matches!(e, Effect::StartChecks { .. })),
        "nothing to probe"
    );
    h.hook_done(HookEvent::AfterStart);
    assert_eq!(h.count_hooks(HookEvent::AfterHealthy), 1);
}

#[tokio::test(start_paused = true)]
async fn a_kill_during_the_fork_reports_killed_and_kills_the_late_process() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch_event(task(None));
    let effects = h.kill(None);
    assert!(signals(&effects).is_empty(), "no process to signal yet");
    assert_eq!(
        h.states(),
        vec![TaskState::TaskStarting, TaskState::TaskKilled]
    );
    let effects = h.input(Input::TaskSpawned(PID));
    assert!(matches!(
        effects.as_slice(),
        [Effect::SignalTree {
            root: PID,
            signal: Signal::SIGKILL,
            ..
        }]
    ));
    let before = h.effects.len();
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 9,
        core_dumped: false,
    }));
    assert_eq!(h.effects.len(), before, "its exit reports nothing more");
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

/// With the task's output through the executor, the terminal update waits
/// for the pipeline's drain (after the sweep of the leftovers), and the
/// executor does not exit meanwhile, even once the agent is gone.
#[tokio::test(start_paused = true)]
async fn the_terminal_update_waits_for_the_output_drain() {
    let mut h = Harness::new(&[("HOOK_EXECUTOR_LOG_ROTATE_SIZE", "10MB")], false);
    h.subscribe(false);
    let effects = h.launch_event(task(None));
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::Spawn { output: Some(p), .. } if p.rotate && p.scrape.is_none())
        ),
        "rotation puts the output through the executor: {effects:?}"
    );
    h.input(Input::TaskSpawned(PID));
    let effects = h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    assert!(
        matches!(
            effects.as_slice(),
            [
                Effect::SignalTree {
                    signal: Signal::SIGKILL,
                    then: None,
                    ..
                },
                Effect::DrainOutput { within }
            ] if *within == Duration::from_secs(3)
        ),
        "sweep, then drain; the update is held: {effects:?}"
    );
    assert_eq!(h.states().last(), Some(&TaskState::TaskRunning));
    // Nothing ends the run while draining, not even a long wait.
    assert!(exit(&h.advance(Duration::from_secs(600)).await).is_none());
    let effects = h.input(Input::OutputDrained);
    assert!(
        matches!(effects.as_slice(), [Effect::SendUpdate(s)] if s.state() == TaskState::TaskFinished),
        "{effects:?}"
    );
    assert_eq!(exit(&h.ack_all()), Some(Outcome::Completed));
}

/// By default the task inherits the sandbox files and nothing waits for a drain.
#[tokio::test(start_paused = true)]
async fn by_default_the_task_output_is_not_captured() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    let effects = h.launch_event(task(None));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Spawn { output: None, .. })));
    h.input(Input::TaskSpawned(PID));
    let effects = h.input(Input::TaskExited(ExitOutcome::Exited(0)));
    assert!(effects
        .iter()
        .all(|e| !matches!(e, Effect::DrainOutput { .. })));
    assert_eq!(h.states().last(), Some(&TaskState::TaskFinished));
}

/// Under SHUTDOWN the drain fits inside the agent's grace: it never runs
/// past half of what is left before the acknowledgement deadline.
#[tokio::test(start_paused = true)]
async fn the_output_drain_fits_in_the_shutdown_grace() {
    let mut h = Harness::new(
        &[
            ("HOOK_EXECUTOR_LOG_ROTATE_SIZE", "1MB"),
            ("HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT", "30secs"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "4secs"),
        ],
        false,
    );
    h.subscribe(false);
    h.launch(task(None));
    h.event(Event {
        r#type: Some(event::Type::Shutdown as i32),
        ..Default::default()
    });
    let effects = h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let within = effects.iter().find_map(|e| match e {
        Effect::DrainOutput { within } => Some(*within),
        _ => None,
    });
    assert!(
        within.is_some_and(|w| w > Duration::ZERO && w < Duration::from_secs(2)),
        "{within:?}"
    );
}

/// A PEM certificate whose NotAfter is `valid_for` from now (whole seconds,
/// rounded down, as X.509 times are).
fn certificate(valid_for: Duration) -> String {
    let until = std::time::SystemTime::now() + valid_for;
    let unix = until
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut params =
        rcgen::CertificateParams::new(vec!["task.example".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).expect("fits"))
            .expect("timestamp");
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("certificate").pem()
}

/// The task with `validate-certificate: true` and, if given, `CERTIFICATE`.
fn certified_task(pem: Option<&str>) -> v1::TaskInfo {
    let mut t = task(Some(secs(10)));
    t.labels = Some(v1::Labels {
        labels: vec![v1::Label {
            key: "validate-certificate".into(),
            value: Some("true".into()),
        }],
    });
    if let (Some(pem), Some(command)) = (pem, t.command.as_mut()) {
        command.environment = Some(v1::Environment {
            variables: vec![v1::environment::Variable {
                name: "CERTIFICATE".into(),
                value: Some(pem.into()),
                ..Default::default()
            }],
        });
    }
    t
}

/// LAUNCH of a task that must be refused: TASK_STARTING, then TASK_FAILED
/// with a message containing `says`, and never a fork.
fn assert_refused(h: &mut Harness, t: v1::TaskInfo, says: &str) {
    let effects = h.launch_event(t);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Spawn { .. })),
        "no fork"
    );
    assert_eq!(
        h.states(),
        vec![TaskState::TaskStarting, TaskState::TaskFailed]
    );
    let last = h.state.log.pending().last().cloned().expect("an update");
    let message = last.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("Cannot launch task: problem with certificate: ")
            && message.contains(says),
        "{message}"
    );
    assert_eq!(last.reason(), v1::task_status::Reason::TaskInvalid);
    assert_eq!(h.count_hooks(HookEvent::BeforeStart), 0);
}

#[tokio::test(start_paused = true)]
async fn a_missing_expired_or_malformed_certificate_refuses_the_launch() {
    let cases = [
        (None, "missing certificate"),
        (
            Some("not a certificate".to_owned()),
            "no PEM certificate block",
        ),
        (
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()),
            "cannot parse the certificate",
        ),
    ];
    for (pem, says) in cases {
        let mut h = Harness::new(&[], true);
        h.subscribe(false);
        assert_refused(&mut h, certified_task(pem.as_deref()), says);
    }
    // Expired one second ago: the message names NotAfter.
    let mut params =
        rcgen::CertificateParams::new(vec!["task.example".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 2, 3);
    let key = rcgen::KeyPair::generate().expect("key");
    let expired = params.self_signed(&key).expect("certificate").pem();
    let mut h = Harness::new(&[], true);
    h.subscribe(false);
    assert_refused(
        &mut h,
        certified_task(Some(&expired)),
        "the certificate expired at 2001-02-03T00:00:00Z",
    );
    // The certificate file, when the task has none; its read error is named.
    let mut h = Harness::new(&[], true);
    h.state = std::mem::replace(&mut h.state, Harness::new(&[], true).state)
        .with_certificate_file(Some(Err("/x/cert.pem: No such file".into())));
    h.subscribe(false);
    assert_refused(&mut h, certified_task(None), "/x/cert.pem: No such file");
}

#[tokio::test(start_paused = true)]
async fn without_the_label_no_certificate_is_needed() {
    let mut h = Harness::new(&[], false);
    h.subscribe(false);
    h.launch(task(None));
    assert!(h.state.scheduled_end().is_none());
    assert_eq!(h.state.next_deadline(), None);
}

/// Runs a task until the first SIGTERM, advancing the clock by `step`;
/// returns how long that took.
async fn time_to_sigterm(h: &mut Harness, step: Duration, limit: Duration) -> Duration {
    let start = Instant::now();
    while Instant::now() - start <= limit {
        let effects = h.advance(step).await;
        if signals(&effects).contains(&Signal::SIGTERM)
            || h.count_hooks(HookEvent::BeforeTerminate) > 0
        {
            return Instant::now() - start;
        }
    }
    panic!("no kill within {limit:?}");
}

#[tokio::test(start_paused = true)]
async fn a_certificate_ends_the_task_at_not_after_after_the_hooks_and_as_killed() {
    let mut h = Harness::new(
        &[("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE", "0secs")],
        true,
    );
    h.subscribe(true);
    let pem = certificate(secs(100));
    h.launch(certified_task(Some(&pem)));
    let (at, why) = h.state.scheduled_end().expect("scheduled");
    assert_eq!(why, "certificate-expiry");
    assert!(at.ends_with('Z'), "{at}");
    // NotAfter is whole seconds: the end comes within (99 s, 100 s].
    let took = time_to_sigterm(&mut h, Duration::from_millis(250), secs(101)).await;
    assert!(took > secs(99) && took <= secs(100), "{took:?}");
    // Before-terminate hooks first, no SIGTERM while they run.
    assert_eq!(h.count_hooks(HookEvent::BeforeTerminate), 1);
    assert!(!signals(&h.effects.iter().collect::<Vec<_>>()).contains(&Signal::SIGTERM));
    assert!(h.states().contains(&TaskState::TaskKilling));
    let effects = h.hook_done(HookEvent::BeforeTerminate);
    assert_eq!(signals(&effects), vec![Signal::SIGTERM]);
    // The task's grace (10 s) applies.
    assert!(h.kill_deadline().is_some_and(|d| d > Instant::now()));
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let last = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(last.state(), TaskState::TaskKilled);
    let message = last.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("Certificate expired: valid until "),
        "{message}"
    );
    let labels = last.labels.expect("labels").labels;
    assert!(labels
        .iter()
        .any(|l| l.key == "scheduled_end" && l.value.as_deref() == Some("certificate-expiry")));
}

#[tokio::test(start_paused = true)]
async fn the_random_range_spreads_the_end_within_it() {
    let mut ends = Vec::new();
    for seed in [1, 2, 3, 4] {
        let mut h = Harness::new(
            &[("ALLEGRO_EXECUTOR_RANDOM_EXPIRATION_RANGE", "500secs")],
            false,
        );
        h.state = std::mem::replace(&mut h.state, Harness::new(&[], false).state).with_seed(seed);
        h.subscribe(false);
        h.launch(certified_task(Some(&certificate(secs(1000)))));
        let took = time_to_sigterm(&mut h, secs(1), secs(1001)).await;
        assert!(took >= secs(499) && took <= secs(1000), "{took:?}");
        ends.push(took);
    }
    ends.dedup();
    assert!(ends.len() > 1, "different seeds, different ends: {ends:?}");
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_kills_gracefully_with_its_own_message() {
    let mut h = Harness::new(&[("HOOK_EXECUTOR_MAX_LIFETIME", "60secs")], false);
    h.subscribe(false);
    h.launch(task(Some(secs(7))));
    assert_eq!(h.state.scheduled_end().map(|e| e.1), Some("max-lifetime"));
    let took = time_to_sigterm(&mut h, secs(1), secs(61)).await;
    assert_eq!(took, secs(60));
    assert_eq!(h.kill_deadline(), Some(Instant::now() + secs(7)));
    h.input(Input::TaskExited(ExitOutcome::Signaled {
        signal: 15,
        core_dumped: false,
    }));
    let last = h.state.log.pending().last().cloned().expect("an update");
    assert_eq!(last.state(), TaskState::TaskKilled);
    assert!(last
        .message
        .unwrap_or_default()
        .starts_with("Maximum lifetime reached (HOOK_EXECUTOR_MAX_LIFETIME)"));
}

#[tokio::test(start_paused = true)]
async fn the_earlier_of_certificate_and_lifetime_wins_and_the_spread_stays_inside() {
    let mut h = Harness::new(
        &[
            ("HOOK_EXECUTOR_MAX_LIFETIME", "60secs"),
            ("HOOK_EXECUTOR_MAX_LIFETIME_SPREAD", "30secs"),
            ("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE", "0secs"),
        ],
        false,
    );
    h.subscribe(false);
    h.launch(certified_task(Some(&certificate(secs(3600)))));
    assert_eq!(h.state.scheduled_end().map(|e| e.1), Some("max-lifetime"));
    let took = time_to_sigterm(&mut h, secs(1), secs(61)).await;
    assert!(took >= secs(30) && took <= secs(60), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_longest_lifetime_does_not_overflow_and_longer_is_refused() {
    let mut h = Harness::new(&[("HOOK_EXECUTOR_MAX_LIFETIME", "365days")], false);
    h.subscribe(false);
    h.launch(task(None));
    assert!(h
        .state
        .next_deadline()
        .is_some_and(|d| d > Instant::now() + secs(86_400)));
    for (name, value) in [
        ("HOOK_EXECUTOR_MAX_LIFETIME", "366days"),
        ("HOOK_EXECUTOR_MAX_LIFETIME", "0secs"),
        ("HOOK_EXECUTOR_MAX_LIFETIME_SPREAD", "100000weeks"),
        ("ALLEGRO_EXECUTOR_RANDOM_EXPIRATION_RANGE", "366days"),
    ] {
        let vars = [
            ("MESOS_FRAMEWORK_ID", "fw"),
            ("MESOS_EXECUTOR_ID", "ex"),
            ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
            (name, value),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let err = Config::from_vars(vars).expect_err("refused").to_string();
        assert!(
            err.contains(name) || err.contains("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE"),
            "{err}"
        );
    }
}
