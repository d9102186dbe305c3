//! Settings of the task's output pipeline (`HOOK_EXECUTOR_LOG_*` beyond the
//! executor's own log format and level; docs/logging.md): sandbox rotation,
//! scraping and shipping to Logstash.

use std::time::Duration;

use super::variables::{
    Reader, ValueError, LOG_DRAIN_TIMEOUT, LOG_IGNORE_KEYS, LOG_LABELS, LOG_LOGSTASH_ADDRESS,
    LOG_LOGSTASH_PROTOCOL, LOG_LOGSTASH_REFRESH, LOG_LOGSTASH_SERVICE, LOG_MAX_LINE,
    LOG_QUEUE_BYTES, LOG_QUEUE_SIZE, LOG_RATE_LIMIT, LOG_ROTATE_KEEP, LOG_ROTATE_SIZE,
    LOG_SCRAPING, LOG_SCRAPING_ALL, LOG_SIZE_LIMIT, LOG_TCP_KEEP_ALIVE, LOG_TCP_TIMEOUT,
};

/// How a scraped line is read: the values of the task label `log-scraping`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScrapeFormat {
    /// `logstash` (allegro's value): a JSON object, else logfmt.
    #[default]
    Auto,
    /// `json`: JSON objects only.
    Json,
    /// `logfmt`: logfmt only.
    Logfmt,
}

impl ScrapeFormat {
    /// The format a label value names, `None` for an unknown value.
    #[must_use]
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "logstash" => Some(Self::Auto),
            "json" => Some(Self::Json),
            "logfmt" => Some(Self::Logfmt),
            _ => None,
        }
    }
}

/// Transport to Logstash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `json_lines` over one TCP connection.
    #[default]
    Tcp,
    /// One datagram per entry.
    Udp,
}

/// Where entries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogstashTarget {
    /// A fixed `host:port`.
    Address(String),
    /// The passing instances of a Consul service.
    Consul {
        /// The service name.
        service: String,
        /// How often to ask again.
        refresh: Duration,
    },
}

/// The task-output settings, validated.
#[derive(Debug, Clone, Default)]
pub struct OutputSettings {
    /// Rotate the sandbox files at this size.
    pub rotate_size: Option<u64>,
    /// Rotated files kept per stream.
    pub rotate_keep: usize,
    /// Scrape every task's output (else only tasks labelled `log-scraping`).
    pub scraping: Option<ScrapeFormat>,
    /// Ship lines that do not parse, for every task.
    pub scraping_all: bool,
    /// Transport.
    pub protocol: Protocol,
    /// Where to ship; `None`: nowhere configured (scraping then cannot be on).
    pub target: Option<LogstashTarget>,
    /// Entries per second (0: no limit).
    pub rate_limit: usize,
    /// Largest serialized entry (0: no limit).
    pub size_limit: usize,
    /// TCP keep-alive idle time.
    pub tcp_keep_alive: Duration,
    /// TCP connect and write timeout.
    pub tcp_timeout: Duration,
    /// Queue bound in lines.
    pub queue_size: usize,
    /// Queue bound in bytes.
    pub queue_bytes: usize,
    /// Longest line scraped.
    pub max_line: usize,
    /// Keys removed from entries.
    pub ignore_keys: Vec<String>,
    /// Task labels added to entries.
    pub labels: Vec<String>,
    /// Bounded drain at the task's end.
    pub drain_timeout: Duration,
}

/// Reads the task-output settings; scraping every task needs somewhere to ship.
pub(super) fn output_settings(r: &mut Reader<'_>) -> OutputSettings {
    let address = r.get(&LOG_LOGSTASH_ADDRESS);
    let service = r.get(&LOG_LOGSTASH_SERVICE);
    let refresh = r.get(&LOG_LOGSTASH_REFRESH);
    let target = match (service, address) {
        (Some(service), _) => Some(LogstashTarget::Consul { service, refresh }),
        (None, Some(address)) => Some(LogstashTarget::Address(address)),
        (None, None) => None,
    };
    let scraping = r.get(&LOG_SCRAPING);
    if scraping.is_some() && target.is_none() && !r.is_set(&LOG_LOGSTASH_ADDRESS) {
        r.problem(
            &LOG_LOGSTASH_ADDRESS,
            ValueError::MissingFor(
                "by HOOK_EXECUTOR_LOG_SCRAPING (or set HOOK_EXECUTOR_LOG_LOGSTASH_SERVICE)",
            ),
        );
    }
    OutputSettings {
        rotate_size: r.get(&LOG_ROTATE_SIZE),
        rotate_keep: r.get(&LOG_ROTATE_KEEP),
        scraping,
        scraping_all: r.get(&LOG_SCRAPING_ALL),
        protocol: r.get(&LOG_LOGSTASH_PROTOCOL),
        target,
        rate_limit: r.get(&LOG_RATE_LIMIT),
        size_limit: r.get(&LOG_SIZE_LIMIT),
        tcp_keep_alive: r.get(&LOG_TCP_KEEP_ALIVE),
        tcp_timeout: r.get(&LOG_TCP_TIMEOUT),
        queue_size: r.get(&LOG_QUEUE_SIZE),
        queue_bytes: r.get(&LOG_QUEUE_BYTES),
        max_line: r.get(&LOG_MAX_LINE),
        ignore_keys: r.get(&LOG_IGNORE_KEYS),
        labels: r.get(&LOG_LABELS),
        drain_timeout: r.get(&LOG_DRAIN_TIMEOUT),
    }
}
