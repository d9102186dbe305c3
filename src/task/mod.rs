//! The task: what runs, how it is supervised, and how it ends.
//!
//! - [`launch`]: `TaskInfo` → program, environment, working directory, user (pure).
//! - [`process`]: spawning, the one child reaper, process-tree signalling.
//! - [`guard`]: the process every auxiliary child runs under (raw system calls).
//! - [`spawner`]: the small process, forked at start, that forks the guards.
//! - [`lifetime`]: scheduled ends, certificate expiry and maximum lifetime (pure).
//! - [`termination`]: kill causes, grace periods and the terminal status (pure).

pub(crate) mod guard;
pub mod launch;
pub mod lifetime;
pub mod process;
pub(crate) mod spawn;
pub mod spawner;
pub mod termination;

/// Unit tests that wait for a child of their own take turns with the one
/// that installs a [`process::Reaper`]: while it runs, it collects every
/// child of the test process, theirs included.
#[cfg(test)]
pub(crate) static CHILDREN_OF_THE_TEST_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
