//! One shipped entry: the parsed line (or the plain line as `message`), plus
//! the Logstash fields and the Mesos and Marathon context. Field names are the
//! contract documented in docs/logging.md. Pure.

use std::time::SystemTime;

use serde_json::{Map, Value};

use super::parse;

/// Which of the task's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The task's stdout.
    Stdout,
    /// The task's stderr.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`: the field value and the sandbox file name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }

    /// The level of an entry that names none.
    fn default_level(self) -> &'static str {
        match self {
            Self::Stdout => "INFO",
            Self::Stderr => "ERROR",
        }
    }
}

/// What every entry of the task carries, fixed at launch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// `(field, value)` pairs: ids, host, Marathon app, chosen labels.
    pub fields: Vec<(String, String)>,
    /// Keys removed from every entry.
    pub ignore_keys: Vec<String>,
}

/// A [`Context`] made ready for the per-line work: its fields serialized
/// once (`,"task_id":"…",…`, without the ignored ones), and the keys to take
/// out of each entry (the context's own, which win, and the ignored ones).
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    fragment: Vec<u8>,
    remove: Vec<String>,
}

impl Prepared {
    pub(crate) fn new(ctx: &Context) -> Self {
        let mut fragment = Vec::new();
        for (key, value) in &ctx.fields {
            if ctx.ignore_keys.contains(key) {
                continue;
            }
            fragment.push(b',');
            // Serializing strings cannot fail.
            let _ = serde_json::to_writer(&mut fragment, key);
            fragment.push(b':');
            let _ = serde_json::to_writer(&mut fragment, value);
        }
        let remove = ctx
            .fields
            .iter()
            .map(|(k, _)| k.clone())
            .chain(ctx.ignore_keys.iter().cloned())
            .collect();
        Self { fragment, remove }
    }
}

/// One line as the shipper sees it.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    /// The bytes, without the newline.
    pub(crate) text: &'a [u8],
    /// Its stream.
    pub(crate) stream: Stream,
    /// When the executor read it.
    pub(crate) read_at: SystemTime,
    /// It was longer than the line limit and was cut there.
    pub(crate) truncated: bool,
}

/// Writes the entry for `line` as one `json_lines` line (with its newline)
/// to `out`: `parsed` fields (or the plain line as `message`), `@timestamp`
/// (the entry's own time when parseable, else the read time), `@version`,
/// `message` (from `message` or `msg`), `level`, `stream`, `truncated` when
/// cut, then the context (which wins over the task's keys), minus the
/// ignored keys.
pub(crate) fn write(
    parsed: Option<Map<String, Value>>,
    line: &Line<'_>,
    ctx: &Prepared,
    out: &mut Vec<u8>,
) {
    let mut entry = fields(parsed, line);
    for key in &ctx.remove {
        entry.remove(key);
    }
    // Serializing a map of JSON values cannot fail; it ends with `}`.
    let _ = serde_json::to_writer(&mut *out, &entry);
    if out.last() == Some(&b'}') {
        out.pop();
        if entry.is_empty() && ctx.fragment.first() == Some(&b',') {
            out.extend_from_slice(&ctx.fragment[1..]);
        } else {
            out.extend_from_slice(&ctx.fragment);
        }
        out.push(b'}');
    }
    out.push(b'\n');
}

/// The entry's own fields plus the Logstash ones (no context yet).
fn fields(parsed: Option<Map<String, Value>>, line: &Line<'_>) -> Map<String, Value> {
    let plain = parsed.is_none();
    let mut entry = parsed.unwrap_or_default();
    let time = if plain {
        line.read_at
    } else {
        parse::entry_time(&entry).unwrap_or(line.read_at)
    };
    entry.insert(
        "@timestamp".into(),
        Value::String(humantime::format_rfc3339_millis(time).to_string()),
    );
    entry.insert("@version".into(), Value::String("1".into()));
    if !entry.contains_key("message") {
        let message = match entry.remove("msg") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::from_utf8_lossy(parse::trim(line.text)).into_owned(),
        };
        entry.insert("message".into(), Value::String(message));
    }
    let level = ["level", "lvl", "severity"]
        .iter()
        .find_map(|k| entry.get(*k))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| line.stream.default_level().to_owned());
    entry.insert("level".into(), Value::String(level));
    entry.insert("stream".into(), Value::String(line.stream.name().into()));
    if line.truncated {
        entry.insert("truncated".into(), Value::Bool(true));
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScrapeFormat;

    fn ctx() -> Context {
        Context {
            fields: vec![
                ("task_id".into(), "t1".into()),
                ("framework_id".into(), "fw".into()),
            ],
            ignore_keys: vec!["secret".into()],
        }
    }

    /// The entry as shipped, parsed back.
    fn build(
        parsed: Option<Map<String, Value>>,
        line: &Line<'_>,
        ctx: &Context,
    ) -> Map<String, Value> {
        let mut out = Vec::new();
        write(parsed, line, &Prepared::new(ctx), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid json line")
    }

    fn line(text: &[u8], stream: Stream) -> Line<'_> {
        Line {
            text,
            stream,
            read_at: humantime::parse_rfc3339("2030-01-01T00:00:00Z").expect("time"),
            truncated: false,
        }
    }

    #[test]
    fn json_entries_keep_their_time_and_level_and_gain_the_context() {
        let l = line(
            br#"{"time":"2024-01-02T03:04:05.678Z","lvl":"warn","msg":"hi","secret":"x","task_id":"forged"}"#,
            Stream::Stdout,
        );
        let e = build(parse::parse_line(l.text, ScrapeFormat::Auto), &l, &ctx());
        assert_eq!(e["@timestamp"], "2024-01-02T03:04:05.678Z");
        assert_eq!(e["@version"], "1");
        assert_eq!(e["message"], "hi");
        assert!(!e.contains_key("msg"));
        assert_eq!(e["level"], "warn");
        assert_eq!(e["stream"], "stdout");
        assert_eq!(e["task_id"], "t1", "the context wins");
        assert_eq!(e["framework_id"], "fw");
        assert!(!e.contains_key("secret"), "ignored key dropped");
        assert!(!e.contains_key("truncated"));
    }

    #[test]
    fn plain_lines_become_a_message_at_read_time() {
        let mut l = line(b"  just text \r", Stream::Stderr);
        l.truncated = true;
        let e = build(None, &l, &ctx());
        assert_eq!(e["message"], "just text");
        assert_eq!(e["@timestamp"], "2030-01-01T00:00:00.000Z");
        assert_eq!(e["level"], "ERROR");
        assert_eq!(e["stream"], "stderr");
        assert_eq!(e["truncated"], true);
    }

    #[test]
    fn an_existing_message_wins_over_msg_and_unparseable_time_falls_back() {
        let l = line(
            br#"{"message":"m","msg":"other","time":"soon"}"#,
            Stream::Stdout,
        );
        let e = build(parse::parse_line(l.text, ScrapeFormat::Json), &l, &ctx());
        assert_eq!(e["message"], "m");
        assert_eq!(e["msg"], "other");
        assert_eq!(e["@timestamp"], "2030-01-01T00:00:00.000Z");
        assert_eq!(e["level"], "INFO");
    }

    #[test]
    fn the_context_can_be_ignored_too_and_keys_never_repeat() {
        let ctx = Context {
            fields: vec![
                ("task_id".into(), "t\"1".into()),
                ("host".into(), "h".into()),
            ],
            ignore_keys: vec!["host".into()],
        };
        let l = line(
            br#"{"task_id":"x","host":"y","k":[1,{"a":null}]}"#,
            Stream::Stdout,
        );
        let mut out = Vec::new();
        write(
            parse::parse_line(l.text, ScrapeFormat::Json),
            &l,
            &Prepared::new(&ctx),
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches("\"task_id\"").count(), 1, "{text}");
        assert!(!text.contains("\"host\""), "{text}");
        let e: Map<String, Value> = serde_json::from_str(&text).expect("json");
        assert_eq!(e["task_id"], "t\"1");
        assert_eq!(e["k"], serde_json::json!([1, {"a": null}]));
    }
}
