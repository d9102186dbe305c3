//! The one integration-test binary: the real executor binary, real processes,
//! real sockets, against the in-repo Mesos agent emulator.

mod apps;
mod bad_input;
mod fake_consul;
mod health;
mod helpers;
mod hooks;
mod kill;
mod layout;
mod lifecycle;
mod reconnect;
mod remote;
mod remote_abuse;
mod transport;
