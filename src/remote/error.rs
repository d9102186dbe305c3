//! [`ApiError`]: everything a request can fail with, and the one mapping of
//! each kind to an HTTP status and a JSON error body.

use std::time::Duration;

use hyper::{
    header::{self, HeaderValue},
    Response, StatusCode,
};

use super::{
    body::{json, ApiBody},
    pool::LongFull,
    types::ErrorResponse,
};
use crate::task::process::SpawnError;

/// Everything a request can fail with; [`ApiError::status`] is the one
/// mapping to HTTP. Messages become the `error` field, which shows only the
/// top level, so they repeat their cause's text; the cause is also the
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A field is invalid: wrong value, empty command, not a pid, …
    #[error("{0}")]
    BadRequest(String),
    /// The body is not the JSON the endpoint takes.
    #[error("invalid JSON body: {0}")]
    Json(#[source] serde_json::Error),
    /// The body broke off while it was read.
    #[error("reading the request body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// TCP request without the right bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A Unix peer whose uid is not allowed.
    #[error("uid {0} is not allowed to use this socket (HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS)")]
    Forbidden(u32),
    /// No such endpoint.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// No command with this pid (never, or no longer retained).
    #[error("no command with pid {0}")]
    UnknownPid(i32),
    /// Known path, wrong method.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The body did not arrive in time.
    #[error("request body not received within {}s", .0.as_secs())]
    BodyTimeout(Duration),
    /// The body is over `HOOK_EXECUTOR_REMOTE_MAX_BODY`.
    #[error("request body over {0} bytes (HOOK_EXECUTOR_REMOTE_MAX_BODY)")]
    TooLarge(usize),
    /// `HOOK_EXECUTOR_REMOTE_MAX_RUNNING` commands already run and
    /// `HOOK_EXECUTOR_REMOTE_MAX_QUEUED` executes already wait.
    #[error("{running} remote commands are running and {queued} more are queued (HOOK_EXECUTOR_REMOTE_MAX_RUNNING, HOOK_EXECUTOR_REMOTE_MAX_QUEUED); try again later")]
    TooManyRunning {
        /// The running limit.
        running: usize,
        /// The queue's limit.
        queued: usize,
    },
    /// An execute waited in the queue for a running slot too long.
    #[error("no running slot became free within {}s (HOOK_EXECUTOR_REMOTE_QUEUE_TIMEOUT); try again later", .0.as_secs_f64())]
    QueueTimeout(Duration),
    /// The listener's connection slots are all in requests.
    #[error("too many connections: {0}; try again later")]
    Busy(&'static str),
    /// Too many long requests (waits, SSE) on this listener.
    #[error("{0}; try again later")]
    Waiting(#[from] LongFull),
    /// The executor is exiting.
    #[error("the executor is shutting down")]
    ShuttingDown,
    /// The program cannot be started for a reason that is the caller's (not
    /// found, not executable, a bad argument).
    #[error("cannot start {command:?}: {cause}")]
    Unstartable {
        /// The request's command.
        command: String,
        /// Why.
        #[source]
        cause: SpawnError,
    },
    /// The command could not be started for a reason that is not the caller's.
    #[error("cannot start the command: {0}")]
    Spawn(#[source] SpawnError),
}

impl ApiError {
    /// The HTTP status for this error.
    #[must_use]
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Json(_) | Self::Body(_) | Self::Unstartable { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NoRoute(_) | Self::UnknownPid(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRunning { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown | Self::QueueTimeout(_) | Self::Busy(_) | Self::Waiting(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Spawn(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` label of `remote_commands_rejected_total` (a small fixed set).
    #[must_use]
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            Self::TooManyRunning { .. } => "queue_full",
            Self::QueueTimeout(_) => "queue_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::Spawn(_) => "spawn_error",
            Self::Unauthorized | Self::Forbidden(_) => "unauthorized",
            _ => "invalid",
        }
    }

    /// The response: `{"result":"error","error":"…"}` with the status and
    /// the headers some statuses need.
    pub(crate) fn response(&self) -> Response<ApiBody> {
        let mut r = json(
            self.status(),
            &ErrorResponse {
                result: "error".into(),
                error: self.to_string(),
            },
        );
        match self {
            Self::MethodNotAllowed(allow) => {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        // A refused peer must not keep holding one of the shared connection
        // slots: answer, then close.
        if matches!(self, Self::Unauthorized | Self::Forbidden(_)) {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status() {
        let not_found = || SpawnError::Start(std::io::Error::from(std::io::ErrorKind::NotFound));
        let json_error = serde_json::from_str::<serde_json::Value>("{").expect_err("invalid");
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Json(json_error), 400),
            (
                ApiError::Unstartable {
                    command: "x".into(),
                    cause: not_found(),
                },
                400,
            ),
            (ApiError::Unauthorized, 401),
            (ApiError::Forbidden(65534), 403),
            (ApiError::UnknownPid(1), 404),
            (ApiError::MethodNotAllowed("GET"), 405),
            (ApiError::BodyTimeout(Duration::from_secs(10)), 408),
            (ApiError::TooLarge(10), 413),
            (
                ApiError::TooManyRunning {
                    running: 1,
                    queued: 0,
                },
                429,
            ),
            (ApiError::QueueTimeout(Duration::from_secs(30)), 503),
            (ApiError::Busy("x"), 503),
            (ApiError::Waiting(LongFull(1)), 503),
            (ApiError::Spawn(not_found()), 500),
            (ApiError::ShuttingDown, 503),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e}");
            assert_eq!(e.response().status().as_u16(), code, "{e}");
        }
        let e = ApiError::Unstartable {
            command: "x".into(),
            cause: not_found(),
        };
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }
}
