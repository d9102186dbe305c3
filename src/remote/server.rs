//! Serving the API: the Unix socket and the optional TCP listener, a pool of
//! connection slots per listener, the peer check at accept (`SO_PEERCRED`
//! against the allowed uids; the bearer token on TCP), and [`start`] and
//! [`Server::stop`].

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use hyper::{body::Incoming, header, service::service_fn, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{
    error::ApiError,
    handlers::handle,
    registry::{Limits, Registry},
    socket,
};
use crate::{
    config::{Config, Secret},
    status::StatusSnapshot,
    task::process::Reaper,
};

/// Connections served at once per listener; more wait in the listen backlog.
/// Each listener has its own pool, so unauthenticated TCP clients can never
/// take the slots of the local socket.
const MAX_CONNECTIONS: usize = 512;
/// A request's headers must arrive within this (also bounds idle keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Authorisation for a connection, decided once at accept.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// Unix peer on the allow-list.
    Allowed,
    /// Unix peer not on it.
    Refused(u32),
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
    unix_connections: Arc<Semaphore>,
    /// Connection slots of the TCP listener.
    tcp_connections: Arc<Semaphore>,
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
            Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serve_connection<S>(
    shared: &Arc<Shared>,
    io: S,
    peer: Peer,
    access: Access,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let _permit = permit;
        let peer = Arc::new(peer);
        let svc_shared = Arc::clone(&shared);
        let svc_peer = Arc::clone(&peer);
        let service = service_fn(move |req| {
            handle(Arc::clone(&svc_shared), Arc::clone(&svc_peer), access, req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::select! {
            r = conn => if let Err(e) = r { debug!(peer = %peer, cause = %e, "remote API connection ended") },
            () = shared.shutdown.cancelled() => {}
        }
    });
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok(permit) = Arc::clone(&shared.unix_connections).acquire_owned().await else {
            return;
        };
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
                let peer = Peer::Unix {
                    uid: cred.uid(),
                    pid: cred.pid(),
                };
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
        let Ok(permit) = Arc::clone(&shared.tcp_connections).acquire_owned().await else {
            return;
        };
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
        retention: r.retention,
        max_output: r.max_output,
        kill_grace: r.kill_grace,
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
        unix_connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        tcp_connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
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
    fn token_comparison_is_exact() {
        assert!(
            constant_time_eq(b"abc", b"abc")
                && !constant_time_eq(b"abc", b"abd")
                && !constant_time_eq(b"ab", b"abc")
        );
    }
}
