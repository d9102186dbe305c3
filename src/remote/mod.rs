//! The remote-execution API: HTTP/1.1 on a local Unix socket (and, only with a
//! bearer token, an optional TCP listener), in the shape of the Mesos "execute
//! module" API operators already script against, plus our own endpoints.
//!
//! # Layout
//! - [`socket`]: binding the socket file (stale/live detection, mode, long
//!   paths through `/proc/self/fd`), shared with `executorctl`.
//! - [`types`]: request and response bodies, shared with `executorctl`.
//! - [`exec`]: validation, the command registry, supervision, audit.
//! - this module: listeners, peer checks, the one routing `match` ([`route`])
//!   into a typed [`Route`], handlers, and the one mapping of [`ApiError`] to
//!   HTTP.
//!
//! # Security
//! The socket is mode 0600, so the filesystem lets only the executor's uid and
//! root connect; every connection's peer uid is also checked with
//! `SO_PEERCRED` against `HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS` (default: root
//! and the executor's uid), and refused peers get `403` and an audit line. If
//! the allow-list names any other uid, the socket is made 0666 so those users
//! can connect at all, and `SO_PEERCRED` alone decides. A refused peer's
//! requests are never read or logged. Every execute is one audit line.
//!
//! # Lifecycle
//! [`start`] runs before the executor subscribes; [`Server::stop`] after its
//! event loop ends and before the final sweep: it stops accepting, SIGKILLs
//! every running command's group, and removes the socket.

pub mod exec;
pub mod socket;
pub mod types;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, watch, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use self::{
    exec::{Limits, LineCursor, Registry, Snapshot},
    types::{ErrorResponse, ExecuteRequest, ExecuteResponse, ListResponse, OutputLine, StatusResponse, TaskQuery},
};
use crate::{
    config::{Config, Secret},
    status::StatusSnapshot,
    task::process::Reaper,
};

/// Every (method, path template) the server answers; the OpenAPI document is
/// checked against these and against [`route`] by a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/remote/status"),
    ("POST", "/remote/execute"),
    ("GET", "/remote/task"),
    ("POST", "/remote/task"),
    ("GET", "/remote/task/{pid}"),
    ("DELETE", "/remote/task/{pid}"),
    ("GET", "/remote/task/{pid}/output"),
];

/// Connections served at once per listener; more wait in the listen backlog.
/// Each listener has its own pool, so unauthenticated TCP clients can never
/// take the slots of the local socket.
const MAX_CONNECTIONS: usize = 512;
/// A request's headers must arrive within this (also bounds idle keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A request's body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// SSE comment sent while a command is silent, so idle proxies and clients
/// can tell a quiet command from a dead connection.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A Unix-socket peer, from `SO_PEERCRED`.
    Unix {
        /// Its effective uid at connect time.
        uid: u32,
        /// Its pid, if the kernel told us.
        pid: Option<i32>,
    },
    /// A TCP peer (authenticated by the bearer token).
    Tcp(SocketAddr),
}

impl Peer {
    /// The peer's uid, for Unix peers.
    #[must_use]
    pub fn uid(&self) -> Option<u32> {
        match self {
            Self::Unix { uid, .. } => Some(*uid),
            Self::Tcp(_) => None,
        }
    }

    /// The peer's pid, for Unix peers.
    #[must_use]
    pub fn pid(&self) -> Option<i32> {
        match self {
            Self::Unix { pid, .. } => *pid,
            Self::Tcp(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix { uid, pid: Some(pid) } => write!(f, "unix uid={uid} pid={pid}"),
            Self::Unix { uid, pid: None } => write!(f, "unix uid={uid}"),
            Self::Tcp(addr) => write!(f, "tcp {addr}"),
        }
    }
}

/// Everything a request can fail with; [`ApiError::status`] is the one
/// mapping to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a field of the wrong type, an empty or unstartable command.
    #[error("{0}")]
    BadRequest(String),
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
    #[error("request body not received within {}s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    /// The body is over `HOOK_EXECUTOR_REMOTE_MAX_BODY`.
    #[error("request body over {0} bytes (HOOK_EXECUTOR_REMOTE_MAX_BODY)")]
    TooLarge(usize),
    /// `HOOK_EXECUTOR_REMOTE_MAX_RUNNING` commands already run.
    #[error("{0} remote commands are already running (HOOK_EXECUTOR_REMOTE_MAX_RUNNING); try again later")]
    TooManyRunning(usize),
    /// The executor is exiting.
    #[error("the executor is shutting down")]
    ShuttingDown,
    /// The command could not be started for a reason that is not the caller's.
    #[error("cannot start the command: {0}")]
    Spawn(std::io::Error),
}

impl ApiError {
    /// The HTTP status for this error.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NoRoute(_) | Self::UnknownPid(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRunning(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Spawn(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn response(&self) -> Response<ApiBody> {
        let mut r = json(self.status(), &ErrorResponse { result: "error".into(), error: self.to_string() });
        match self {
            Self::MethodNotAllowed(allow) => {
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized => {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        // A refused peer must not keep holding one of the shared connection
        // slots: answer, then close.
        if matches!(self, Self::Unauthorized | Self::Forbidden(_)) {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// A request, routed.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `GET /remote/status`.
    Status,
    /// `POST /remote/execute`.
    Execute,
    /// `POST /remote/task` (pid in the body).
    CompatResult,
    /// `GET /remote/task`.
    List,
    /// `GET /remote/task/{pid}[?wait=SECS]`.
    Result {
        /// The command.
        pid: i32,
        /// How long to wait for it to finish.
        wait: Option<Duration>,
    },
    /// `DELETE /remote/task/{pid}`.
    Terminate {
        /// The command.
        pid: i32,
    },
    /// `GET /remote/task/{pid}/output` (SSE).
    Output {
        /// The command.
        pid: i32,
    },
}

fn pid_param(s: &str) -> Result<i32, ApiError> {
    match s.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(ApiError::BadRequest(format!("{s:?} is not a pid"))),
    }
}

fn wait_param(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(value) = query.unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("wait=")) else {
        return Ok(None);
    };
    let secs: f64 = value.parse().map_err(|_| ApiError::BadRequest(format!("wait={value:?} is not a number of seconds")))?;
    exec::seconds("wait", secs)
}

/// The one routing decision: (method, path) → [`Route`], or 404/405.
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.strip_prefix("/remote/").map(|p| p.split('/').collect()).unwrap_or_default();
    let m = method.as_str();
    match (m, segments.as_slice()) {
        ("GET", ["status"]) => Ok(Route::Status),
        (_, ["status"]) => Err(ApiError::MethodNotAllowed("GET")),
        ("POST", ["execute"]) => Ok(Route::Execute),
        (_, ["execute"]) => Err(ApiError::MethodNotAllowed("POST")),
        ("GET", ["task"]) => Ok(Route::List),
        ("POST", ["task"]) => Ok(Route::CompatResult),
        (_, ["task"]) => Err(ApiError::MethodNotAllowed("GET, POST")),
        ("GET", ["task", pid]) => Ok(Route::Result { pid: pid_param(pid)?, wait: wait_param(query)? }),
        ("DELETE", ["task", pid]) => Ok(Route::Terminate { pid: pid_param(pid)? }),
        (_, ["task", _]) => Err(ApiError::MethodNotAllowed("GET, DELETE")),
        ("GET", ["task", pid, "output"]) => Ok(Route::Output { pid: pid_param(pid)? }),
        (_, ["task", _, "output"]) => Err(ApiError::MethodNotAllowed("GET")),
        _ => Err(ApiError::NoRoute(format!("{m} {path}"))),
    }
}

/// Response bodies: a whole JSON document, or an SSE stream fed by a bounded
/// channel (a slow reader slows its producer; nothing piles up).
pub enum ApiBody {
    /// The whole body (taken when sent).
    Full(Option<Bytes>),
    /// Server-Sent Events.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ApiBody> {
    // Our own types always serialise; an empty object is the safe fallback.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(ApiBody::Full(Some(Bytes::from(bytes))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn snapshot_response(s: &Snapshot) -> Response<ApiBody> {
    match s {
        Snapshot::Finished(result) => json(StatusCode::OK, result),
        Snapshot::Running(running) => json(StatusCode::ACCEPTED, running),
    }
}

/// State shared by every connection.
struct Shared {
    registry: Arc<Registry>,
    status: watch::Receiver<StatusSnapshot>,
    /// The environment every command starts from (the task's rules).
    base_env: BTreeMap<String, String>,
    sandbox_dir: String,
    work_dir: String,
    allowed_uids: Vec<u32>,
    token: Option<Secret>,
    max_body: usize,
    shutdown: CancellationToken,
    /// Connection slots of the Unix socket.
    unix_connections: Arc<Semaphore>,
    /// Connection slots of the TCP listener.
    tcp_connections: Arc<Semaphore>,
}

impl Shared {
    fn status(&self) -> StatusResponse {
        let s = self.status.borrow().clone();
        let (running, retained) = self.registry.counts();
        StatusResponse {
            release: crate::RELEASE.to_owned(),
            result: "ok".to_owned(),
            sandbox_dir: self.sandbox_dir.clone(),
            status: "active".to_owned(),
            work_dir: self.work_dir.clone(),
            framework_id: s.framework_id,
            executor_id: s.executor_id,
            task_id: s.task_id,
            task_state: s.state,
            task_pid: s.pid,
            healthy: s.healthy,
            running_commands: running,
            retained_results: retained,
        }
    }

    fn check_token(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.token else { return Err(ApiError::Unauthorized) };
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(body: Incoming, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::TooLarge(limit)),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("reading the request body: {e}"))),
        Err(_) => Err(ApiError::BodyTimeout),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Authorisation for a connection, decided once at accept.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Unix peer on the allow-list.
    Allowed,
    /// Unix peer not on it.
    Refused(u32),
    /// TCP: every request needs the bearer token.
    Token,
}

async fn handle(shared: Arc<Shared>, peer: Arc<Peer>, access: Access, req: Request<Incoming>) -> Result<Response<ApiBody>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = match dispatch(&shared, &peer, access, req).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, %method, status = e.status().as_u16(), error = %e, "remote API request refused");
            e.response()
        }
    };
    if !matches!(access, Access::Refused(_)) {
        debug!(%peer, %method, %path, status = response.status().as_u16(), "remote API request");
    }
    Ok(response)
}

async fn dispatch(shared: &Shared, peer: &Peer, access: Access, req: Request<Incoming>) -> Result<Response<ApiBody>, ApiError> {
    match access {
        Access::Allowed => {}
        Access::Refused(uid) => return Err(ApiError::Forbidden(uid)),
        Access::Token => shared.check_token(&req)?,
    }
    let route = route(req.method(), req.uri().path(), req.uri().query())?;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let registry = &shared.registry;
    match route {
        Route::Status => Ok(json(StatusCode::OK, &shared.status())),
        Route::Execute => {
            let mut attempt = exec::Attempt::default();
            let started = execute(shared, req.into_body(), declared, &mut attempt).await;
            exec::audit(peer, &attempt, started.as_ref().map(|(pid, _)| *pid));
            let (pid, warnings) = started?;
            Ok(json(StatusCode::OK, &ExecuteResponse { result: "OK".to_owned(), pid, warnings }))
        }
        Route::CompatResult => {
            let body = read_body(req.into_body(), shared.max_body, declared).await?;
            let query: TaskQuery = parse_json(&body)?;
            let limit = match query.wait {
                Some(w) => Some(exec::seconds("\"wait\"", w)?.unwrap_or(Duration::ZERO)),
                None => None,
            };
            let cmd = registry.get(query.pid)?;
            Ok(snapshot_response(&cmd.wait(limit).await))
        }
        Route::List => Ok(json(StatusCode::OK, &ListResponse { pids: registry.pids() })),
        Route::Result { pid, wait } => {
            let cmd = registry.get(pid)?;
            let snapshot = match wait {
                Some(w) => cmd.wait(Some(w)).await,
                None => cmd.snapshot(),
            };
            Ok(snapshot_response(&snapshot))
        }
        Route::Terminate { pid } => {
            let cmd = registry.get(pid)?;
            if !cmd.finished() {
                info!(%peer, pid, "remote command terminate requested");
                cmd.request_terminate();
            }
            Ok(snapshot_response(&cmd.wait(None).await))
        }
        Route::Output { pid } => {
            let cmd = registry.get(pid)?;
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(stream_output(cmd, tx, shared.shutdown.clone()));
            let mut r = Response::new(ApiBody::Stream(rx));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(r)
        }
    }
}

/// `POST /remote/execute` up to the pid; fills `attempt` as far as the
/// request is understood, so refusals are audited with what was asked.
async fn execute(
    shared: &Shared,
    body: Incoming,
    declared: Option<u64>,
    attempt: &mut exec::Attempt,
) -> Result<(i32, Vec<String>), ApiError> {
    let body = read_body(body, shared.max_body, declared).await?;
    let request: ExecuteRequest = parse_json(&body)?;
    *attempt = exec::Attempt::of_request(&request);
    let mut env = shared.base_env.clone();
    if let Some(task_id) = shared.status.borrow().task_id.clone() {
        env.insert("MESOS_TASK_ID".to_owned(), task_id);
    }
    let plan = exec::plan(request, &env, shared.registry.cwd())?;
    *attempt = exec::Attempt::of_plan(&plan);
    let pid = shared.registry.execute(&plan)?;
    Ok((pid, plan.warnings))
}

fn sse_event(event: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Feeds one SSE response: the command's lines in arrival order (a replay
/// first, for a command already running or finished), then `exit`.
async fn stream_output(cmd: Arc<exec::RemoteCommand>, tx: mpsc::Sender<Bytes>, shutdown: CancellationToken) {
    let mut changes = cmd.changes();
    let mut cursor = LineCursor::default();
    loop {
        changes.borrow_and_update();
        let (lines, done) = cmd.follow(&mut cursor);
        for (stream, line) in lines {
            if tx.send(sse_event(stream.name(), &OutputLine { line })).await.is_err() {
                return;
            }
        }
        if done {
            if let Snapshot::Finished(result) = cmd.snapshot() {
                let _ = tx.send(sse_event("exit", &result)).await;
            }
            return;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(SSE_KEEPALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            () = shutdown.cancelled() => return,
        }
    }
}

fn serve_connection<S>(shared: &Arc<Shared>, io: S, peer: Peer, access: Access, permit: tokio::sync::OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let _permit = permit;
        let peer = Arc::new(peer);
        let svc_shared = Arc::clone(&shared);
        let svc_peer = Arc::clone(&peer);
        let service = service_fn(move |req| handle(Arc::clone(&svc_shared), Arc::clone(&svc_peer), access, req));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::select! {
            r = conn => if let Err(e) = r { debug!(peer = %peer, cause = %e, "remote API connection ended") },
            () = shared.shutdown.cancelled() => {}
        }
    });
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok(permit) = Arc::clone(&shared.unix_connections).acquire_owned().await else { return };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(cause = %e, "accept failed on the remote API socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (peer, access) = match stream.peer_cred() {
            Ok(cred) => {
                let peer = Peer::Unix { uid: cred.uid(), pid: cred.pid() };
                if shared.allowed_uids.contains(&cred.uid()) {
                    (peer, Access::Allowed)
                } else {
                    warn!(
                        target: "mesos_hook_executor::audit",
                        event = "refused",
                        peer_uid = cred.uid(),
                        peer_pid = cred.pid(),
                        allowed_uids = ?shared.allowed_uids,
                        "remote API connection refused: peer uid not allowed"
                    );
                    (peer, Access::Refused(cred.uid()))
                }
            }
            Err(e) => {
                warn!(cause = %e, "cannot read the peer's credentials; dropping the connection");
                continue;
            }
        };
        serve_connection(&shared, stream, peer, access, permit);
    }
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok(permit) = Arc::clone(&shared.tcp_connections).acquire_owned().await else { return };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(&shared, stream, Peer::Tcp(addr), Access::Token, permit);
            }
            Err(e) => {
                warn!(cause = %e, "accept failed on the remote API TCP listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The running API: stop it with [`Server::stop`].
pub struct Server {
    shared: Arc<Shared>,
    socket: Option<socket::BoundSocket>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("socket", &self.socket).finish_non_exhaustive()
    }
}

/// Starts the API as configured; `None` when disabled or when no listener
/// could be opened (logged: the task matters more than the API, so this
/// never stops the executor).
pub fn start(cfg: &Config, reaper: Reaper, base_env: &BTreeMap<String, String>, status: watch::Receiver<StatusSnapshot>) -> Option<Server> {
    let r = &cfg.settings.remote;
    if !r.enabled {
        info!("remote execution API disabled (HOOK_EXECUTOR_REMOTE_ENABLED=false)");
        return None;
    }
    let own = nix::unistd::geteuid().as_raw();
    let mut allowed_uids = r.allowed_uids.clone().unwrap_or_else(|| vec![0, own]);
    allowed_uids.sort_unstable();
    allowed_uids.dedup();
    // Mode 0600 admits exactly root and the owner; any other allowed uid
    // needs the filesystem to let it connect, and SO_PEERCRED then decides.
    let mode = if allowed_uids.iter().all(|u| *u == 0 || *u == own) { 0o600 } else { 0o666 };
    let limits = Limits {
        max_running: r.max_running,
        max_retained: r.max_retained,
        retention: r.retention,
        max_output: r.max_output,
        kill_grace: r.kill_grace,
    };
    let mut base_env = base_env.clone();
    base_env.insert("MESOS_SANDBOX".to_owned(), cfg.sandbox.display().to_string());
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::new(reaper, limits, cfg.sandbox.clone())),
        status,
        base_env,
        sandbox_dir: cfg.sandbox.display().to_string(),
        work_dir: cfg.directory.as_ref().unwrap_or(&cfg.sandbox).display().to_string(),
        allowed_uids,
        token: r.token.clone(),
        max_body: r.max_body,
        shutdown: CancellationToken::new(),
        unix_connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        tcp_connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    let mut tasks = Vec::new();
    let path: PathBuf = cfg.remote_socket();
    let socket = match socket::bind(&path, mode).and_then(|(l, bound)| {
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(l))
            .map(|l| (l, bound))
            .map_err(|cause| socket::BindError::Io { context: "registering", path: path.clone(), cause })
    }) {
        Ok((listener, bound)) => {
            tasks.push(tokio::spawn(accept_unix(listener, Arc::clone(&shared))));
            info!(socket = %path.display(), mode = format!("{mode:o}"), allowed_uids = ?shared.allowed_uids, "remote execution API listening");
            Some(bound)
        }
        Err(e) => {
            error!(cause = %e, "remote execution API not available on its Unix socket");
            None
        }
    };
    if let Some(addr) = r.tcp {
        match std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(l))) {
            Ok(listener) => {
                let local = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
                if !addr.ip().is_loopback() {
                    warn!(address = %local, "remote execution API TCP listener is not on loopback: anyone with the token on the network can run commands");
                }
                info!(address = %local, "remote execution API TCP listener open (bearer token required)");
                tasks.push(tokio::spawn(accept_tcp(listener, Arc::clone(&shared))));
            }
            Err(e) => error!(address = %addr, cause = %e, "remote execution API TCP listener not available"),
        }
    }
    if tasks.is_empty() {
        return None;
    }
    Some(Server { shared, socket, tasks })
}

impl Server {
    /// Stops accepting, ends open connections, removes the socket and kills
    /// every running command's process group.
    pub async fn stop(self) {
        // Removed while the listener still holds it (see `BoundSocket::remove`).
        if let Some(socket) = &self.socket {
            socket.remove();
        }
        self.shared.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
        self.shared.registry.shutdown();
        info!("remote execution API stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi() -> serde_json::Value {
        serde_json::from_str(include_str!("../../docs/remote-api.openapi.json")).expect("the OpenAPI document is JSON")
    }

    #[test]
    fn routes_and_their_405s() {
        assert_eq!(route(&Method::GET, "/remote/status", None).ok(), Some(Route::Status));
        assert_eq!(
            route(&Method::GET, "/remote/task/42", Some("wait=1.5")).ok(),
            Some(Route::Result { pid: 42, wait: Some(Duration::from_millis(1500)) })
        );
        assert!(matches!(route(&Method::PUT, "/remote/status", None), Err(ApiError::MethodNotAllowed("GET"))));
        assert!(matches!(route(&Method::GET, "/remote/nothing", None), Err(ApiError::NoRoute(_))));
        assert!(matches!(route(&Method::GET, "/remote/task/abc", None), Err(ApiError::BadRequest(_))));
        assert!(matches!(route(&Method::GET, "/remote/task/1", Some("wait=x")), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn openapi_document_matches_the_routes() {
        let doc = openapi();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in paths {
            let concrete = path.replace("{pid}", "42");
            for method in ["get", "post", "put", "delete", "patch"] {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let routed = route(&m, &concrete, None);
                if item.get(method).is_some() {
                    documented.push((method.to_uppercase(), path.clone()));
                    assert!(routed.is_ok(), "{method} {path} is documented but the server answers {routed:?}");
                } else {
                    assert!(
                        matches!(routed, Err(ApiError::MethodNotAllowed(_))),
                        "{method} {path} is not documented but routes to {routed:?}"
                    );
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_error_maps_to_its_status() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Unauthorized, 401),
            (ApiError::Forbidden(65534), 403),
            (ApiError::UnknownPid(1), 404),
            (ApiError::MethodNotAllowed("GET"), 405),
            (ApiError::TooLarge(10), 413),
            (ApiError::TooManyRunning(1), 429),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e}");
        }
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
    }
}
