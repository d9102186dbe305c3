//! Outbound connections other than the agent's HTTP exchange itself: TLS trust
//! modes and the stream type ([`transport`], shared with the agent client) and
//! the one reqwest-based HTTP client of hooks and health probes ([`http`]).

pub mod http;
pub mod transport;
