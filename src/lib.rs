//! `mesos-hook-executor`: a custom Apache Mesos executor.
//!
//! # Layout
//! Each folder is one part of the executor; the arrows are the only imports
//! between them (checked by `tests/it/layout.rs`: no cycles, leaves import
//! nothing of ours).
//! - [`executor`]: the owner of all state. `state` + `input` → `step` (pure,
//!   unit-tested) → `effect`s, carried out by the loop in `executor/mod.rs`.
//!   → agent, task, hooks, health, remote, logs, config, status.
//! - [`agent`]: the Mesos side: HTTP client for the agent's v1 executor API
//!   (http, https, http+unix), RecordIO framing, the SUBSCRIBE loop and update
//!   sender, the update log with the unacknowledged set, backoff.
//! - [`task`]: the task itself: `TaskInfo` → launch spec (pure), spawning and
//!   the one child reaper, process-tree signalling, kill causes, grace periods
//!   and the terminal status (pure).
//! - [`hooks`]: hook chains (`policy`, `exec`, `consul`, `webhook`) around the
//!   task's life. → task, net.
//! - [`health`]: Mesos health checks and generic checks: specs, probes, verdicts.
//!   → task, net.
//! - [`remote`]: the remote-execution API on a local Unix socket, its command
//!   registry and output capture. → task, status.
//! - [`logs`]: the task's output through the executor when asked: pipes
//!   drained to the sandbox files, rotation, scraping and shipping to
//!   Logstash. → config, hooks (Consul discovery), proto.
//! - [`metrics`]: the metric families (atomic counters, gauges, histograms)
//!   counted where events happen, `/proc` readings, the Prometheus text
//!   exposition and the Graphite push. → config, status, task.
//! - [`net`]: outbound connections other than the agent's (TLS trust, HTTP).
//! - [`config`]: the environment, read once and validated as a whole.
//! - [`logging`]: the executor's log formats (`json`, `compact`, `full`),
//!   written through a stderr writer that drops and counts a failed write
//!   instead of failing. → config.
//! - [`status`], `util`, [`proto`]: leaves — the status snapshot the remote API
//!   reads, small helpers (deadline sleep, lock), generated Mesos v1 types.
//! - `emulator` (cargo feature `emulator`, on for tests, benches and examples
//!   only): a local Mesos agent emulator and the Marathon app translation the
//!   demo uses. Release builds contain none of it.
//!
//! # Theory of operation
//! One task owns every piece of mutable state ([`executor`]'s `State`) and
//! reads one inbox of [`executor::Input`]s: agent events, stream connected or
//! lost, child exits, update call results, hook chain results, health probe
//! results, OS signals. Each input goes through `State::step(input, now)`, a
//! pure function that returns effects (send an update, spawn the task, run a
//! hook chain, signal a process tree, start or stop checks, exit). The loop
//! carries them out: everything that waits on I/O — the subscription, the
//! update sender, the child reaper, hook chains, the health checkers, walks of
//! `/proc` — runs in its own task and reports back through the inbox, so the
//! owner never blocks; its only other wake-up is the state's nearest deadline
//! (before-terminate budget, SIGKILL escalation, recovery timeout,
//! acknowledgement wait, max completion time).
//!
//! The remote-execution API ([`remote`]) runs beside the owner, not through
//! it: its commands are the operator's, not the task's, so their registry has
//! its own lock, and the owner only publishes a [`status::StatusSnapshot`]
//! for `/remote/status`. Its children still go through the one reaper.

pub mod agent;
pub mod config;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod executor;
pub mod health;
pub mod hooks;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod remote;
pub mod status;
pub mod task;
mod util;

pub use executor::{run, Outcome};

/// The release string: crate version and git revision.
pub const RELEASE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "-",
    env!("HOOK_EXECUTOR_GIT_REV")
);
