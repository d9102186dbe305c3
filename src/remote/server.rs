//! Serving the API: the Unix socket and the optional TCP listener, a pool of
//! connection slots per listener ([`super::pool`]), the peer check at accept
//! (`SO_PEERCRED` against the allowed uids: a refused peer is answered `403`
//! as soon as its request head arrives and holds no slot; the bearer token
//! on TCP), idle and first-request
//! timeouts, and [`start`] and [`Server::stop`]. Limits: docs/remote-limits.md.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::{body::Incoming, header, service::service_fn, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{watch, Semaphore},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{
    error::ApiError,
    handlers::handle,
    pool::{Pool, PoolLimits, Refusal, Slot},
    registry::{Limits, Registry},
    socket,
    types::ErrorResponse,
};
use crate::{
    config::{Config, Secret},
    status::StatusSnapshot,
    task::process::Reaper,
};

/// The Unix socket's slots: its peers are allowed uids (refused ones never
/// get a slot), so no per-peer cap.
const UNIX_POOL: PoolLimits = PoolLimits {
    max: 512,
    per_peer: usize::MAX,
    max_long: 512,
};
/// The TCP listener's own slots (so its clients can never take the Unix
/// socket's), with a cap per peer address.
const TCP_POOL: PoolLimits = PoolLimits {
    max: 128,
    per_peer: 32,
    max_long: 128,
};
/// A connection without a request in progress is closed after this (headers
/// that trickle in count as idle too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A TCP connection is closed if no request with the token arrived within
/// this of its opening (or of its last answer, until one did).
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection looks at its idle deadline.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// hyper's read buffer per connection (headers must fit).
const MAX_BUF: usize = 16 * 1024;
/// Refused or turned-away connections being answered at once (each for up
/// to [`LINGER`]: its request head, the answer, the rest of its request).
const MAX_ANSWERING: usize = 64;
/// How long a refused connection is kept to read its request and answer it.
const LINGER: Duration = Duration::from_secs(1);

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
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
    pub(crate) fn uid(&self) -> Option<u32> {
        match self {
            Self::Unix { uid, .. } => Some(*uid),
            Self::Tcp(_) => None,
        }
    }

    /// The peer's pid, for Unix peers.
    #[must_use]
    pub(crate) fn pid(&self) -> Option<i32> {
        match self {
            Self::Unix { pid, .. } => *pid,
            Self::Tcp(_) => None,
        }
    }

    /// The peer's address, for TCP peers.
    #[must_use]
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Unix { .. } => None,
            Self::Tcp(addr) => Some(*addr),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "unix uid={uid} pid={pid}"),
            Self::Unix { uid, pid: None } => write!(f, "unix uid={uid}"),
            Self::Tcp(addr) => write!(f, "tcp {addr}"),
        }
    }
}

/// Authorisation for a served connection, decided once at accept (a Unix
/// peer not on the allow-list is answered `403` at accept and never served).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// Unix peer on the allow-list.
    Allowed,
    /// TCP: every request needs the bearer token.
    Token,
}

/// State shared by every connection.
pub(crate) struct Shared {
    /// Running commands and retained results.
    pub(crate) registry: Arc<Registry>,
    /// What the executor's owner publishes for `/remote/status`.
    pub(crate) status: watch::Receiver<StatusSnapshot>,
    /// The environment every command starts from (the task's rules).
    pub(crate) base_env: BTreeMap<String, String>,
    /// `sandbox_dir` of `/remote/status`.
    pub(crate) sandbox_dir: String,
    /// `work_dir` of `/remote/status`.
    pub(crate) work_dir: String,
    /// `marathon_app_id` of `/remote/status`: `MARATHON_APP_ID`, if set.
    pub(crate) marathon_app_id: Option<String>,
    /// `HOOK_EXECUTOR_REMOTE_MAX_BODY`.
    pub(crate) max_body: usize,
    /// Cancelled by [`Server::stop`]: ends connections and SSE streams.
    pub(crate) shutdown: CancellationToken,
    allowed_uids: Vec<u32>,
    token: Option<Secret>,
    /// Connection slots of the Unix socket.
    unix_pool: Arc<Pool>,
    /// Connection slots of the TCP listener.
    tcp_pool: Arc<Pool>,
    /// Refused and turned-away connections being answered.
    answering: Arc<Semaphore>,
    /// Rate limit of the audit lines of refused peers.
    refusals: Mutex<RefusalLog>,
    /// The task output pipeline's counters, for `/remote/status`.
    pub(crate) output: Arc<crate::logs::OutputCounters>,
}

impl Shared {
    /// A TCP request must carry the bearer token.
    pub(crate) fn check_token(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::Unauthorized);
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if token_matches(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Compares the SHA-256 digests of both in constant time: the digests have
/// a fixed length, so neither the token's content nor its length shows in
/// the timing.
fn token_matches(given: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    digest(given).as_ref().ct_eq(digest(token).as_ref()).into()
}

/// Whether to write a refused peer's audit line now: at most one per
/// [`RefusalLog::WINDOW`], which names how many were not logged before it,
/// so a flood of refused connections cannot flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    window_start: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    const WINDOW: Duration = Duration::from_secs(1);

    /// `Some(suppressed since the last line)` if a line is due at `now`.
    fn note(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < Self::WINDOW => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.window_start = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The whole HTTP/1.1 answer for a connection that is not served.
fn canned(error: &ApiError) -> Vec<u8> {
    let status = error.status();
    let body = serde_json::to_vec(&ErrorResponse {
        result: "error".into(),
        error: error.to_string(),
    })
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Answers a connection that will not be served with `answer` once its
/// request head has arrived (an HTTP client must not get an answer before it
/// asked: hyper's treats that as a broken connection), and closes it. The
/// whole exchange gets at most [`LINGER`]; the request is read only up to the
/// end of its head (at most [`MAX_BUF`]) and never parsed or logged. Takes no
/// slot; beyond [`MAX_ANSWERING`] at once the answer is written if the socket
/// takes it without waiting (a new socket's buffer does), and the connection
/// closed.
fn answer_and_close<S>(shared: &Shared, mut io: S, answer: Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = Arc::clone(&shared.answering).try_acquire_owned() else {
        let _ = futures_util::FutureExt::now_or_never(io.write_all(&answer));
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(LINGER, async {
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head_complete(&head) && head.len() < MAX_BUF {
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&chunk[..n]);
            }
            io.write_all(&answer).await?;
            io.shutdown().await?;
            // Read what else it sends (a body), so that closing does not
            // reset the connection before it read the answer.
            let mut budget: usize = 64 * 1024;
            while budget > 0 {
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                budget = budget.saturating_sub(n);
            }
            std::io::Result::Ok(())
        })
        .await;
    });
}

/// Whether `bytes` hold a whole HTTP request head.
fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

fn serve_connection<S>(shared: &Arc<Shared>, io: S, peer: Peer, access: Access, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let slot = Arc::new(slot);
        let first = match access {
            Access::Allowed => IDLE_TIMEOUT,
            Access::Token => FIRST_REQUEST_TIMEOUT,
        };
        let peer = Arc::new(peer);
        let (svc_shared, svc_peer, svc_slot) =
            (Arc::clone(&shared), Arc::clone(&peer), Arc::clone(&slot));
        let service = service_fn(move |req| {
            handle(
                Arc::clone(&svc_shared),
                Arc::clone(&svc_peer),
                access,
                Arc::clone(&svc_slot),
                req,
            )
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(IDLE_TIMEOUT)
            .max_buf_size(MAX_BUF);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        loop {
            let tick = Instant::now() + IDLE_CHECK;
            let wake = slot
                .idle_deadline(IDLE_TIMEOUT, first)
                .map_or(tick, |d| d.min(tick));
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(peer = %peer, cause = %e, "remote API connection ended");
                    }
                    break;
                }
                () = slot.evicted.cancelled() => {
                    debug!(peer = %peer, "idle remote API connection closed for a new client");
                    break;
                }
                () = shared.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {
                    if slot.idle_deadline(IDLE_TIMEOUT, first).is_some_and(|d| d <= Instant::now()) {
                        debug!(peer = %peer, "remote API connection idle too long; closed");
                        break;
                    }
                }
            }
        }
    });
}

/// The `503` of a connection the pool turns away.
fn turned_away(why: Refusal) -> ApiError {
    ApiError::Busy(match why {
        Refusal::Full => "every connection slot is in a request",
        Refusal::PeerFull => "every connection slot of this peer address is in a request",
    })
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
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
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                warn!(cause = %e, "cannot read the peer's credentials; dropping the connection");
                continue;
            }
        };
        if !shared.allowed_uids.contains(&cred.uid()) {
            if let Some(suppressed) = crate::util::lock(&shared.refusals).note(Instant::now()) {
                warn!(
                    target: "mesos_hook_executor::audit",
                    event = "refused",
                    peer_uid = cred.uid(),
                    peer_pid = cred.pid(),
                    allowed_uids = ?shared.allowed_uids,
                    not_logged_before = suppressed,
                    "remote API connection refused: peer uid not allowed"
                );
            }
            answer_and_close(&shared, stream, canned(&ApiError::Forbidden(cred.uid())));
            continue;
        }
        let peer = Peer::Unix {
            uid: cred.uid(),
            pid: cred.pid(),
        };
        match shared.unix_pool.open(None) {
            Ok(slot) => serve_connection(&shared, stream, peer, Access::Allowed, slot),
            Err(why) => {
                warn!(%peer, ?why, "remote API connection turned away: no free slot");
                answer_and_close(&shared, stream, canned(&turned_away(why)));
            }
        }
    }
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                match shared.tcp_pool.open(Some(addr.ip())) {
                    Ok(slot) => {
                        serve_connection(&shared, stream, Peer::Tcp(addr), Access::Token, slot);
                    }
                    Err(why) => {
                        debug!(peer = %addr, ?why, "remote API TCP connection turned away: no free slot");
                        answer_and_close(&shared, stream, canned(&turned_away(why)));
                    }
                }
            }
            Err(e) => {
                warn!(cause = %e, "accept failed on the remote API TCP listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The running API: stop it with [`Server::stop`].
pub(crate) struct Server {
    shared: Arc<Shared>,
    socket: Option<socket::BoundSocket>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Starts the API as configured; `None` when disabled or when no listener
/// could be opened (logged: the task matters more than the API, so this
/// never stops the executor).
pub(crate) fn start(
    cfg: &Config,
    reaper: Reaper,
    base_env: &BTreeMap<String, String>,
    status: watch::Receiver<StatusSnapshot>,
    output: Arc<crate::logs::OutputCounters>,
) -> Option<Server> {
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
    let mode = if allowed_uids.iter().all(|u| *u == 0 || *u == own) {
        0o600
    } else {
        0o666
    };
    let limits = Limits {
        max_running: r.max_running,
        max_retained: r.max_retained,
        max_retained_bytes: r.max_retained_bytes,
        retention: r.retention,
        max_output: r.max_output,
        kill_grace: r.kill_grace,
        max_queued: r.max_queued,
        queue_timeout: r.queue_timeout,
    };
    let mut base_env = base_env.clone();
    base_env.insert(
        "MESOS_SANDBOX".to_owned(),
        cfg.sandbox.display().to_string(),
    );
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::new(reaper, limits, cfg.sandbox.clone())),
        status,
        base_env,
        sandbox_dir: cfg.sandbox.display().to_string(),
        work_dir: cfg
            .directory
            .as_ref()
            .unwrap_or(&cfg.sandbox)
            .display()
            .to_string(),
        marathon_app_id: cfg
            .environment
            .0
            .get("MARATHON_APP_ID")
            .filter(|v| !v.is_empty())
            .cloned(),
        allowed_uids,
        token: r.token.clone(),
        max_body: r.max_body,
        shutdown: CancellationToken::new(),
        unix_pool: Pool::new(UNIX_POOL),
        tcp_pool: Pool::new(TCP_POOL),
        answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
        refusals: Mutex::new(RefusalLog::default()),
        output,
    });
    let mut tasks = Vec::new();
    let path: PathBuf = cfg.remote_socket();
    let socket = match socket::bind(&path, mode).and_then(|(l, bound)| {
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(l))
            .map(|l| (l, bound))
            .map_err(|cause| socket::BindError::Io {
                context: "registering",
                path: path.clone(),
                cause,
            })
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
        match std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
        }) {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map_or_else(|_| addr.to_string(), |a| a.to_string());
                if !addr.ip().is_loopback() {
                    warn!(address = %local, "remote execution API TCP listener is not on loopback: anyone with the token on the network can run commands");
                }
                info!(address = %local, "remote execution API TCP listener open (bearer token required)");
                tasks.push(tokio::spawn(accept_tcp(listener, Arc::clone(&shared))));
            }
            Err(e) => {
                error!(address = %addr, cause = %e, "remote execution API TCP listener not available")
            }
        }
    }
    if tasks.is_empty() {
        return None;
    }
    Some(Server {
        shared,
        socket,
        tasks,
    })
}

impl Server {
    /// Stops accepting, ends open connections, removes the socket and kills
    /// every running command's process group.
    pub(crate) async fn stop(self) {
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

    #[test]
    fn refusal_lines_are_rate_limited_and_count_the_rest() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some(0));
        assert_eq!(log.note(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.note(t0 + Duration::from_millis(900)), None);
        assert_eq!(log.note(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(log.note(t0 + Duration::from_millis(3000)), Some(0));
    }

    #[test]
    fn a_request_head_ends_at_the_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n{\"body\""));
    }

    #[test]
    fn canned_answers_are_complete_responses_that_close() {
        let text = String::from_utf8(canned(&ApiError::Forbidden(65534))).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["result"], "error");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("65534")));
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(
            token_matches(b"abc", b"abc")
                && !token_matches(b"abc", b"abd")
                && !token_matches(b"ab", b"abc")
                && !token_matches(b"", b"abc")
                && !token_matches(b"abcd", b"abc")
        );
    }
}
