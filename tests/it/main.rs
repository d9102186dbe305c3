//! The one integration-test binary: the real executor binary, real processes,
//! real sockets, against the in-repo Mesos agent emulator.

mod allegro;
mod apps;
mod bad_input;
mod ctl;
mod docs;
mod fake_consul;
mod glibc;
mod hardening;
mod health;
mod helpers;
mod hooks;
mod kill;
mod layout;
mod lifecycle;
mod lifetime;
mod logs;
mod metrics;
mod reconnect;
mod remote;
mod remote_abuse;
mod task_output;
mod transport;
