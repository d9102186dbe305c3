//! The remote-execution API: HTTP/1.1 on a local Unix socket (and, only with a
//! bearer token, an optional TCP listener), in the shape of the Mesos "execute
//! module" API operators already script against, plus our own endpoints.
//!
//! # Layout
//! - [`types`]: request and response bodies, shared with `executorctl`.
//! - [`socket`]: binding the socket file (stale/live detection, mode, long
//!   paths through `/proc/self/fd`), shared with `executorctl`.
//! - `server`: listeners, peer checks, idle and first-request timeouts;
//!   [`start`] and `Server::stop`.
//! - `pool`: connection slots per listener (idle ones evicted first, a cap
//!   per TCP peer, long requests apart); limits in docs/remote-limits.md.
//! - `routes`: the one (method, path) `match` into a typed `Route`.
//! - `handlers`: what each route does, body limits, the SSE output stream.
//! - `error`: `ApiError` and its one mapping to HTTP statuses.
//! - `body`: response bodies (JSON, SSE).
//! - `plan`: an execute request validated into what to run.
//! - `registry`: running commands and retained results, within the limits.
//! - `command`: one command's state and its supervisor (timeout, terminate,
//!   reaping through the executor's one reaper).
//! - `output`: capped output capture and line cursors.
//! - `audit`: the audit line of every execute.
//!
//! # Security
//! The socket is mode 0600, so the filesystem lets only the executor's uid and
//! root connect; every connection's peer uid is also checked with
//! `SO_PEERCRED` against `HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS` (default: root
//! and the executor's uid), and refused peers get `403` at once, without
//! taking a connection slot, and an audit line (at most one a second). If
//! the allow-list names any other uid, the socket is made 0666 so those users
//! can connect at all, and `SO_PEERCRED` alone decides. A refused peer's
//! requests are never read or logged. Every execute is one audit line.
//!
//! # Lifecycle
//! [`start`] runs before the executor subscribes; `Server::stop` after its
//! event loop ends and before the final sweep: it stops accepting, SIGKILLs
//! every running command's group, and removes the socket.

mod audit;
mod body;
mod command;
mod error;
mod handlers;
mod output;
mod plan;
mod pool;
mod registry;
mod routes;
mod server;
pub mod socket;
pub mod types;

pub(crate) use server::start;

/// Every parser a request meets before the server acts on it — the route
/// (method, path, `?wait=`), the `POST /remote/execute` body validated into a
/// plan (`PATH` lookups under `/`), the `POST /remote/task` body — run on
/// untrusted bytes; `Err` is the error the client would get. For the fuzz
/// target `fuzz/fuzz_targets/remote_requests.rs`: it must answer, never panic.
///
/// # Errors
/// The request's error message, as the `error` field of the response.
#[doc(hidden)]
pub fn parse_request(method: &[u8], target: &str, body: &[u8]) -> Result<(), String> {
    use std::{collections::BTreeMap, path::Path};
    let method = hyper::Method::from_bytes(method).map_err(|e| e.to_string())?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let fail = |e: error::ApiError| e.to_string();
    match routes::route(&method, path, query).map_err(fail)? {
        routes::Route::Execute => {
            let request: types::ExecuteRequest =
                serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let base: BTreeMap<String, String> =
                [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into();
            plan::plan(request, &base, Path::new("/")).map_err(fail)?;
        }
        routes::Route::CompatResult => {
            let query: types::TaskQuery =
                serde_json::from_slice(body).map_err(|e| e.to_string())?;
            routes::pid(query.pid).map_err(fail)?;
            if let Some(w) = query.wait {
                plan::seconds("\"wait\"", w).map_err(fail)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_request;

    /// The fuzz target's body over a deterministic corpus: valid requests,
    /// their mutations and random bytes all get an answer, never a panic.
    #[test]
    fn fuzz_corpus_never_panics() {
        let seeds: [(&[u8], &str, &[u8]); 6] = [
            (b"POST", "/remote/execute", br#"{"command": "echo hi", "timeout": 1e-12}"#),
            (b"POST", "/remote/execute", br#"{"value": "ls", "shell": false, "arguments": ["-l"], "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "99999999999999999999"}]}}"#),
            (b"POST", "/remote/task", br#"{"pid": 2147483648, "wait": -0.0}"#),
            (b"GET", "/remote/task/42?wait=1e308&wait=2", b""),
            (b"DELETE", "/remote/task/+1", b""),
            (b"GET", "/remote/task/1/output?x", b""),
        ];
        assert!(parse_request(seeds[0].0, seeds[0].1, seeds[0].2).is_ok());
        assert!(parse_request(b"POST", "/remote/task", br#"{"pid": 0}"#).is_err());
        let mut rng = fastrand::Rng::with_seed(7);
        for (method, target, body) in seeds {
            for _ in 0..500 {
                let mut t = target.as_bytes().to_vec();
                let mut b = body.to_vec();
                for _ in 0..rng.usize(1..4) {
                    let v = if rng.bool() { &mut t } else { &mut b };
                    if v.is_empty() || rng.bool() {
                        v.insert(rng.usize(..=v.len()), rng.u8(..));
                    } else {
                        let i = rng.usize(..v.len());
                        v[i] = rng.u8(..);
                    }
                }
                let _ = parse_request(method, &String::from_utf8_lossy(&t), &b);
            }
        }
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
            let _ = parse_request(b"POST", "/remote/execute", &bytes);
            let _ = parse_request(&bytes, &String::from_utf8_lossy(&bytes), &bytes);
        }
    }
}
