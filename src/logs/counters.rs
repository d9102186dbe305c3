//! What the output pipeline did: bytes, lines, entries shipped and entries
//! dropped by cause. Updated by the pipeline's threads with relaxed atomics;
//! read as a [`OutputCountersSnapshot`] by `GET /remote/status`, the exit
//! log line, and (later) `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The live counters of the task's output pipeline. One per executor run,
/// shared (`Arc`) by the pipeline and the readers.
#[derive(Debug, Default)]
pub struct OutputCounters {
    active: AtomicBool,
    pub(crate) stdout_bytes: AtomicU64,
    pub(crate) stderr_bytes: AtomicU64,
    pub(crate) sandbox_write_errors: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) lines: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) plain_not_shipped: AtomicU64,
    pub(crate) shipped: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_rate: AtomicU64,
    pub(crate) dropped_size: AtomicU64,
    pub(crate) dropped_send_error: AtomicU64,
    pub(crate) dropped_at_exit: AtomicU64,
}

/// A copy of [`OutputCounters`] at one instant (field names as shown in
/// `GET /remote/status` under `task_output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputCountersSnapshot {
    /// Bytes of the task's stdout written to the executor's stdout.
    pub stdout_bytes: u64,
    /// Bytes of the task's stderr written to the executor's stderr.
    pub stderr_bytes: u64,
    /// Failed writes to the sandbox files (the bytes are lost).
    pub sandbox_write_errors: u64,
    /// Sandbox file rotations.
    pub rotations: u64,
    /// Non-empty lines seen by the scraper.
    pub lines: u64,
    /// Lines cut at `HOOK_EXECUTOR_LOG_MAX_LINE`.
    pub truncated: u64,
    /// Lines neither JSON nor logfmt, not shipped (no `log-scraping-all`).
    pub plain_not_shipped: u64,
    /// Entries handed to the transport without error.
    pub shipped: u64,
    /// Dropped: the queue was full (the task wrote faster than we ship).
    pub dropped_queue_full: u64,
    /// Dropped: over `HOOK_EXECUTOR_LOG_RATE_LIMIT`.
    pub dropped_rate: u64,
    /// Dropped: over `HOOK_EXECUTOR_LOG_SIZE_LIMIT` or the UDP datagram size.
    pub dropped_size: u64,
    /// Dropped: no connection, or the send failed.
    pub dropped_send_error: u64,
    /// Dropped: still queued when the drain time at the task's end ran out.
    pub dropped_at_exit: u64,
}

impl OutputCountersSnapshot {
    /// Every entry dropped, whatever the cause.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_rate
            + self.dropped_size
            + self.dropped_send_error
            + self.dropped_at_exit
    }
}

impl OutputCounters {
    /// Marks the pipeline as started (the counters then show).
    pub(crate) fn activate(&self) {
        self.active.store(true, Relaxed);
    }

    /// The counters now, or `None` when no task's output went through the
    /// executor (the default: the task writes to the sandbox directly).
    #[must_use]
    pub fn snapshot(&self) -> Option<OutputCountersSnapshot> {
        if !self.active.load(Relaxed) {
            return None;
        }
        let get = |c: &AtomicU64| c.load(Relaxed);
        Some(OutputCountersSnapshot {
            stdout_bytes: get(&self.stdout_bytes),
            stderr_bytes: get(&self.stderr_bytes),
            sandbox_write_errors: get(&self.sandbox_write_errors),
            rotations: get(&self.rotations),
            lines: get(&self.lines),
            truncated: get(&self.truncated),
            plain_not_shipped: get(&self.plain_not_shipped),
            shipped: get(&self.shipped),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_rate: get(&self.dropped_rate),
            dropped_size: get(&self.dropped_size),
            dropped_send_error: get(&self.dropped_send_error),
            dropped_at_exit: get(&self.dropped_at_exit),
        })
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl OutputCountersSnapshot {
    /// The figures `GET /metrics` mirrors (`metrics::OutputMetrics`).
    #[must_use]
    pub fn figures(&self) -> crate::metrics::OutputFigures {
        crate::metrics::OutputFigures {
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            lines: self.lines,
            truncated: self.truncated,
            not_shipped: self.plain_not_shipped,
            shipped: self.shipped,
            dropped: [
                ("queue_full", self.dropped_queue_full),
                ("rate", self.dropped_rate),
                ("size", self.dropped_size),
                ("send_error", self.dropped_send_error),
                ("at_exit", self.dropped_at_exit),
            ],
            rotations: self.rotations,
            sandbox_write_errors: self.sandbox_write_errors,
        }
    }
}
