//! The task: what runs, how it is supervised, and how it ends.
//!
//! - [`launch`]: `TaskInfo` → program, environment, working directory, user (pure).
//! - [`process`]: spawning, the one child reaper, process-tree signalling.
//! - [`lifetime`]: scheduled ends, certificate expiry and maximum lifetime (pure).
//! - [`termination`]: kill causes, grace periods and the terminal status (pure).

pub mod launch;
pub mod lifetime;
pub mod process;
pub(crate) mod spawn;
pub mod termination;
