//! Duration strings as the Mesos agent writes them (`5secs`, `1500ms`,
//! `1.02083333333333days`) and as operators like to type them (`5s`, `1m30s`).
//!
//! The agent formats a duration with the largest unit in which it is exact and up
//! to 15 significant digits, so fractional values with long expansions reach the
//! executor; `humantime` rejects those, hence this parser. Mesos syntax is tried
//! first (a decimal number and one unit out of `ns us ms secs mins hrs days weeks`);
//! anything else falls back to humantime.

use std::time::Duration;

/// A duration string that neither Mesos nor humantime syntax accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration (expected e.g. `5secs`, `1500ms`, `2mins` or `1m30s`)")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
}

const MESOS_UNITS: [(&str, f64); 8] =
    [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("secs", 1.0), ("mins", 60.0), ("hrs", 3600.0), ("days", 86_400.0), ("weeks", 604_800.0)];

/// Parses exactly Mesos' `Duration::parse` syntax: a run of digits and dots, then
/// one unit. No sign, spaces or exponent.
pub fn parse_mesos(input: &str) -> Option<Duration> {
    let split = input.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = input.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return None;
    }
    let factor = MESOS_UNITS.iter().find(|(name, _)| *name == unit)?.1;
    let value: f64 = number.parse().ok()?;
    let secs = value * factor;
    if !secs.is_finite() || secs < 0.0 || secs > 1e15 {
        return None;
    }
    // Round to whole nanoseconds, as stout stores durations in int64 ns.
    let nanos = (secs * 1e9).round();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(Duration::from_nanos(nanos as u64))
}

/// Parses a duration in Mesos syntax, falling back to humantime syntax.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    parse_mesos(input).or_else(|| humantime_lite(input)).ok_or_else(|| DurationError { input: input.to_owned() })
}

/// Formats a duration the way the agent does for whole units (`5secs`, `2mins`,
/// `1500ms`), for help text and logs.
#[must_use]
pub fn format_mesos(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0ns".to_owned();
    }
    for (name, factor) in MESOS_UNITS.iter().rev() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let unit_ns = (factor * 1e9) as u128;
        if nanos % unit_ns == 0 {
            return format!("{}{name}", nanos / unit_ns);
        }
    }
    format!("{nanos}ns")
}

/// The subset of humantime syntax operators use in variables: a sequence of
/// `<integer><unit>` with units `ns us ms s m h d` (and their long spellings),
/// e.g. `5s`, `1m30s`, `250ms`. Implemented here to avoid a dependency for it.
fn humantime_lite(input: &str) -> Option<Duration> {
    let mut rest = input.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let part = match unit {
            "ns" | "nsec" | "nanos" => Duration::from_nanos(value),
            "us" | "usec" | "micros" => Duration::from_micros(value),
            "ms" | "msec" | "millis" => Duration::from_millis(value),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(value),
            "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(value.checked_mul(60)?),
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(value.checked_mul(3600)?),
            "d" | "day" | "days" => Duration::from_secs(value.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_agent_writes() {
        assert_eq!(parse_mesos("5secs"), Some(Duration::from_secs(5)));
        assert_eq!(parse_mesos("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_mesos("2mins"), Some(Duration::from_secs(120)));
        assert_eq!(parse_mesos("15mins"), Some(Duration::from_secs(900)));
        assert_eq!(parse_mesos("0ns"), Some(Duration::ZERO));
        assert_eq!(parse_mesos("1.5secs"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_mesos("3hrs"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_mesos("1weeks"), Some(Duration::from_secs(604_800)));
        let d = parse_mesos("1.02083333333333days").expect("fractional days");
        // 1 day 30 min, within the 15 significant digits the agent writes.
        assert!((d.as_secs_f64() - 88_200.0).abs() < 0.001, "{d:?}");
    }

    #[test]
    fn rejects_what_mesos_rejects() {
        for bad in ["5", "5s", " 5secs", "5 secs", "-5secs", "1e3secs", "secs", "1..5secs", ".secs", ""] {
            assert_eq!(parse_mesos(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn falls_back_to_humantime_syntax() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse("5").is_err());
        assert!(parse("five seconds").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_like_the_agent_for_whole_units() {
        assert_eq!(format_mesos(Duration::from_secs(5)), "5secs");
        assert_eq!(format_mesos(Duration::from_secs(90)), "90secs");
        assert_eq!(format_mesos(Duration::from_secs(120)), "2mins");
        assert_eq!(format_mesos(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_mesos(Duration::ZERO), "0ns");
    }
}
