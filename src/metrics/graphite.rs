//! Pushes the metrics to Graphite (plaintext protocol over TCP) every
//! interval, for operators who, like allegro's, run Graphite.
//!
//! The push runs on a task of its own: a slow or absent Graphite delays only
//! the next push, never the executor. Each push is bounded (connect and write
//! timeouts, one batch in memory); lines that cannot be delivered are dropped
//! and counted (`graphite_lines_dropped_total{cause}`), and the connection is
//! opened again at the next interval.

use std::time::{Duration, SystemTime};

use prometheus::proto::{MetricFamily, MetricType};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use super::{get, refresh, NAMESPACE};
use crate::{config::GraphiteSettings, status::StatusSnapshot, task::process::Reaper};

/// Longest connect or write of one push (shorter if the interval is).
const IO_LIMIT: Duration = Duration::from_secs(5);

/// Fills the prefix's placeholders; each value becomes one path segment
/// (dots, slashes and spaces turned into `_`, leading `/` of Marathon app
/// ids dropped). Unknown values (no task yet) become `none`.
#[must_use]
pub(crate) fn expand_prefix(
    template: &str,
    task_id: Option<&str>,
    app_id: Option<&str>,
    executor_id: &str,
) -> String {
    template
        .replace("{task_id}", &segment(task_id.unwrap_or("none")))
        .replace("{app_id}", &segment(app_id.unwrap_or("none")))
        .replace("{executor_id}", &segment(executor_id))
}

/// One Graphite path segment from free text.
fn segment(text: &str) -> String {
    let s: String = text
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "none".to_owned()
    } else {
        s
    }
}

/// Plaintext lines `<prefix>.<name>[.<label value>…] <value> <unix time>`
/// for every sample; histograms give `.count` and `.sum`.
#[must_use]
pub(crate) fn lines(families: &[MetricFamily], prefix: &str, unix: u64) -> String {
    let mut out = String::new();
    for family in families {
        let name = family
            .name()
            .strip_prefix(NAMESPACE)
            .map_or(family.name(), |n| n.trim_start_matches('_'));
        for metric in family.get_metric() {
            let mut path = format!("{prefix}.{name}");
            for label in metric.get_label() {
                path.push('.');
                path.push_str(&segment(label.value()));
            }
            let mut line = |suffix: &str, value: f64| {
                if value.is_finite() {
                    out.push_str(&format!("{path}{suffix} {value} {unix}\n"));
                }
            };
            match family.get_field_type() {
                MetricType::COUNTER => line("", metric.get_counter().get_value()),
                MetricType::GAUGE => line("", metric.get_gauge().get_value()),
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    line(".count", h.get_sample_count() as f64);
                    line(".sum", h.get_sample_sum());
                }
                MetricType::SUMMARY | MetricType::UNTYPED => {}
            }
        }
    }
    out
}

/// Starts pushing; the handle is aborted when the executor ends.
pub(crate) fn spawn(
    settings: GraphiteSettings,
    status: watch::Receiver<StatusSnapshot>,
    reaper: Reaper,
    app_id: Option<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let limit = IO_LIMIT.min(settings.interval);
        let mut conn: Option<TcpStream> = None;
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let snapshot = status.borrow().clone();
            let auxiliary = reaper.auxiliary_pids();
            let refreshed = snapshot.clone();
            let _ = tokio::task::spawn_blocking(move || refresh(&refreshed, &auxiliary)).await;
            let prefix = expand_prefix(
                &settings.prefix,
                snapshot.task_id.as_deref(),
                app_id.as_deref(),
                &snapshot.executor_id,
            );
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let batch = lines(&get().gather(), &prefix, unix);
            let count = u64::try_from(batch.lines().count()).unwrap_or(u64::MAX);
            push(&mut conn, &settings.address, batch.as_bytes(), count, limit).await;
        }
    })
}

/// Writes one batch, connecting first if needed; on failure the batch is
/// dropped (counted by cause) and the connection closed.
async fn push(
    conn: &mut Option<TcpStream>,
    address: &str,
    batch: &[u8],
    count: u64,
    limit: Duration,
) {
    let m = &get().graphite;
    if conn.is_none() {
        match tokio::time::timeout(limit, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => *conn = Some(stream),
            Ok(Err(e)) => {
                debug!(%address, cause = %e, "Graphite unreachable; dropping this push");
                m.dropped.with_label_values(&["connect"]).inc_by(count);
                return;
            }
            Err(_) => {
                warn!(%address, ?limit, "connecting to Graphite timed out; dropping this push");
                m.dropped.with_label_values(&["connect"]).inc_by(count);
                return;
            }
        }
    }
    let Some(stream) = conn.as_mut() else { return };
    match tokio::time::timeout(limit, stream.write_all(batch)).await {
        Ok(Ok(())) => m.sent.inc_by(count),
        Ok(Err(e)) => {
            debug!(%address, cause = %e, "writing to Graphite failed; reconnecting next time");
            m.dropped.with_label_values(&["write"]).inc_by(count);
            *conn = None;
        }
        Err(_) => {
            warn!(%address, ?limit, "writing to Graphite timed out; reconnecting next time");
            m.dropped.with_label_values(&["write"]).inc_by(count);
            *conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_takes_ids_as_single_segments() {
        assert_eq!(
            expand_prefix(
                "apps.{app_id}.{task_id}.{executor_id}",
                Some("web.1234-abcd"),
                Some("/team/web"),
                "ex 1"
            ),
            "apps.team_web.web_1234-abcd.ex_1"
        );
        assert_eq!(
            expand_prefix("x.{task_id}.{app_id}", None, Some("/"), "e"),
            "x.none.none"
        );
    }

    #[test]
    fn samples_become_plaintext_lines() {
        let m = get();
        m.hooks
            .runs
            .with_label_values(&["after-start", "web.hook"])
            .inc();
        m.hooks
            .duration
            .with_label_values(&["after-start", "web.hook"])
            .observe(0.5);
        let text = lines(&m.gather(), "p.q", 1700000000);
        assert!(
            text.lines().any(
                |l| l.starts_with("p.q.hook_runs_total.after-start.web_hook ")
                    && l.ends_with(" 1700000000")
            ),
            "{text}"
        );
        assert!(text.contains("p.q.hook_duration_seconds.after-start.web_hook.count "));
        assert!(text.contains("p.q.hook_duration_seconds.after-start.web_hook.sum "));
        for line in text.lines() {
            assert_eq!(line.split(' ').count(), 3, "{line}");
        }
    }
}
