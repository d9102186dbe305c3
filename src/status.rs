//! What the executor shows of itself to readers outside the owner loop.
//!
//! The owner publishes a [`StatusSnapshot`] after every input it handles
//! (through a `tokio::sync::watch` channel); the remote API reads it. This
//! module is a leaf: it depends on nothing else in the crate, so both sides
//! can use it without an import cycle.

/// The part of the executor's state others may read (the remote API's
/// status). Readers never touch the owner's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// The task, once launched.
    pub task_id: Option<String>,
    /// Its last state, e.g. `TASK_RUNNING`.
    pub state: Option<String>,
    /// Its root pid while it runs.
    pub pid: Option<i32>,
    /// Its health, once health checks report it.
    pub healthy: Option<bool>,
    /// When the task is to end on schedule (RFC 3339), and why
    /// (`certificate-expiry`, `max-lifetime`).
    pub scheduled_end: Option<(String, &'static str)>,
}
