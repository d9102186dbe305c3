//! The drain of one of the task's pipes, on a thread of its own: read a
//! chunk, write it whole to the executor's own stdout or stderr (the sandbox
//! file, rotated as configured), then, when scraping, split it into lines and
//! offer each to the bounded queue without ever waiting. The sandbox write is
//! the only thing in the task's path: a full queue drops lines (counted), it
//! never slows the read.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        mpsc::{SyncSender, TrySendError},
        Arc,
    },
    time::SystemTime,
};

use tracing::warn;

use super::{
    counters::{add, OutputCounters},
    entry::{self, Line, Prepared, Stream},
    parse,
    rotate::SandboxFile,
};
use crate::config::ScrapeFormat;

/// Bytes read from the pipe at once.
const CHUNK: usize = 256 * 1024;

/// Splits a byte stream into lines of at most `max` bytes. A longer line is
/// emitted cut at `max` and flagged, and the rest of it, up to its newline,
/// is skipped: nothing is held beyond `max` bytes.
#[derive(Debug)]
pub(crate) struct Splitter {
    partial: Vec<u8>,
    skipping: bool,
    max: usize,
}

impl Splitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            skipping: false,
            max: max.max(1),
        }
    }

    /// Feeds a chunk; `emit(line, truncated)` gets each complete line.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !chunk.is_empty() {
            let newline = memchr::memchr(b'\n', chunk);
            let (segment, ended) = match newline {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            chunk = newline.map_or(&[][..], |i| &chunk[i + 1..]);
            if self.skipping {
                self.skipping = !ended;
                continue;
            }
            if self.partial.len() + segment.len() > self.max {
                let take = self.max - self.partial.len();
                self.emit_with(&segment[..take], true, emit);
                self.skipping = !ended;
            } else if ended {
                self.emit_with(segment, false, emit);
            } else {
                self.partial.extend_from_slice(segment);
            }
        }
    }

    /// The last line, if the stream ended without a newline.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.partial.is_empty() {
            emit(&self.partial, false);
            self.partial.clear();
        }
        self.skipping = false;
    }

    fn emit_with(&mut self, tail: &[u8], truncated: bool, emit: &mut impl FnMut(&[u8], bool)) {
        if self.partial.is_empty() {
            emit(tail, truncated);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial, truncated);
            self.partial.clear();
        }
    }
}

/// Entries ready to ship, in Logstash's `json_lines` form: `data` holds
/// them one after the other, each ending at the matching offset in `ends`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) data: Vec<u8>,
    pub(crate) ends: Vec<usize>,
}

impl Batch {
    /// An empty batch with room for a full one (no regrowth per entry).
    fn with_room() -> Self {
        Self {
            data: Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4),
            ends: Vec::new(),
        }
    }

    /// The memory it holds.
    pub(crate) fn size(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    /// The entries, one slice each (newline included).
    pub(crate) fn entries(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, e)| &self.data[s..*e])
    }
}

/// What the queue holds now, shared by the producers and the shipper (which
/// gives back what it takes).
#[derive(Debug, Default)]
pub(crate) struct Level {
    pub(crate) bytes: AtomicUsize,
    pub(crate) entries: AtomicUsize,
}

/// The producer side of the bounded queue: bounded in entries and in bytes
/// (`HOOK_EXECUTOR_LOG_QUEUE_SIZE`, `_QUEUE_BYTES`).
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) tx: SyncSender<Batch>,
    pub(crate) level: Arc<Level>,
    pub(crate) max_bytes: usize,
    pub(crate) max_entries: usize,
}

impl Queue {
    /// Offers a batch; drops it whole (its entries counted) when it does not
    /// fit. Never waits. Bytes are counted as allocated, so the bound is
    /// the memory held.
    pub(crate) fn offer(&self, batch: Batch, counters: &OutputCounters) {
        let (len, n) = (batch.size(), batch.ends.len());
        if n == 0 {
            return;
        }
        let over_bytes = self.level.bytes.fetch_add(len, Relaxed) + len > self.max_bytes;
        let over_entries = self.level.entries.fetch_add(n, Relaxed) + n > self.max_entries;
        let give_back = || {
            self.level.bytes.fetch_sub(len, Relaxed);
            self.level.entries.fetch_sub(n, Relaxed);
        };
        if over_bytes || over_entries {
            give_back();
            add(&counters.dropped_queue_full, n as u64);
            return;
        }
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                give_back();
                add(&counters.dropped_queue_full, n as u64);
            }
            Err(TrySendError::Disconnected(_)) => {
                give_back();
                add(&counters.dropped_at_exit, n as u64);
            }
        }
    }
}

/// How lines become entries, fixed at the task's launch.
#[derive(Debug)]
pub(crate) struct Encoding {
    pub(crate) format: ScrapeFormat,
    pub(crate) forward_plain: bool,
    pub(crate) context: Prepared,
    /// Largest entry (newline included); 0: no limit.
    pub(crate) size_limit: usize,
}

/// A batch is offered once it holds this much (and at the end of each read).
const BATCH_BYTES: usize = 256 * 1024;

/// The scraping side of a drain: lines are parsed and enriched here, in the
/// drain, and only finished entries are queued. This costs the task CPU time
/// (as the copy does) but never waits: a slow or absent sink only fills the
/// queue, and what does not fit is dropped and counted. With a sink that
/// keeps up nothing is lost however fast the task writes, since the drain
/// reads no faster than it encodes.
pub(crate) struct Scrape {
    pub(crate) splitter: Splitter,
    pub(crate) queue: Queue,
    pub(crate) encoding: Arc<Encoding>,
}

/// Turns the lines of one read into entries of a batch.
struct Encoder<'a> {
    enc: &'a Encoding,
    queue: &'a Queue,
    stream: Stream,
    read_at: SystemTime,
    /// `read_at` in RFC 3339, formatted once per read.
    stamp: String,
    batch: Batch,
}

impl Encoder<'_> {
    fn line(&mut self, text: &[u8], truncated: bool, counters: &OutputCounters) {
        if parse::trim(text).is_empty() {
            return;
        }
        add(&counters.lines, 1);
        if truncated {
            add(&counters.truncated, 1);
        }
        let line = Line {
            text,
            stream: self.stream,
            read_at: self.read_at,
            truncated,
        };
        let out = &mut self.batch.data;
        let start = out.len();
        let fast = self.enc.format != ScrapeFormat::Logfmt
            && entry::write_json_fast(&line, &self.enc.context, &self.stamp, out);
        if !fast {
            let parsed = parse::parse_line(text, self.enc.format);
            if parsed.is_none() && !self.enc.forward_plain {
                add(&counters.plain_not_shipped, 1);
                return;
            }
            entry::write(parsed, &line, &self.enc.context, out);
        }
        if self.enc.size_limit > 0 && out.len() - start > self.enc.size_limit {
            out.truncate(start);
            add(&counters.dropped_size, 1);
            return;
        }
        self.batch.ends.push(out.len());
        if out.len() >= BATCH_BYTES {
            self.flush(counters);
        }
    }

    fn flush(&mut self, counters: &OutputCounters) {
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_room());
        // Held as allocated: trim the slack so the byte bound buys entries.
        batch.data.shrink_to_fit();
        batch.ends.shrink_to_fit();
        self.queue.offer(batch, counters);
    }
}

impl Scrape {
    /// Splits `data` into lines (`end`: the stream ended, so a last line
    /// without a newline counts too), encodes them and queues the entries.
    fn feed(&mut self, data: &[u8], end: bool, stream: Stream, counters: &OutputCounters) {
        let read_at = SystemTime::now();
        let mut encoder = Encoder {
            enc: &self.encoding,
            queue: &self.queue,
            stream,
            read_at,
            stamp: humantime::format_rfc3339_millis(read_at).to_string(),
            batch: Batch::with_room(),
        };
        let mut emit = |line: &[u8], truncated: bool| encoder.line(line, truncated, counters);
        if end {
            self.splitter.finish(&mut emit);
        } else {
            self.splitter.feed(data, &mut emit);
        }
        encoder.flush(counters);
    }
}

/// Drains `pipe` until EOF (every writer gone): the body of a drain thread.
pub(crate) fn drain(
    pipe: &OwnedFd,
    stream: Stream,
    out: &mut SandboxFile,
    mut scrape: Option<Scrape>,
    counters: &OutputCounters,
) {
    let mut buf = vec![0u8; CHUNK];
    let bytes = match stream {
        Stream::Stdout => &counters.stdout_bytes,
        Stream::Stderr => &counters.stderr_bytes,
    };
    let mut failing = false;
    let mut rotations = 0;
    loop {
        // SAFETY: a read into our own buffer from a pipe we own.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(stream = stream.name(), cause = %e, "reading the task's output failed; draining stops");
                break;
            }
        };
        let data = &buf[..n];
        match out.write_all(data) {
            Ok(()) => {
                add(bytes, n as u64);
                failing = false;
            }
            Err(e) => {
                add(&counters.sandbox_write_errors, 1);
                if !failing {
                    warn!(stream = stream.name(), cause = %e, "writing the task's output to the sandbox file failed");
                    failing = true;
                }
            }
        }
        if out.rotations != rotations {
            add(&counters.rotations, out.rotations - rotations);
            rotations = out.rotations;
        }
        if let Some(s) = scrape.as_mut() {
            s.feed(data, false, stream, counters);
        }
    }
    if let Some(s) = scrape.as_mut() {
        s.feed(&[], true, stream, counters);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Receiver;

    use serde_json::{Map, Value};

    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        let mut emit = |l: &[u8], t: bool| out.push((String::from_utf8_lossy(l).into_owned(), t));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(100, &[b"a\nb", b"c\n", b"", b"d"]),
            [
                ("a".into(), false),
                ("bc".into(), false),
                ("d".into(), false)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_flagged_and_their_rest_skipped() {
        assert_eq!(
            split(4, &[b"abcdefgh\nxy\n"]),
            [("abcd".into(), true), ("xy".into(), false)]
        );
        assert_eq!(
            split(4, &[b"ab", b"cd", b"ef", b"gh", b"\nok\n"]),
            [("abcd".into(), true), ("ok".into(), false)]
        );
        assert_eq!(
            split(4, &[b"abcd\n"]),
            [("abcd".into(), false)],
            "exactly the limit is whole"
        );
    }

    #[test]
    fn memory_stays_within_the_limit() {
        let mut s = Splitter::new(1024);
        let mut count = 0;
        let big = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            s.feed(&big, &mut |_, _| count += 1);
            assert!(s.partial.capacity() <= 2048, "{}", s.partial.capacity());
        }
        assert_eq!(count, 1, "one cut line for one 10 MiB line");
    }

    fn scrape(queue: Queue, format: ScrapeFormat, size_limit: usize) -> Scrape {
        Scrape {
            splitter: Splitter::new(1024),
            queue,
            encoding: Arc::new(Encoding {
                format,
                forward_plain: false,
                context: Prepared::new(&entry::Context {
                    fields: vec![("task_id".into(), "t1".into())],
                    ignore_keys: Vec::new(),
                }),
                size_limit,
            }),
        }
    }

    fn queue(max_entries: usize, max_bytes: usize) -> (Queue, Receiver<Batch>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(max_entries);
        let queue = Queue {
            tx,
            level: Arc::new(Level::default()),
            max_bytes,
            max_entries,
        };
        (queue, rx)
    }

    #[test]
    fn lines_are_encoded_in_the_drain_and_queued_in_batches() {
        let (q, rx) = queue(100, 1 << 20);
        let mut s = scrape(q, ScrapeFormat::Auto, 0);
        let counters = OutputCounters::default();
        s.feed(
            b"{\"msg\":\"a\"}\nplain text\n\n  \nk=v\n{\"msg\":",
            false,
            Stream::Stdout,
            &counters,
        );
        s.feed(b"\"b\"}", false, Stream::Stdout, &counters);
        s.feed(&[], true, Stream::Stdout, &counters);
        let batches: Vec<Batch> = rx.try_iter().collect();
        assert_eq!(batches.len(), 2, "one batch per read with entries");
        let entries: Vec<Map<String, Value>> = batches
            .iter()
            .flat_map(Batch::entries)
            .map(|e| {
                assert_eq!(e.last(), Some(&b'\n'));
                serde_json::from_slice(e).expect("json entry")
            })
            .collect();
        let messages: Vec<&Value> = entries.iter().map(|e| &e["message"]).collect();
        assert_eq!(messages, ["a", "k=v", "b"]);
        assert!(entries.iter().all(|e| e["task_id"] == "t1"));
        assert_eq!(entries[1]["k"], "v");
        assert_eq!(counters.lines.load(Relaxed), 4, "blank lines are not lines");
        assert_eq!(counters.plain_not_shipped.load(Relaxed), 1);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (q, rx) = queue(2, 1 << 20);
        let level = q.level.clone();
        let mut s = scrape(q, ScrapeFormat::Json, 0);
        let counters = OutputCounters::default();
        for _ in 0..5 {
            s.feed(b"{\"n\":1}\n", false, Stream::Stdout, &counters);
        }
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(counters.lines.load(Relaxed), 5);
        assert_eq!(counters.dropped_queue_full.load(Relaxed), 3);
        assert!(
            level.bytes.load(Relaxed) > 0,
            "the shipper gives bytes back"
        );

        let (q, rx) = queue(1000, 4096);
        let mut s = scrape(q, ScrapeFormat::Json, 0);
        let counters = OutputCounters::default();
        let many = "{\"n\":1}\n".repeat(200);
        s.feed(many.as_bytes(), false, Stream::Stdout, &counters);
        assert_eq!(rx.try_iter().count(), 0, "over the byte bound");
        assert_eq!(
            counters.dropped_queue_full.load(Relaxed),
            200,
            "the byte bound holds too, and drops are counted per entry"
        );
    }

    #[test]
    fn oversized_entries_are_dropped_and_counted() {
        let (q, rx) = queue(100, 1 << 20);
        let mut s = scrape(q, ScrapeFormat::Json, 200);
        let counters = OutputCounters::default();
        let long = format!(
            "{{\"msg\":\"{}\"}}\n{{\"msg\":\"short\"}}\n",
            "x".repeat(300)
        );
        s.feed(long.as_bytes(), false, Stream::Stdout, &counters);
        let batches: Vec<Batch> = rx.try_iter().collect();
        assert_eq!(batches.iter().map(|b| b.ends.len()).sum::<usize>(), 1);
        assert_eq!(counters.dropped_size.load(Relaxed), 1);
    }
}
