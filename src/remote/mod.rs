//! The remote-execution API: HTTP/1.1 on a local Unix socket (and, only with a
//! bearer token, an optional TCP listener), in the shape of the Mesos "execute
//! module" API operators already script against, plus our own endpoints.
//!
//! # Layout
//! - [`types`]: request and response bodies, shared with `executorctl`.
//! - [`socket`]: binding the socket file (stale/live detection, mode, long
//!   paths through `/proc/self/fd`), shared with `executorctl`.
//! - `server`: listeners, connection slots, peer checks; [`start`] and
//!   `Server::stop`.
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
//! and the executor's uid), and refused peers get `403` and an audit line. If
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
mod registry;
mod routes;
mod server;
pub mod socket;
pub mod types;

pub(crate) use server::start;
