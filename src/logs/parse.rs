//! Reading one line of the task's output as a log entry: a JSON object or
//! logfmt (`key=value key2="quoted value"`), and the entry's own timestamp.
//! Pure functions; the shipper calls them per line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::ScrapeFormat;

/// The line's fields when it parses in `format`; `None` for a plain line.
pub(crate) fn parse_line(line: &[u8], format: ScrapeFormat) -> Option<Map<String, Value>> {
    let line = trim(line);
    if line.is_empty() {
        return None;
    }
    let json = || json_object(line);
    let logfmt = || logfmt(&String::from_utf8_lossy(line));
    match format {
        ScrapeFormat::Json => json(),
        ScrapeFormat::Logfmt => logfmt(),
        ScrapeFormat::Auto => json().or_else(logfmt),
    }
}

/// The line without surrounding ASCII whitespace (`\r\n` included).
pub(crate) fn trim(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

fn json_object(line: &[u8]) -> Option<Map<String, Value>> {
    if line.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Map<String, Value>>(line).ok()
}

/// logfmt: space-separated `key=value` pairs; values may be double-quoted
/// with `\"`, `\\`, `\n`, `\t` escapes. Every token must be a pair (a bare word
/// makes the line plain text), and a key has no `=`, `"` or space.
pub(crate) fn logfmt(line: &str) -> Option<Map<String, Value>> {
    let mut fields = Map::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains([' ', '"', '\t']) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next()?.1 {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        other => out.push(other),
                    },
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end?..];
            if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
                return None;
            }
        } else {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        fields.insert(key.to_owned(), Value::String(value));
        rest = rest.trim_start();
    }
    (!fields.is_empty()).then_some(fields)
}

/// The entry's own time: `@timestamp`, `time` or `ts`, as RFC 3339 text
/// (`Z` or a `±HH:MM` offset) or a number of seconds, milliseconds,
/// microseconds or nanoseconds since the epoch (told apart by magnitude).
pub(crate) fn entry_time(fields: &Map<String, Value>) -> Option<SystemTime> {
    ["@timestamp", "time", "ts"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(time_value))
}

pub(crate) fn time_value(value: &Value) -> Option<SystemTime> {
    match value {
        Value::String(text) => rfc3339(text.trim()),
        Value::Number(n) => epoch_number(n.as_f64()?),
        _ => None,
    }
}

fn epoch_number(n: f64) -> Option<SystemTime> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match n {
        n if n < 1e11 => n,
        n if n < 1e14 => n / 1e3,
        n if n < 1e17 => n / 1e6,
        n => n / 1e9,
    };
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
}

fn rfc3339(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    // A `±HH:MM` offset: humantime reads UTC only, so shift by hand.
    if bytes.len() > 6
        && matches!(bytes[bytes.len() - 6], b'+' | b'-')
        && bytes[bytes.len() - 3] == b':'
    {
        let (base, offset) = text.split_at(text.len() - 6);
        let hours: u64 = offset[1..3].parse().ok()?;
        let minutes: u64 = offset[4..6].parse().ok()?;
        let shift = Duration::from_secs(hours * 3600 + minutes * 60);
        let local = humantime::parse_rfc3339_weak(base).ok()?;
        return if offset.starts_with('-') {
            local.checked_add(shift)
        } else {
            local.checked_sub(shift)
        };
    }
    humantime::parse_rfc3339_weak(text.strip_suffix('Z').unwrap_or(text)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).expect("test time")
    }

    #[test]
    fn json_objects_parse_and_other_json_is_plain() {
        let m = parse_line(br#" {"msg":"hi","n":1} "#, ScrapeFormat::Auto).expect("object");
        assert_eq!(m["msg"], "hi");
        assert_eq!(m["n"], 1);
        assert!(parse_line(b"[1,2]", ScrapeFormat::Auto).is_none());
        assert!(parse_line(b"\"text\"", ScrapeFormat::Json).is_none());
        assert!(parse_line(br#"{"broken":"#, ScrapeFormat::Json).is_none());
        assert!(parse_line(b"   \r", ScrapeFormat::Auto).is_none());
    }

    #[test]
    fn logfmt_pairs_with_quotes_and_escapes() {
        let m = logfmt(r#"level=info msg="hello \"world\"" path=/a=b empty="""#).expect("logfmt");
        assert_eq!(m["level"], "info");
        assert_eq!(m["msg"], "hello \"world\"");
        assert_eq!(m["path"], "/a=b");
        assert_eq!(m["empty"], "");
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_bare_word_or_a_broken_quote_makes_the_line_plain() {
        for plain in [
            "hello world",
            "a=b and more",
            "=value",
            r#"msg="unterminated"#,
            r#"msg="x"y=1"#,
            "",
        ] {
            assert!(logfmt(plain).is_none(), "{plain:?}");
        }
    }

    #[test]
    fn formats_can_be_forced() {
        assert!(parse_line(b"a=1", ScrapeFormat::Json).is_none());
        assert!(parse_line(br#"{"a":1}"#, ScrapeFormat::Logfmt).is_none());
        assert!(parse_line(b"a=1", ScrapeFormat::Logfmt).is_some());
    }

    #[test]
    fn invalid_utf8_and_binary_garbage_do_not_panic() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = parse_line(&garbage, ScrapeFormat::Auto);
        let m = parse_line(b"k=\xff\xfe", ScrapeFormat::Auto).expect("lossy logfmt");
        assert_eq!(m["k"], "\u{fffd}\u{fffd}");
    }

    #[test]
    fn entry_times_in_every_spelling() {
        let expected = at("2024-05-06T07:08:09.250Z");
        let cases = [
            serde_json::json!({"time": "2024-05-06T07:08:09.250Z"}),
            serde_json::json!({"ts": "2024-05-06T09:08:09.25+02:00"}),
            serde_json::json!({"@timestamp": "2024-05-06T05:38:09.250-01:30"}),
            serde_json::json!({"ts": 1_714_979_289.25}),
            serde_json::json!({"ts": 1_714_979_289_250_u64}),
            serde_json::json!({"time": "2024-05-06 07:08:09.250"}),
        ];
        for case in cases {
            let fields = case.as_object().expect("object").clone();
            assert_eq!(entry_time(&fields), Some(expected), "{case}");
        }
        for bad in [
            serde_json::json!({"time": "yesterday"}),
            serde_json::json!({"time": -5}),
            serde_json::json!({"time": true}),
            serde_json::json!({"when": "2024-05-06T07:08:09Z"}),
        ] {
            assert_eq!(entry_time(bad.as_object().expect("object")), None, "{bad}");
        }
    }
}
