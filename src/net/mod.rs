//! Outbound connections other than the agent's: the client stream type, TLS
//! trust modes and the HTTP client used by hooks and health probes.

pub mod http;
pub mod transport;
