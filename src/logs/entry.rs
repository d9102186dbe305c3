//! One shipped entry: the parsed line (or the plain line as `message`), plus
//! the Logstash fields and the Mesos and Marathon context. Field names are the
//! contract documented in docs/logging.md. Pure.

use std::time::SystemTime;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

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
    /// Which of the fields [`write_json_fast`] adds are removed, in the order
    /// of [`ADDED`] (checked once here, not per line).
    added_removed: [bool; 6],
}

/// The fields every entry gets besides the context.
const ADDED: [&str; 6] = [
    "@timestamp",
    "@version",
    "message",
    "level",
    "stream",
    "truncated",
];

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
        let remove: Vec<String> = ctx
            .fields
            .iter()
            .map(|(k, _)| k.clone())
            .chain(ctx.ignore_keys.iter().cloned())
            .collect();
        let added_removed = ADDED.map(|k| remove.iter().any(|r| r == k));
        Self {
            fragment,
            remove,
            added_removed,
        }
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

/// Most keys a line may have on the fast path (its duplicate check is
/// quadratic); lines with more take the general one.
const FAST_MAX_KEYS: usize = 32;

/// A JSON object's members borrowed from the line: keys without escapes,
/// values as their original text.
struct Borrowed<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<&'de str>()? {
                    if members.len() == FAST_MAX_KEYS {
                        return Err(serde::de::Error::custom("many keys"));
                    }
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Borrowed(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The text of a JSON string for `raw` when it is one already, else its
/// value's compact text as a JSON string (what [`write`] does with a number
/// or an object under `msg` or `level`).
fn write_as_string(raw: &RawValue, out: &mut Vec<u8>) {
    let text = raw.get();
    if text.starts_with('"') {
        out.extend_from_slice(text.as_bytes());
    } else {
        let compact =
            serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |v| v.to_string());
        let _ = serde_json::to_writer(&mut *out, &compact);
    }
}

/// Writes the same entry as [`write`] for a line holding a JSON object, but
/// without building a map: the line's members are copied as they are and
/// the Logstash fields and the context spliced in (the per-line cost of a
/// burst is what decides whether the drain keeps up with the task).
/// `read_stamp` is `line.read_at` formatted, shared by the lines of a read.
/// `false`, with nothing written, when the line needs the general path: not
/// a JSON object, escaped or repeated keys, more than a few dozen keys.
pub(crate) fn write_json_fast(
    line: &Line<'_>,
    ctx: &Prepared,
    read_stamp: &str,
    out: &mut Vec<u8>,
) -> bool {
    let text = parse::trim(line.text);
    if text.first() != Some(&b'{') {
        return false;
    }
    let Ok(Borrowed(members)) = serde_json::from_slice::<Borrowed<'_>>(text) else {
        return false;
    };
    if (1..members.len()).any(|i| members[..i].iter().any(|(k, _)| *k == members[i].0)) {
        return false;
    }
    // The members the added fields read, found in one pass.
    let (mut message, mut msg, mut times, mut levels) = (None, None, [None; 3], [None; 3]);
    for (k, v) in &members {
        match *k {
            "message" => message = Some(*v),
            "msg" => msg = Some(*v),
            "@timestamp" => times[0] = Some(*v),
            "time" => times[1] = Some(*v),
            "ts" => times[2] = Some(*v),
            "level" => levels[0] = Some(*v),
            "lvl" => levels[1] = Some(*v),
            "severity" => levels[2] = Some(*v),
            _ => {}
        }
    }
    let removed = |key: &str| ctx.remove.iter().any(|r| r == key);
    let [no_timestamp, no_version, no_message, no_level, no_stream, no_truncated] =
        ctx.added_removed;
    let has_message = message.is_some();
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, key: &str| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        // Keys here have no escapes (borrowed, or ours).
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    };
    out.push(b'{');
    for (k, v) in &members {
        let replaced = matches!(*k, "@timestamp" | "@version" | "level" | "stream")
            || (*k == "truncated" && line.truncated)
            || (*k == "msg" && !has_message);
        if !replaced && !removed(k) {
            key(out, k);
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !no_timestamp {
        let own = times.iter().find_map(|raw| {
            let value = serde_json::from_str::<Value>(raw.as_ref()?.get()).ok()?;
            parse::time_value(&value)
        });
        key(out, "@timestamp");
        out.push(b'"');
        match own {
            Some(t) => {
                out.extend_from_slice(humantime::format_rfc3339_millis(t).to_string().as_bytes())
            }
            None => out.extend_from_slice(read_stamp.as_bytes()),
        }
        out.push(b'"');
    }
    if !no_version {
        key(out, "@version");
        out.extend_from_slice(b"\"1\"");
    }
    if !has_message && !no_message {
        key(out, "message");
        match msg {
            Some(raw) => write_as_string(raw, out),
            None => {
                let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(text));
            }
        }
    }
    if !no_level {
        key(out, "level");
        match levels.iter().find_map(|l| *l) {
            Some(raw) => write_as_string(raw, out),
            None => {
                out.push(b'"');
                out.extend_from_slice(line.stream.default_level().as_bytes());
                out.push(b'"');
            }
        }
    }
    if !no_stream {
        key(out, "stream");
        out.push(b'"');
        out.extend_from_slice(line.stream.name().as_bytes());
        out.push(b'"');
    }
    if line.truncated && !no_truncated {
        key(out, "truncated");
        out.extend_from_slice(b"true");
    }
    if first && ctx.fragment.first() == Some(&b',') {
        out.extend_from_slice(&ctx.fragment[1..]);
    } else {
        out.extend_from_slice(&ctx.fragment);
    }
    out.extend_from_slice(b"}\n");
    true
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

    #[test]
    fn the_fast_path_writes_what_the_general_one_does() {
        let ctx = Context {
            fields: vec![("task_id".into(), "t1".into()), ("host".into(), "h".into())],
            ignore_keys: vec!["host".into(), "secret".into()],
        };
        let dropping = Context {
            ignore_keys: vec![
                "level".into(),
                "@version".into(),
                "message".into(),
                "truncated".into(),
            ],
            ..ctx.clone()
        };
        let lines: [&[u8]; 10] = [
            br#"{"level":"info","msg":"request served","seq":1,"path":"/api/v1/items"}"#,
            br#" {"time":"2024-01-02T03:04:05.678Z","lvl":"warn","msg":"hi","secret":"x","task_id":"forged"} "#,
            br#"{"message":"m","msg":"other","time":"soon","severity":3}"#,
            br#"{"msg":{"nested":[1, 2, {"a":null}]},"ts":1714979289.25,"stream":"x","truncated":false}"#,
            br#"{"@timestamp":"yesterday","time":"2024-05-06T09:08:09.25+02:00","@version":7}"#,
            br#"{"msg":"caf\u00e9 \"quoted\"","level":null}"#,
            br#"{}"#,
            br#"{"secret":1,"host":2}"#,
            br#"{"message":"tab\there","k":-1.5e3}"#,
            br#"{"a":1,"b":"two","c":true,"d":[],"e":{}}"#,
        ];
        for (text, ctx) in lines.iter().flat_map(|l| [(*l, &ctx), (*l, &dropping)]) {
            let prepared = Prepared::new(ctx);
            for (stream, truncated) in [(Stream::Stdout, false), (Stream::Stderr, true)] {
                let mut l = line(text, stream);
                l.truncated = truncated;
                let stamp = humantime::format_rfc3339_millis(l.read_at).to_string();
                let mut fast = Vec::new();
                assert!(write_json_fast(&l, &prepared, &stamp, &mut fast), "{l:?}");
                assert_eq!(fast.last(), Some(&b'\n'));
                assert_eq!(fast.iter().filter(|b| **b == b'\n').count(), 1);
                let mut general = Vec::new();
                write(
                    parse::parse_line(text, ScrapeFormat::Json),
                    &l,
                    &prepared,
                    &mut general,
                );
                let fast: Map<String, Value> = serde_json::from_slice(&fast).expect("json");
                let general: Map<String, Value> = serde_json::from_slice(&general).expect("json");
                assert_eq!(fast, general, "{}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn the_fast_path_declines_what_it_cannot_copy() {
        let prepared = Prepared::new(&ctx());
        let many = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for text in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"esc\u0061ped":1}"#,
            br#"{"broken":"#,
            b"level=info msg=hi",
            b"[1,2]",
            b"{\"k\":\"\xff\"}",
            many.as_bytes(),
        ] {
            let mut out = b"kept".to_vec();
            assert!(
                !write_json_fast(&line(text, Stream::Stdout), &prepared, "x", &mut out),
                "{}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(out, b"kept", "nothing written");
        }
    }
}
