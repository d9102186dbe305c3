//! What can go wrong, one variant per situation an operator must tell apart,
//! each with a stable `kind` (for scripts, under `--json`), an exit code per
//! class, and a hint that says what to do next.

use std::{io, path::PathBuf};

use serde_json::{json, Value};

/// An `executorctl` failure.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing at the socket path.
    #[error("no executor socket at {}", path.display())]
    NoSocket {
        /// Absolute path looked at.
        path: PathBuf,
        /// What to try, which depends on how the path was chosen.
        hint: String,
    },
    /// Something other than a socket at the path (a regular file, a directory).
    #[error("{} is {what}, not a socket", path.display())]
    NotASocket {
        /// Absolute path.
        path: PathBuf,
        /// `a regular file`, `a directory`, …
        what: &'static str,
    },
    /// A socket file nobody listens on: its executor has exited.
    #[error("the socket {} is stale: nothing listens on it (its executor is gone)", path.display())]
    StaleSocket {
        /// Absolute path.
        path: PathBuf,
    },
    /// The filesystem refuses us the socket or its directory.
    #[error("permission denied on {}", path.display())]
    PermissionDenied {
        /// Absolute path.
        path: PathBuf,
    },
    /// Any other failure to reach a Unix socket (timeout, …).
    #[error("cannot reach the executor at {}: {source}", path.display())]
    SocketUnreachable {
        /// Absolute path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Nothing listens on the TCP address.
    #[error("connection refused by TCP {addr}: nothing listens there")]
    TcpRefused {
        /// `host:port` as given.
        addr: String,
    },
    /// Any other failure to reach the TCP address.
    #[error("cannot reach TCP {addr}: {detail}")]
    TcpUnreachable {
        /// `host:port` as given.
        addr: String,
        /// The cause, as text (reqwest's error chain).
        detail: String,
    },
    /// The TCP listener wants a (different) bearer token.
    #[error("TCP {addr} refused the request ({status}): {}", if *token_given { "wrong token" } else { "no token given" })]
    Unauthorized {
        /// `host:port` as given.
        addr: String,
        /// 401 or 403.
        status: u16,
        /// Whether `HOOK_EXECUTOR_REMOTE_TOKEN` was set.
        token_given: bool,
    },
    /// The executor refused this peer on its Unix socket (SO_PEERCRED).
    #[error("refused by the executor ({status}): {detail}")]
    Forbidden {
        /// 401 or 403.
        status: u16,
        /// The executor's reason.
        detail: String,
    },
    /// The executor answered with an error status.
    #[error("the executor answered {status}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The executor's reason.
        detail: String,
    },
    /// An answer we cannot read, or a stream cut short.
    #[error("{0}")]
    BadAnswer(String),
    /// `--task` matched nothing.
    #[error("no running task on this host matches {query:?}")]
    NoTask {
        /// The `--task` value.
        query: String,
        /// The work directory scanned.
        work_dir: PathBuf,
        /// How many running executors were found.
        found: usize,
    },
    /// `--task` matched several tasks.
    #[error("{query:?} matches {} tasks: {}", candidates.len(), candidates.join(", "))]
    AmbiguousTask {
        /// The `--task` value.
        query: String,
        /// `task id (app id)` of each match.
        candidates: Vec<String>,
    },
    /// The agent's work directory cannot be read.
    #[error("cannot read the agent work directory {}: {source}", path.display())]
    WorkDir {
        /// As given (absolute).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The command line is wrong (reported by clap; as JSON under `--json`).
    #[error("{0}")]
    Usage(String),
    /// Local trouble: the runtime, the HTTP client, stdout.
    #[error("{0}")]
    Local(String),
}

impl CtlError {
    /// Stable name of the situation, for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSocket { .. } => "no_socket",
            Self::NotASocket { .. } => "not_a_socket",
            Self::StaleSocket { .. } => "stale_socket",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::SocketUnreachable { .. } => "socket_unreachable",
            Self::TcpRefused { .. } => "tcp_refused",
            Self::TcpUnreachable { .. } => "tcp_unreachable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::Api { .. } => "api",
            Self::BadAnswer(_) => "bad_answer",
            Self::NoTask { .. } => "no_task",
            Self::AmbiguousTask { .. } => "ambiguous_task",
            Self::WorkDir { .. } => "work_dir",
            Self::Usage(_) => "usage",
            Self::Local(_) => "local",
        }
    }

    /// Exit code, one per class: 1 the executor answered an error (or
    /// nonsense); 2 usage; 3 the executor cannot be reached; 4 refused
    /// (token, uid); 5 no single task matches `--task`, or the work directory
    /// cannot be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { .. } | Self::BadAnswer(_) | Self::Local(_) => 1,
            Self::Usage(_) => 2,
            Self::NoSocket { .. }
            | Self::NotASocket { .. }
            | Self::StaleSocket { .. }
            | Self::PermissionDenied { .. }
            | Self::SocketUnreachable { .. }
            | Self::TcpRefused { .. }
            | Self::TcpUnreachable { .. } => 3,
            Self::Unauthorized { .. } | Self::Forbidden { .. } => 4,
            Self::NoTask { .. } | Self::AmbiguousTask { .. } | Self::WorkDir { .. } => 5,
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        let text = match self {
            Self::NoSocket { hint, .. } => hint.as_str(),
            Self::NotASocket { .. } => {
                "give the socket itself with --socket PATH, or the task's sandbox directory with --sandbox DIR"
            }
            Self::StaleSocket { .. } => {
                "that executor has exited; `executorctl ls` lists the running ones"
            }
            Self::PermissionDenied { .. } => {
                "the socket is mode 0600 for the executor's user: run as that user or root (other uids need HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS on the executor)"
            }
            Self::TcpRefused { .. } => {
                "the executor listens on TCP only when HOOK_EXECUTOR_REMOTE_TCP is set to this address; on the agent host, use the Unix socket (--sandbox DIR or --task ID)"
            }
            Self::Unauthorized {
                token_given: false, ..
            } => "set HOOK_EXECUTOR_REMOTE_TOKEN to the executor's bearer token",
            Self::Unauthorized {
                token_given: true, ..
            } => "HOOK_EXECUTOR_REMOTE_TOKEN does not match the executor's token",
            Self::Forbidden { .. } => {
                "the executor admits root and its own uid unless HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS names more"
            }
            Self::NoTask { work_dir, found, .. } => {
                return Some(format!(
                    "{found} running executor(s) found under {}; `executorctl ls` lists them (--work-dir DIR if the agent's --work_dir is elsewhere)",
                    work_dir.display()
                ))
            }
            Self::AmbiguousTask { .. } => "give a longer prefix or the full task id",
            Self::WorkDir { .. } => {
                "give the agent's --work_dir with --work-dir DIR (default /var/lib/mesos)"
            }
            Self::Usage(_) => "see executorctl --help",
            Self::SocketUnreachable { .. }
            | Self::TcpUnreachable { .. }
            | Self::Api { .. }
            | Self::BadAnswer(_)
            | Self::Local(_) => return None,
        };
        Some(text.to_owned())
    }

    /// The `--json` form: `{"error": {"kind", "message", "hint", "exit_code"}}`,
    /// plus `candidates` for an ambiguous `--task`.
    pub fn to_json(&self) -> Value {
        let mut error = json!({
            "kind": self.kind(),
            "message": self.to_string(),
            "hint": self.hint(),
            "exit_code": self.exit_code(),
        });
        if let Self::AmbiguousTask { candidates, .. } = self {
            error["candidates"] = json!(candidates);
        }
        json!({ "error": error })
    }
}

/// The failure of connecting to the Unix socket `path` with `source`: refused
/// means stale, since the file exists (the caller checked) but nobody accepts.
pub fn unix_connect_error(path: PathBuf, source: io::Error) -> CtlError {
    match source.kind() {
        io::ErrorKind::NotFound => CtlError::NoSocket {
            path,
            hint: "the socket disappeared: its executor exited just now".to_owned(),
        },
        io::ErrorKind::ConnectionRefused => CtlError::StaleSocket { path },
        io::ErrorKind::PermissionDenied => CtlError::PermissionDenied { path },
        _ => CtlError::SocketUnreachable { path, source },
    }
}

/// The failure of connecting to TCP `addr`.
pub fn tcp_connect_error(addr: &str, kind: io::ErrorKind, detail: String) -> CtlError {
    match kind {
        io::ErrorKind::ConnectionRefused => CtlError::TcpRefused {
            addr: addr.to_owned(),
        },
        _ => CtlError::TcpUnreachable {
            addr: addr.to_owned(),
            detail,
        },
    }
}

/// What a file that should be a socket is instead.
pub fn file_kind(ft: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_socket() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_file() {
        Some("a regular file")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_char_device() || ft.is_block_device() {
        Some("a device")
    } else {
        Some("not a socket")
    }
}

/// Checks that `path` is a socket before connecting, so a regular file or a
/// missing path is named as such (connecting would say "refused" or "not
/// found" for several different situations).
pub fn check_socket(path: PathBuf, missing_hint: impl FnOnce() -> String) -> Result<(), CtlError> {
    match std::fs::metadata(&path) {
        Ok(m) => match file_kind(m.file_type()) {
            None => Ok(()),
            Some(what) => Err(CtlError::NotASocket { path, what }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CtlError::NoSocket {
            path,
            hint: missing_hint(),
        }),
        // ENOTDIR: a path component is a file.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(CtlError::NoSocket {
            path,
            hint: missing_hint(),
        }),
        Err(e) => Err(unix_connect_error(path, e)),
    }
}

/// The error an HTTP error status means, given where it came from: over TCP,
/// 401/403 are about the bearer token; on the Unix socket, 403 is about the
/// peer's uid.
pub fn status_error(status: u16, detail: String, tcp: Option<(&str, bool)>) -> CtlError {
    match (status, tcp) {
        (401 | 403, Some((addr, token_given))) => CtlError::Unauthorized {
            addr: addr.to_owned(),
            status,
            token_given,
        },
        (401 | 403, None) => CtlError::Forbidden { status, detail },
        _ => CtlError::Api { status, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn connect_errors_name_the_situation() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = unix_connect_error(p("/s/executor.sock"), refused);
        assert_eq!((e.kind(), e.exit_code()), ("stale_socket", 3));
        assert!(e.to_string().contains("/s/executor.sock is stale"), "{e}");
        let e = unix_connect_error(
            p("/s/executor.sock"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.kind(), "permission_denied");
        let e = unix_connect_error(p("/s"), io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(e.kind(), "socket_unreachable");

        let e = tcp_connect_error(
            "127.0.0.1:7070",
            io::ErrorKind::ConnectionRefused,
            String::new(),
        );
        assert_eq!((e.kind(), e.exit_code()), ("tcp_refused", 3));
        let text = e.to_string();
        assert!(
            text.contains("TCP 127.0.0.1:7070") && !text.contains("stale"),
            "{text}"
        );
        assert!(e
            .hint()
            .is_some_and(|h| h.contains("HOOK_EXECUTOR_REMOTE_TCP")));
        let e = tcp_connect_error("h:1", io::ErrorKind::TimedOut, "timed out".into());
        assert_eq!(e.to_string(), "cannot reach TCP h:1: timed out");
    }

    #[test]
    fn http_status_maps_by_transport() {
        let e = status_error(401, "x".into(), Some(("127.0.0.1:1", false)));
        assert_eq!((e.kind(), e.exit_code()), ("unauthorized", 4));
        assert!(e.to_string().contains("no token given"), "{e}");
        assert!(e
            .hint()
            .is_some_and(|h| h.contains("set HOOK_EXECUTOR_REMOTE_TOKEN")));
        let e = status_error(401, "x".into(), Some(("127.0.0.1:1", true)));
        assert!(e.to_string().contains("wrong token"), "{e}");
        let e = status_error(403, "uid 5 is not allowed".into(), None);
        assert_eq!((e.kind(), e.exit_code()), ("forbidden", 4));
        assert!(e.to_string().contains("403") && e.to_string().contains("uid 5"));
        let e = status_error(404, "no command".into(), None);
        assert_eq!((e.kind(), e.exit_code()), ("api", 1));
        let e = status_error(404, "no command".into(), Some(("h:1", true)));
        assert_eq!(e.kind(), "api");
    }

    #[test]
    fn files_that_are_not_sockets_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("executor.sock");
        std::fs::write(&file, "").expect("write");
        let e = check_socket(file.clone(), String::new).expect_err("a file");
        assert_eq!((e.kind(), e.exit_code()), ("not_a_socket", 3));
        assert!(
            e.to_string().ends_with("is a regular file, not a socket"),
            "{e}"
        );
        let e = check_socket(dir.path().to_owned(), String::new).expect_err("a dir");
        assert!(e.to_string().contains("a directory"), "{e}");
        let e =
            check_socket(dir.path().join("none"), || "try --sandbox".into()).expect_err("missing");
        assert_eq!(e.kind(), "no_socket");
        assert_eq!(e.hint().as_deref(), Some("try --sandbox"));
        let e = check_socket(file.join("below"), || "h".into()).expect_err("below a file");
        assert_eq!(e.kind(), "no_socket");
        let sock = dir.path().join("real.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert!(check_socket(sock, String::new).is_ok());
    }

    #[test]
    fn json_shape_is_stable() {
        let e = CtlError::AmbiguousTask {
            query: "web".into(),
            candidates: vec!["web.1 (/shop/web)".into(), "web.2 (/shop/web)".into()],
        };
        let v = e.to_json();
        assert_eq!(
            v,
            json!({"error": {
                "kind": "ambiguous_task",
                "message": "\"web\" matches 2 tasks: web.1 (/shop/web), web.2 (/shop/web)",
                "hint": "give a longer prefix or the full task id",
                "exit_code": 5,
                "candidates": ["web.1 (/shop/web)", "web.2 (/shop/web)"],
            }})
        );
        let v = CtlError::BadAnswer("cut".into()).to_json();
        assert_eq!(v["error"]["hint"], Value::Null);
        let mut keys: Vec<_> = v["error"]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(keys, ["exit_code", "hint", "kind", "message"]);
    }
}
