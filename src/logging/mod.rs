//! The executor's own log on stderr, in the three `HOOK_EXECUTOR_LOG_FORMAT`
//! formats: `full` (tracing-subscriber's default lines, span fields
//! included), `json` (one object per line) and `compact` (ours: a short human
//! line per event, for a terminal or `make demo`).
//!
//! The framework and executor ids ride on the `executor` span the binary
//! enters for the whole run, so every `full` and `json` line carries them;
//! `compact` leaves them out (one executor writes one sandbox `stderr` file).
//!
//! Every format writes through [`LossyStderr`] (module `lossy`): a line that
//! cannot be written is dropped and counted, never a panic.

use std::{
    fmt::{self, Write as _},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{
    filter::Targets,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::LogFormat;

mod lossy;

pub use lossy::{
    dropped_writes, ignore_sigpipe, print_stderr, print_stdout, LossyLine, LossyStderr,
};

/// A field value longer than this is cut in `compact` lines (with `…`).
const COMPACT_VALUE_MAX: usize = 72;

/// Installs the log subscriber. The filter is `tracing_subscriber`'s
/// `Targets` (levels per target), not `EnvFilter`: span-field matching is not
/// worth the regex engine it brings into the binary. The formatter's own
/// error report (an `eprintln!` that panics when stderr is what failed) is off.
pub fn init(format: LogFormat, level: &str) {
    use tracing_subscriber::fmt;
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Full => registry
            .with(
                fmt::layer()
                    .log_internal_errors(false)
                    .with_writer(LossyStderr),
            )
            .init(),
        LogFormat::Compact => registry
            .with(
                fmt::layer()
                    .event_format(Compact)
                    .log_internal_errors(false)
                    .with_writer(LossyStderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .log_internal_errors(false)
                    .with_writer(LossyStderr),
            )
            .init(),
    }
}

/// The `compact` format: `HH:MM:SS.mmm LEVEL message key=value …` (UTC), no
/// target, no span fields, long values cut.
struct Compact;

impl<S, N> FormatEvent<S, N> for Compact
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = CompactFields::default();
        event.record(&mut fields);
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(
            writer,
            "{}",
            compact_line(
                since_epoch.as_millis(),
                *event.metadata().level(),
                &fields.message,
                &fields.pairs
            )
        )
    }
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct CompactFields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for CompactFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.pairs.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((field.name(), text));
        }
    }
}

/// One `compact` line from its parts (pure, for tests): the UTC time of day
/// to the millisecond, the level, the message and `key=value` pairs, each
/// value cut to [`COMPACT_VALUE_MAX`] characters.
fn compact_line(
    epoch_millis: u128,
    level: Level,
    message: &str,
    pairs: &[(&str, String)],
) -> String {
    let millis = epoch_millis % 86_400_000;
    let mut line = format!(
        "{:02}:{:02}:{:02}.{:03} {:<5} {message}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
        level.as_str()
    );
    for (key, value) in pairs {
        let cut: String = value.chars().take(COMPACT_VALUE_MAX).collect();
        let more = if cut.len() < value.len() { "…" } else { "" };
        let _ = write!(line, " {key}={cut}{more}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_line_is_time_level_message_and_fields() {
        // 2026-12-02T09:20:25.123Z
        let at = 1_796_203_225_123;
        let line = compact_line(
            at,
            Level::INFO,
            "task started",
            &[("pid", "42".into()), ("task_id", "web.1".into())],
        );
        assert_eq!(line, "09:20:25.123 INFO  task started pid=42 task_id=web.1");
    }

    #[test]
    fn compact_line_cuts_long_values() {
        let long = "x".repeat(500);
        let line = compact_line(0, Level::WARN, "m", &[("command", long)]);
        assert_eq!(
            line,
            format!("00:00:00.000 WARN  m command={}…", "x".repeat(72))
        );
        // Multi-byte characters are cut on character boundaries.
        let line = compact_line(0, Level::INFO, "m", &[("v", "é".repeat(100))]);
        assert!(line.ends_with(&format!("v={}…", "é".repeat(72))), "{line}");
    }
}
