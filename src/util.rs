//! Small helpers shared across modules.

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever without one (a `select!` arm that
/// never fires).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section in this crate
/// leaves its data consistent between statements (no panics on runtime data),
/// so a poisoned lock still holds usable state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `now + after`, saturating far in the future instead of panicking when a
/// configured or received duration is too large for the clock.
pub(crate) fn deadline_after(now: Instant, after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(after.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}
