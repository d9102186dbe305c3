//! The Mesos side: everything that talks to the agent's v1 executor API.
//!
//! - [`client`]: HTTP connections to the agent (http, https, http+unix): one per
//!   SUBSCRIBE stream, one persistent connection for calls.
//! - [`recordio`]: the stream's RecordIO framing.
//! - [`subscription`]: the SUBSCRIBE loop and the per-subscription update sender.
//! - [`updates`]: status updates, their uuids and the unacknowledged set.
//! - [`backoff`]: retry delays for reconnects and calls.
//!
//! Nothing here decides anything about the task: the loops only move bytes and
//! report to the owner's inbox through the [`subscription::Report`] type.

pub mod backoff;
pub mod client;
pub mod recordio;
pub mod subscription;
pub mod updates;

pub(crate) use client::{AgentClient, CallConnection};
pub use client::{AgentError, StreamItem};
