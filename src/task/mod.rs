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
