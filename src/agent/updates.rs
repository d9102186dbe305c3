//! Status updates and the unacknowledged set.
//!
//! Every update gets a fresh v4 uuid (16 raw bytes; the agent rejects other
//! versions) and stays in [`UpdateLog`] until the agent ACKNOWLEDGES that uuid.
//! A TaskInfo stays "unacknowledged" until any of its updates is acknowledged.
//! On every (re)subscribe both lists travel inside SUBSCRIBE, so an update that
//! was sent while the agent was restarting is never lost; the agent dedups by
//! uuid, so resending is always safe.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto::{
    executor::{call, Call},
    v1::{self, task_status::Source, TaskState},
};

/// Builds a status with everything the agent requires: uuid, source,
/// executor id and timestamp (the agent refuses an update without them).
#[must_use]
pub fn new_status(task_id: &v1::TaskId, state: TaskState, executor_id: &str) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.clone(),
        state: state as i32,
        uuid: Some(uuid::Uuid::new_v4().into_bytes().to_vec()),
        source: Some(Source::Executor as i32),
        executor_id: Some(v1::ExecutorId {
            value: executor_id.to_owned(),
        }),
        timestamp: Some(now_secs()),
        ..Default::default()
    }
}

/// Seconds since the epoch, as `TaskStatus.timestamp` wants it.
#[must_use]
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Adds `key=value` labels to a status.
pub fn add_labels(status: &mut v1::TaskStatus, labels: impl IntoIterator<Item = (String, String)>) {
    let list = status.labels.get_or_insert_with(v1::Labels::default);
    list.labels
        .extend(labels.into_iter().map(|(key, value)| v1::Label {
            key,
            value: Some(value),
        }));
}

/// The uuid of a status, as text for logs.
#[must_use]
pub fn uuid_text(status: &v1::TaskStatus) -> String {
    status
        .uuid
        .as_deref()
        .and_then(|b| uuid::Uuid::from_slice(b).ok())
        .map_or_else(|| "<none>".to_owned(), |u| u.to_string())
}

/// What an ACKNOWLEDGED event referred to.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// One of our pending updates; it is now removed.
    Update(Box<v1::TaskStatus>),
    /// A uuid we do not hold (a duplicate ACK, or for an update already acked).
    Unknown,
}

/// Updates not yet acknowledged, in the order they were created, and the tasks
/// for which no update has been acknowledged yet.
#[derive(Debug, Default)]
pub struct UpdateLog {
    pending: Vec<v1::TaskStatus>,
    /// Uuids of pending updates the agent answered 202 (queued, not yet
    /// acknowledged): an exit must never leave a terminal update un-202'd.
    accepted: Vec<Vec<u8>>,
    tasks: Vec<(v1::TaskInfo, bool)>,
}

impl UpdateLog {
    /// Remembers a task received in LAUNCH.
    pub fn add_task(&mut self, task: v1::TaskInfo) {
        self.tasks.push((task, false));
    }

    /// Remembers an update before it is sent.
    pub fn record(&mut self, status: v1::TaskStatus) {
        self.pending.push(status);
    }

    /// Applies an ACKNOWLEDGED event.
    pub fn acknowledge(&mut self, task_id: &v1::TaskId, uuid: &[u8]) -> Acked {
        let Some(pos) = self
            .pending
            .iter()
            .position(|s| s.uuid.as_deref() == Some(uuid) && s.task_id == *task_id)
        else {
            return Acked::Unknown;
        };
        let status = self.pending.remove(pos);
        self.accepted.retain(|u| u.as_slice() != uuid);
        for (task, acked) in &mut self.tasks {
            if task.task_id == *task_id {
                *acked = true;
            }
        }
        Acked::Update(Box::new(status))
    }

    /// Records the agent's 202 for a pending update.
    pub fn mark_accepted(&mut self, uuid: &[u8]) {
        if self.is_pending(uuid) && !self.accepted.iter().any(|u| u.as_slice() == uuid) {
            self.accepted.push(uuid.to_vec());
        }
    }

    /// Pending updates the agent has not even answered 202 yet.
    #[must_use]
    pub fn unaccepted(&self) -> usize {
        self.pending
            .iter()
            .filter(|s| {
                !self
                    .accepted
                    .iter()
                    .any(|u| Some(u.as_slice()) == s.uuid.as_deref())
            })
            .count()
    }

    /// Whether `uuid` is still waiting for its acknowledgement.
    #[must_use]
    pub fn is_pending(&self, uuid: &[u8]) -> bool {
        self.pending.iter().any(|s| s.uuid.as_deref() == Some(uuid))
    }

    /// Pending updates, oldest first.
    #[must_use]
    pub fn pending(&self) -> &[v1::TaskStatus] {
        &self.pending
    }

    /// Whether a LAUNCH for `task_id` was ever received.
    #[must_use]
    pub fn knows_task(&self, task_id: &v1::TaskId) -> bool {
        self.tasks.iter().any(|(t, _)| t.task_id == *task_id)
    }

    /// Tasks with no acknowledged update yet.
    pub fn unacknowledged_tasks(&self) -> impl Iterator<Item = &v1::TaskInfo> {
        self.tasks
            .iter()
            .filter(|(_, acked)| !acked)
            .map(|(t, _)| t)
    }

    /// The SUBSCRIBE call carrying everything unacknowledged.
    #[must_use]
    pub fn subscribe_call(&self, framework_id: &str, executor_id: &str) -> Call {
        Call {
            framework_id: v1::FrameworkId {
                value: framework_id.to_owned(),
            },
            executor_id: v1::ExecutorId {
                value: executor_id.to_owned(),
            },
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                unacknowledged_tasks: self.unacknowledged_tasks().cloned().collect(),
                unacknowledged_updates: self
                    .pending
                    .iter()
                    .map(|s| call::Update { status: s.clone() })
                    .collect(),
            }),
            ..Default::default()
        }
    }
}

/// The UPDATE call for one status.
#[must_use]
pub fn update_call(framework_id: &str, executor_id: &str, status: v1::TaskStatus) -> Call {
    Call {
        framework_id: v1::FrameworkId {
            value: framework_id.to_owned(),
        },
        executor_id: v1::ExecutorId {
            value: executor_id.to_owned(),
        },
        r#type: Some(call::Type::Update as i32),
        update: Some(call::Update { status }),
        ..Default::default()
    }
}

/// A HEARTBEAT call (the executor library sends one every 30 minutes).
#[must_use]
pub fn heartbeat_call(framework_id: &str, executor_id: &str) -> Call {
    Call {
        framework_id: v1::FrameworkId {
            value: framework_id.to_owned(),
        },
        executor_id: v1::ExecutorId {
            value: executor_id.to_owned(),
        },
        r#type: Some(call::Type::Heartbeat as i32),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> v1::TaskId {
        v1::TaskId { value: s.into() }
    }

    #[test]
    fn statuses_carry_what_the_agent_validates() {
        let s = new_status(&tid("t"), TaskState::TaskStarting, "e");
        let uuid = uuid::Uuid::from_slice(s.uuid.as_deref().expect("uuid")).expect("16 bytes");
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(s.source(), Source::Executor);
        assert_eq!(s.executor_id.as_ref().map(|e| e.value.as_str()), Some("e"));
        assert!(s.timestamp.unwrap_or_default() > 1.6e9);
        assert_ne!(
            s.uuid,
            new_status(&tid("t"), TaskState::TaskStarting, "e").uuid
        );
    }

    #[test]
    fn ack_removes_exactly_the_matching_uuid() {
        let mut log = UpdateLog::default();
        log.add_task(v1::TaskInfo {
            task_id: tid("t"),
            ..Default::default()
        });
        let a = new_status(&tid("t"), TaskState::TaskStarting, "e");
        let b = new_status(&tid("t"), TaskState::TaskRunning, "e");
        log.record(a.clone());
        log.record(b.clone());
        assert_eq!(log.unacknowledged_tasks().count(), 1);
        assert_eq!(log.acknowledge(&tid("t"), &[0; 16]), Acked::Unknown);
        assert_eq!(
            log.acknowledge(&tid("other"), a.uuid.as_deref().unwrap_or_default()),
            Acked::Unknown
        );
        assert!(matches!(
            log.acknowledge(&tid("t"), a.uuid.as_deref().unwrap_or_default()),
            Acked::Update(_)
        ));
        assert_eq!(
            log.acknowledge(&tid("t"), a.uuid.as_deref().unwrap_or_default()),
            Acked::Unknown
        );
        assert_eq!(log.pending(), std::slice::from_ref(&b));
        log.mark_accepted(b.uuid.as_deref().unwrap_or_default());
        log.mark_accepted(&[1; 16]);
        assert_eq!(log.unaccepted(), 0, "only pending uuids count");
        assert_eq!(log.unacknowledged_tasks().count(), 0);
        let call = log.subscribe_call("f", "e");
        let sub = call.subscribe.expect("subscribe");
        assert!(sub.unacknowledged_tasks.is_empty());
        assert_eq!(sub.unacknowledged_updates[0].status.uuid, b.uuid);
    }
}
