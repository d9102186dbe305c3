//! Retry delays.

use std::time::Duration;

/// Linear random backoff between reconnect attempts, as the Mesos executor
/// library does: uniform in `[0, max]`, with a small floor so a refusing agent
/// is not hammered in a tight loop.
#[must_use]
pub fn reconnect_delay(max: Duration, unit_random: f64) -> Duration {
    const FLOOR: Duration = Duration::from_millis(10);
    max.mul_f64(unit_random.clamp(0.0, 1.0)).max(FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_is_bounded() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(max, 0.5), Duration::from_secs(1));
        assert_eq!(reconnect_delay(max, 7.0), max);
        assert_eq!(reconnect_delay(max, 0.0), Duration::from_millis(10));
    }
}
