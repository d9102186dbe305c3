//! Retry delays: one policy object for every retry loop in the crate
//! (SUBSCRIBE reconnects, status-update resends, webhook attempts). The loop
//! asks [`Backoff::next_delay`] after each failure and calls
//! [`Backoff::reset`] after a success, so a later failure starts over.

use std::time::Duration;

/// Floor of the reconnect delay, so a refusing agent is not hammered in a
/// tight loop when the random draw is near zero.
const RECONNECT_FLOOR: Duration = Duration::from_millis(10);

/// How delays grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The Mesos executor library's reconnect backoff: uniform random in
    /// `[0, max]` after every failure (linear, not growing), and an
    /// immediate first retry after a success, because the agent's
    /// re-registration window after a restart is only 2 s by default.
    Reconnect { max: Duration },
    /// `first`, then doubling up to `cap`.
    Doubling { first: Duration, cap: Duration },
}

/// A retry delay policy with its state: the failures since the last success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    policy: Policy,
    /// Delays handed out since the last [`Backoff::reset`].
    retries: u32,
    /// A success was seen and no delay handed out since: with
    /// [`Policy::Reconnect`] the next retry is immediate. False at the start,
    /// so a failing first attempt waits.
    fresh: bool,
}

impl Backoff {
    /// Mesos' SUBSCRIBE reconnect backoff with `max` =
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX`.
    pub(crate) fn reconnect(max: Duration) -> Self {
        Self {
            policy: Policy::Reconnect { max },
            retries: 0,
            fresh: false,
        }
    }

    /// `first`, `2 × first`, `4 × first`, … up to `cap`.
    pub(crate) fn doubling(first: Duration, cap: Duration) -> Self {
        Self {
            policy: Policy::Doubling { first, cap },
            retries: 0,
            fresh: false,
        }
    }

    /// The delay before the next attempt, after a failure. Zero means "retry
    /// now" (skip the sleep: even a zero `sleep` waits for a timer tick).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = match self.policy {
            Policy::Reconnect { .. } if self.fresh => Duration::ZERO,
            Policy::Reconnect { max } => reconnect_delay(max, fastrand::f64()),
            Policy::Doubling { first, cap } => first
                .saturating_mul(2u32.saturating_pow(self.retries))
                .min(cap),
        };
        self.fresh = false;
        self.retries = self.retries.saturating_add(1);
        delay
    }

    /// A success: the next failure starts the sequence over.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
        self.fresh = true;
    }
}

/// One reconnect delay: `unit_random` (in `[0, 1]`) of `max`, at least
/// [`RECONNECT_FLOOR`].
fn reconnect_delay(max: Duration, unit_random: f64) -> Duration {
    max.mul_f64(unit_random.clamp(0.0, 1.0))
        .max(RECONNECT_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reconnect_delay_is_bounded() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(max, 0.5), Duration::from_secs(1));
        assert_eq!(reconnect_delay(max, 7.0), max);
        assert_eq!(reconnect_delay(max, 0.0), Duration::from_millis(10));
    }

    #[test]
    fn reconnect_waits_after_failures_and_retries_at_once_after_a_success() {
        let max = Duration::from_millis(300);
        let mut b = Backoff::reconnect(max);
        // A first attempt that fails waits, and so does every further failure.
        for _ in 0..200 {
            let d = b.next_delay();
            assert!((10 * MS..=max).contains(&d), "{d:?}");
        }
        // An open stream that drops: one immediate retry, then random again.
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert!(b.next_delay() >= 10 * MS);
        b.reset();
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
    }

    #[test]
    fn doubling_grows_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::doubling(100 * MS, Duration::from_secs(5));
        let delays: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(
            b.next_delay(),
            100 * MS,
            "a success starts over (no immediate retry)"
        );
        // Far past the cap nothing overflows.
        let mut b = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            (0..100).map(|_| b.next_delay()).last(),
            Some(Duration::from_secs(60))
        );
    }
}
