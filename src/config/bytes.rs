//! Byte sizes as Mesos writes them (`10MB`, `512KB`, `1GB`, `100B`): a whole
//! number and one unit out of `B KB MB GB TB`, binary multiples (Mesos'
//! `Bytes::parse`: 1KB = 1024B). A bare number is bytes. Used for the size at
//! which the sandbox's log files rotate, as the Mesos logrotate module takes
//! its `max_stdout_size`.

/// A size string Mesos would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a size (expected e.g. `10MB`, `512KB`, `1GB` or a number of bytes)")]
pub(crate) struct BytesError(pub(crate) String);

const UNITS: [(&str, u64); 5] = [
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

/// Parses `10MB`-style sizes into bytes.
pub(crate) fn parse(input: &str) -> Result<u64, BytesError> {
    let text = input.trim();
    let bad = || BytesError(input.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let multiple = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?
    };
    number.checked_mul(multiple).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn mesos_spellings_are_binary_multiples() {
        assert_eq!(parse("10MB"), Ok(10 << 20));
        assert_eq!(parse("512KB"), Ok(512 << 10));
        assert_eq!(parse("1GB"), Ok(1 << 30));
        assert_eq!(parse("2TB"), Ok(2 << 40));
        assert_eq!(parse("100B"), Ok(100));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse(" 1MB "), Ok(1 << 20));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "MB",
            "10 MB",
            "10mb",
            "1.5MB",
            "-1KB",
            "10XB",
            "99999999999999TB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
