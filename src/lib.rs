//! `mesos-hook-executor`: a custom Apache Mesos executor.
//!
//! # Layout
//! - [`config`]: the environment, read once and validated as a whole.
//! - [`duration`]: Mesos duration strings.
//! - [`proto`]: generated Mesos v1 types.
//! - [`recordio`]: the agent's stream framing.
//! - [`agent`]: HTTP client for the agent's executor API (http, https, http+unix).
//! - [`subscription`]: the SUBSCRIBE loop with Mesos' reconnect backoff.
//! - [`updates`]: status updates, their uuids and the unacknowledged set.
//! - [`launch`]: TaskInfo → program, environment, user (pure).
//! - [`marathon`]: a Marathon app definition as Marathon hands it to Mesos.
//! - [`policy`]: kill grace, terminal state and other decisions (pure).
//! - [`process`]: spawning, the child reaper, process-tree signalling.
//! - [`executor`]: the owner of all executor state and its event loop.
//! - [`hooks`]: hook chains (`policy`, `exec`, `consul`, `webhook`) around the task's life.
//! - [`transport`]: the client stream type and TLS trust modes shared by every client.
//! - [`http`]: a minimal outbound HTTP client for hooks (every call with a timeout).
//! - [`health`]: Mesos health checks and generic checks (checkers and verdicts).
//! - [`remote`]: the remote-execution API on a local Unix socket (the
//!   command registry lives there, outside the owner: it is not task state).
//! - [`emulator`]: a local Mesos agent emulator for tests and `make demo`.
//!
//! # Theory of operation
//! One task (the [`executor::Executor`]) owns every piece of mutable state and
//! reads one inbox of [`executor::Input`]s: agent events, stream connected or
//! lost, child exits, update call results, hook chain results, health probe
//! results, OS signals. Everything that waits on I/O — the subscription, the
//! update sender, the child reaper, hook chains, the health checkers — runs in
//! its own task and reports back through that inbox, so the owner never
//! blocks; its only other wake-up is its nearest deadline (before-terminate
//! budget, SIGKILL escalation, recovery timeout, acknowledgement wait). The
//! remote API reads a status snapshot the owner publishes and keeps its own
//! command registry. Decisions are delegated to pure functions in
//! [`policy`] and [`launch`], which carry the unit tests.
//!
//! The remote-execution API ([`remote`]) runs beside the owner, not through
//! it: its commands are the operator's, not the task's, so their registry has
//! its own lock, and the owner only publishes a [`executor::StatusSnapshot`]
//! for `/remote/status`. Its children still go through the one reaper.

pub mod agent;
pub mod config;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod executor;
pub mod health;
pub mod hooks;
pub mod net;
pub mod proto;
pub mod remote;
pub mod status;
pub mod task;
mod util;

pub use executor::{run, Outcome};

/// The release string: crate version and git revision.
pub const RELEASE: &str = concat!(env!("CARGO_PKG_VERSION"), "-", env!("HOOK_EXECUTOR_GIT_REV"));
