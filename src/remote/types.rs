//! Request and response bodies of the remote-execution API, shared by the
//! server and `executorctl` so both sides agree on every field name.
//!
//! The compatible shape (the Mesos "execute module" API operators already
//! script against) uses snake_case in `/remote/status` and camelCase in
//! command results; we keep both spellings as they are and add our fields in
//! the same style as their neighbours. Flags that are false are left out of
//! results, so a plain result is exactly `{"exitCode","signaled","stdout","stderr"}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /remote/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// `<version>-<git rev>`.
    pub release: String,
    /// Always `"ok"`.
    pub result: String,
    /// The sandbox as the task sees it (`MESOS_SANDBOX`).
    pub sandbox_dir: String,
    /// Always `"active"` while the API answers.
    pub status: String,
    /// Where remote commands run: the sandbox's host path (`MESOS_DIRECTORY`)
    /// when known, else the sandbox.
    pub work_dir: String,
    /// Our extra: `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// Our extra: `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// Our extra: the task, once launched.
    pub task_id: Option<String>,
    /// Our extra: the Marathon app (`MARATHON_APP_ID`), so `executorctl ls`
    /// can name it; absent from executors that predate it.
    #[serde(default)]
    pub marathon_app_id: Option<String>,
    /// Our extra: the task's last state (`TASK_RUNNING`, …).
    pub task_state: Option<String>,
    /// Our extra: the task's root pid while it runs.
    pub task_pid: Option<i32>,
    /// Our extra: the task's health, once health checks report it.
    pub healthy: Option<bool>,
    /// Our extra: when the task is to be killed on schedule (RFC 3339 UTC);
    /// left out when nothing is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_end: Option<String>,
    /// Our extra: why (`certificate-expiry` or `max-lifetime`); left out
    /// when nothing is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_end_reason: Option<String>,
    /// Our extra: remote commands running now.
    pub running_commands: usize,
    /// Our extra: finished results retained.
    pub retained_results: usize,
    /// Our extra: the task output pipeline's counters, when the task's
    /// output goes through the executor (docs/logging.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output: Option<crate::logs::OutputCountersSnapshot>,
}

/// One environment variable in Mesos `Environment.Variable` spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    /// Variable name.
    pub name: String,
    /// Its value (absent means empty, as in Mesos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Mesos `type` (`VALUE` or `SECRET`); only `VALUE` is honoured.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Mesos `Environment`: `{"variables": [{"name", "value"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The variables.
    #[serde(default)]
    pub variables: Vec<Variable>,
}

/// `POST /remote/execute`, in the execute-module spelling (`command`) or
/// Mesos `CommandInfo` spelling (`value`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The command: a shell line, or the program when `shell` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `CommandInfo.value`, same meaning as `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Run through `/bin/sh -c` (default true, as in `CommandInfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    /// With `shell: false`, the arguments after the program, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Seconds before the command's group gets SIGTERM (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Extra variables for the command (`EXECUTE_TIMEOUT_SEC` is read too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// Fields we do not know (other `CommandInfo` fields): ignored, and named
    /// in the response's `warnings` so a caller notices.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// `200` answer to `POST /remote/execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// Always `"OK"`.
    pub result: String,
    /// The command's pid (and process group id).
    pub pid: i32,
    /// What was ignored or adjusted (e.g. arguments with `shell: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /remote/task` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskQuery {
    /// The command's pid (checked as every route checks pids: a JSON
    /// integer that is not a positive `i32` is `400`).
    pub(crate) pid: i64,
    /// Ours: answer `202` after this many seconds if still running (default:
    /// wait until the command ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) wait: Option<f64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A finished command: `200` from `POST /remote/task`, `GET` and `DELETE
/// /remote/task/{pid}`, and the data of the SSE `exit` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// Exit status, or the number of the signal that ended it.
    pub exit_code: i32,
    /// Ended by a signal.
    pub signaled: bool,
    /// Captured standard output (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// The timeout fired (the signal is in `exitCode` if it ended the command).
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Terminated by `DELETE /remote/task/{pid}`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminated: bool,
    /// Standard output exceeded `HOOK_EXECUTOR_REMOTE_MAX_OUTPUT`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdout_truncated: bool,
    /// Standard error exceeded `HOOK_EXECUTOR_REMOTE_MAX_OUTPUT`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stderr_truncated: bool,
}

/// `202` from `GET /remote/task/{pid}` (and `POST /remote/task` with `wait`)
/// while the command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningResponse {
    /// Always true.
    pub running: bool,
    /// The command's pid.
    pub pid: i32,
    /// The command line, for display.
    pub command: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
    /// Output so far.
    pub stdout: String,
    /// Error output so far.
    pub stderr: String,
}

/// `GET /remote/task`: running commands and retained results, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Their pids.
    pub pids: Vec<i32>,
}

/// Every error: `{"result": "error", "error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Always `"error"`.
    pub result: String,
    /// What went wrong.
    pub error: String,
}

/// Data of the SSE `stdout` and `stderr` events: one line, without its newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// The line (UTF-8, invalid bytes replaced).
    pub line: String,
}
