//! Duration strings as the Mesos agent writes them (`5secs`, `1500ms`,
//! `1.02083333333333days`) and as operators like to type them (`5s`, `1m30s`).
//!
//! The agent formats a duration with the largest unit in which it is exact and up
//! to 15 significant digits, so fractional values with long expansions reach the
//! executor; `humantime` rejects those (`NumberOverflow`), hence our own parser
//! for Mesos syntax. Mesos syntax is tried first (a decimal number and one unit
//! out of `ns us ms secs mins hrs days weeks`); anything else goes to
//! [`humantime::parse_duration`], whose grammar (`5s`, `1m 30s`, `2h`, a bare
//! `0`) is accepted as that crate defines it.

use std::time::Duration;

/// A duration string that neither Mesos nor humantime syntax accepts. The
/// cause is humantime's complaint, Mesos syntax being the narrower one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{input:?} is not a duration (expected e.g. `5secs`, `1500ms`, `2mins` or `1m30s`)")]
pub(crate) struct DurationError {
    /// The rejected text.
    input: String,
    #[source]
    source: humantime::DurationError,
}

const MESOS_UNITS: [(&str, f64); 8] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("ms", 1e-3),
    ("secs", 1.0),
    ("mins", 60.0),
    ("hrs", 3600.0),
    ("days", 86_400.0),
    ("weeks", 604_800.0),
];

/// Parses exactly Mesos' `Duration::parse` syntax: a run of digits and dots, then
/// one unit. No sign, spaces or exponent.
fn parse_mesos(input: &str) -> Option<Duration> {
    let split = input.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = input.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return None;
    }
    let factor = MESOS_UNITS.iter().find(|(name, _)| *name == unit)?.1;
    let value: f64 = number.parse().ok()?;
    let secs = value * factor;
    if !secs.is_finite() || !(0.0..=1e15).contains(&secs) {
        return None;
    }
    // Round to whole nanoseconds, as stout stores durations in int64 ns;
    // but a positive value stays positive (a timeout of `0.1ns` is a very
    // short timeout, not zero, which often means "none").
    let nanos = (secs * 1e9).round().max(if secs > 0.0 { 1.0 } else { 0.0 });
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(Duration::from_nanos(nanos as u64))
}

/// Parses a duration in Mesos syntax, falling back to humantime syntax.
pub(crate) fn parse(input: &str) -> Result<Duration, DurationError> {
    match parse_mesos(input) {
        Some(d) => Ok(d),
        None => humantime::parse_duration(input).map_err(|source| DurationError {
            input: input.to_owned(),
            source,
        }),
    }
}

/// Formats a duration the way the agent does for whole units (`5secs`, `2mins`,
/// `1500ms`): the emulator writes the agent's variables with it.
#[cfg(any(test, feature = "emulator"))]
#[must_use]
pub(crate) fn format_mesos(d: Duration) -> String {
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
        assert_eq!(parse_mesos("0.1ns"), Some(Duration::from_nanos(1)));
        assert_eq!(
            parse_mesos("0.0000000000001secs"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(parse_mesos("1.5secs"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_mesos("3hrs"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_mesos("1weeks"), Some(Duration::from_secs(604_800)));
        let d = parse_mesos("1.02083333333333days").expect("fractional days");
        // 1 day 30 min, within the 15 significant digits the agent writes.
        assert!((d.as_secs_f64() - 88_200.0).abs() < 0.001, "{d:?}");
        assert_eq!(
            parse("1.02083333333333days"),
            Ok(d),
            "humantime alone would reject it"
        );
    }

    #[test]
    fn rejects_what_mesos_rejects() {
        for bad in [
            "5", "5s", " 5secs", "5 secs", "-5secs", "1e3secs", "secs", "1..5secs", ".secs", "",
        ] {
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
    fn the_error_names_the_input_and_keeps_humantimes_cause() {
        let err = parse("soon").expect_err("not a duration");
        assert!(
            err.to_string().starts_with("\"soon\" is not a duration"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
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
