//! The executor's decisions as small pure functions, each matching the Mesos
//! command executor (`src/launcher/executor.cpp`) unless noted.

use std::time::Duration;

use crate::proto::v1::{self, task_status::Reason, TaskState};

/// Time Mesos keeps between the kill on SHUTDOWN and the agent's container
/// destroy: one reap interval plus one second, so the terminal update and its
/// acknowledgement still fit (`shutdown_grace − 2s`).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// Why the task is being killed; decides the terminal state and whether
/// `TASK_KILLING` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCause {
    /// A KILL event from the framework.
    Kill,
    /// A SHUTDOWN event from the agent.
    Shutdown,
    /// The agent connection was lost for good.
    AgentLost,
    /// The executor itself got SIGTERM or SIGINT.
    ExecutorSignal,
    /// `TaskInfo.max_completion_time` passed.
    MaxCompletionTime,
    /// The health check failed `consecutive_failures` times.
    HealthCheck,
    /// A hook failed after the task started.
    HookFailure,
    /// Its scheduled end came: the certificate is about to expire, or the
    /// maximum lifetime passed. Ends as TASK_KILLED, so that Marathon starts
    /// a replacement without counting a failure.
    Scheduled(super::lifetime::EndReason),
}

/// How the task's root process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by `signal`.
    Signaled {
        /// Signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// The process started but its program could not be executed: the
    /// `errno` of its `execve` (it then exited 127).
    NotExecuted {
        /// Why `execve` failed.
        errno: i32,
    },
}

impl ExitOutcome {
    /// Mesos' message for it: `Command exited with status 3`,
    /// `Command terminated with signal Terminated`.
    #[must_use]
    pub fn message(&self) -> String {
        match *self {
            Self::Exited(code) => format!("Command exited with status {code}"),
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                let core = if core_dumped { " (core dumped)" } else { "" };
                format!(
                    "Command terminated with signal {}{core}",
                    signal_description(signal)
                )
            }
            Self::NotExecuted { errno } => {
                let hint = if errno == libc::ENOENT {
                    " (the program or its ELF interpreter is missing)"
                } else {
                    ""
                };
                format!(
                    "Command could not be executed: {}{hint}",
                    std::io::Error::from_raw_os_error(errno)
                )
            }
        }
    }

    /// Structured labels carrying the same facts for machines.
    #[must_use]
    pub fn labels(&self) -> Vec<(String, String)> {
        match *self {
            Self::Exited(code) => vec![("exit_code".into(), code.to_string())],
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                let mut l = vec![
                    ("signal".into(), signal.to_string()),
                    ("signal_name".into(), signal_name(signal)),
                ];
                if core_dumped {
                    l.push(("core_dumped".into(), "true".into()));
                }
                l
            }
            Self::NotExecuted { errno } => vec![("exec_errno".into(), errno.to_string())],
        }
    }
}

/// `strsignal()`-style text for a signal, as Mesos puts in its messages.
#[must_use]
pub fn signal_description(signal: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string,
    // valid until the next call on this thread; we copy it at once.
    let ptr = unsafe { libc::strsignal(signal) };
    if ptr.is_null() {
        return format!("Unknown signal {signal}");
    }
    // SAFETY: non-null, NUL-terminated per strsignal's contract.
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// `SIGTERM`-style name of a signal.
#[must_use]
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("SIG{signal}"), |s| s.as_str().to_owned())
}

/// The grace period of a kill: the KILL event's policy, else the task's, else
/// the configured default (3 s, as Mesos).
#[must_use]
pub fn kill_grace(
    kill_override: Option<&v1::KillPolicy>,
    task_policy: Option<&v1::KillPolicy>,
    default: Duration,
) -> Duration {
    kill_override
        .and_then(policy_grace)
        .or_else(|| task_policy.and_then(policy_grace))
        .unwrap_or(default)
}

fn policy_grace(policy: &v1::KillPolicy) -> Option<Duration> {
    let nanos = policy.grace_period.as_ref()?.nanoseconds;
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

/// The grace on SHUTDOWN: what the task asks for, but never past the agent's
/// shutdown grace minus [`SHUTDOWN_MARGIN`], after which the container is
/// destroyed anyway.
#[must_use]
pub fn shutdown_grace(task_grace: Duration, shutdown_grace_period: Duration) -> Duration {
    task_grace.min(shutdown_grace_period.saturating_sub(SHUTDOWN_MARGIN))
}

/// A point in time that can be moved forward without panicking.
pub trait CheckedAdd: Ord + Copy {
    /// `self + d`, `None` when that does not fit.
    fn checked_add(self, d: Duration) -> Option<Self>;
}

impl CheckedAdd for tokio::time::Instant {
    fn checked_add(self, d: Duration) -> Option<Self> {
        tokio::time::Instant::checked_add(&self, d)
    }
}

impl CheckedAdd for Duration {
    fn checked_add(self, d: Duration) -> Option<Self> {
        Duration::checked_add(self, d)
    }
}

/// A repeated kill may only bring the SIGKILL deadline forward: returns the new
/// deadline if `started + grace` is earlier than `current` (a grace too large
/// for the clock never is).
#[must_use]
pub fn shortened_deadline<T: CheckedAdd>(started: T, current: T, grace: Duration) -> Option<T> {
    let proposed = started.checked_add(grace)?;
    (proposed < current).then_some(proposed)
}

/// Whether to send `TASK_KILLING` before signalling: only if the framework
/// declared `TASK_KILLING_STATE`, and never for a max-completion kill.
#[must_use]
pub fn send_killing(framework: Option<&v1::FrameworkInfo>, cause: KillCause) -> bool {
    if cause == KillCause::MaxCompletionTime {
        return false;
    }
    framework.is_some_and(|f| {
        f.capabilities
            .iter()
            .any(|c| c.r#type() == v1::framework_info::capability::Type::TaskKillingState)
    })
}

/// The terminal update for a task whose root process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminal {
    /// The terminal state.
    pub state: TaskState,
    /// The message (Mesos wording).
    pub message: String,
    /// The reason, where Mesos sets one.
    pub reason: Option<Reason>,
    /// `healthy = false` when the health check caused the kill.
    pub unhealthy: bool,
}

/// Decides the terminal state from the exit and the kill cause, if any.
#[must_use]
pub fn terminal(outcome: ExitOutcome, cause: Option<KillCause>) -> Terminal {
    let message = outcome.message();
    match cause {
        Some(KillCause::MaxCompletionTime) => Terminal {
            state: TaskState::TaskFailed,
            message: format!("{message} (max completion time reached)"),
            reason: Some(Reason::MaxCompletionTimeReached),
            unhealthy: false,
        },
        Some(KillCause::HookFailure) => Terminal {
            state: TaskState::TaskFailed,
            message,
            reason: None,
            unhealthy: false,
        },
        Some(cause) => Terminal {
            state: TaskState::TaskKilled,
            message,
            reason: None,
            unhealthy: cause == KillCause::HealthCheck,
        },
        None if outcome == ExitOutcome::Exited(0) => Terminal {
            state: TaskState::TaskFinished,
            message,
            reason: None,
            unhealthy: false,
        },
        None => Terminal {
            state: TaskState::TaskFailed,
            message,
            reason: None,
            unhealthy: false,
        },
    }
}

/// Whether `state` is terminal for the agent (`protobuf::isTerminalState`).
#[must_use]
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{framework_info::Capability, DurationInfo, FrameworkInfo, KillPolicy};

    fn policy(secs: i64) -> KillPolicy {
        KillPolicy {
            grace_period: Some(DurationInfo {
                nanoseconds: secs * 1_000_000_000,
            }),
        }
    }

    #[test]
    fn grace_comes_from_kill_then_task_then_default() {
        let d = Duration::from_secs(3);
        assert_eq!(kill_grace(None, None, d), d);
        assert_eq!(
            kill_grace(None, Some(&policy(10)), d),
            Duration::from_secs(10)
        );
        assert_eq!(
            kill_grace(Some(&policy(1)), Some(&policy(10)), d),
            Duration::from_secs(1)
        );
        assert_eq!(
            kill_grace(Some(&KillPolicy::default()), Some(&policy(10)), d),
            Duration::from_secs(10)
        );
        assert_eq!(kill_grace(Some(&policy(-5)), None, d), Duration::ZERO);
    }

    #[test]
    fn shutdown_grace_fits_inside_the_agent_budget() {
        assert_eq!(
            shutdown_grace(Duration::from_secs(3), Duration::from_secs(5)),
            Duration::from_secs(3)
        );
        assert_eq!(
            shutdown_grace(Duration::from_secs(30), Duration::from_secs(5)),
            Duration::from_secs(3)
        );
        assert_eq!(
            shutdown_grace(Duration::from_secs(1), Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            shutdown_grace(Duration::from_secs(3), Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn repeated_kill_only_shortens() {
        let started = Duration::from_secs(100);
        let current = started + Duration::from_secs(10);
        assert_eq!(
            shortened_deadline(started, current, Duration::from_secs(2)),
            Some(started + Duration::from_secs(2))
        );
        assert_eq!(
            shortened_deadline(started, current, Duration::from_secs(10)),
            None
        );
        assert_eq!(
            shortened_deadline(started, current, Duration::from_secs(20)),
            None
        );
        assert_eq!(shortened_deadline(started, current, Duration::MAX), None);
        let now = tokio::time::Instant::now();
        assert_eq!(shortened_deadline(now, now, Duration::MAX), None);
    }

    #[test]
    fn killing_state_needs_the_capability() {
        let mut fw = FrameworkInfo::default();
        assert!(!send_killing(Some(&fw), KillCause::Kill));
        fw.capabilities.push(Capability {
            r#type: Some(v1::framework_info::capability::Type::TaskKillingState as i32),
        });
        assert!(send_killing(Some(&fw), KillCause::Kill));
        assert!(send_killing(Some(&fw), KillCause::Shutdown));
        assert!(!send_killing(Some(&fw), KillCause::MaxCompletionTime));
        assert!(!send_killing(None, KillCause::Kill));
    }

    #[test]
    fn exit_maps_to_terminal_state() {
        let t = terminal(ExitOutcome::Exited(0), None);
        assert_eq!(
            (t.state, t.message.as_str()),
            (TaskState::TaskFinished, "Command exited with status 0")
        );
        let t = terminal(ExitOutcome::Exited(3), None);
        assert_eq!(
            (t.state, t.message.as_str()),
            (TaskState::TaskFailed, "Command exited with status 3")
        );
        let t = terminal(
            ExitOutcome::Signaled {
                signal: 15,
                core_dumped: false,
            },
            None,
        );
        assert_eq!(
            (t.state, t.message.as_str()),
            (
                TaskState::TaskFailed,
                "Command terminated with signal Terminated"
            )
        );
        let t = terminal(ExitOutcome::Exited(0), Some(KillCause::Kill));
        assert_eq!(t.state, TaskState::TaskKilled);
        let t = terminal(
            ExitOutcome::Signaled {
                signal: 9,
                core_dumped: false,
            },
            Some(KillCause::HealthCheck),
        );
        assert_eq!((t.state, t.unhealthy), (TaskState::TaskKilled, true));
        let t = terminal(
            ExitOutcome::Signaled {
                signal: 9,
                core_dumped: false,
            },
            Some(KillCause::MaxCompletionTime),
        );
        assert_eq!(
            (t.state, t.reason),
            (
                TaskState::TaskFailed,
                Some(Reason::MaxCompletionTimeReached)
            )
        );
        assert_eq!(
            ExitOutcome::Signaled {
                signal: 11,
                core_dumped: true
            }
            .message(),
            "Command terminated with signal Segmentation fault (core dumped)"
        );
        assert_eq!(
            ExitOutcome::Signaled {
                signal: 9,
                core_dumped: false
            }
            .labels(),
            vec![
                ("signal".to_owned(), "9".to_owned()),
                ("signal_name".to_owned(), "SIGKILL".to_owned())
            ]
        );
    }
}
