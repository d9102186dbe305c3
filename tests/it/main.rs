//! The one integration-test binary: the real executor binary, real processes,
//! real sockets, against the in-repo Mesos agent emulator.

mod bad_input;
mod helpers;
mod kill;
mod lifecycle;
mod reconnect;
mod remote;
mod transport;
