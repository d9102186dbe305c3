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
    entry::Stream,
    parse,
    rotate::SandboxFile,
};

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

/// One line waiting to be shipped.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) text: Vec<u8>,
    pub(crate) stream: Stream,
    pub(crate) read_at: SystemTime,
    pub(crate) truncated: bool,
}

/// The producer side of the bounded queue: bounded in lines (the channel)
/// and in bytes (`bytes`, shared with the shipper, which gives them back).
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) tx: SyncSender<Queued>,
    pub(crate) bytes: Arc<AtomicUsize>,
    pub(crate) max_bytes: usize,
}

impl Queue {
    /// Offers a line; drops it (counted) when the queue is full.
    fn offer(&self, line: Queued, counters: &OutputCounters) {
        let len = line.text.len();
        if self.bytes.fetch_add(len, Relaxed) + len > self.max_bytes {
            self.bytes.fetch_sub(len, Relaxed);
            add(&counters.dropped_queue_full, 1);
            return;
        }
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.bytes.fetch_sub(len, Relaxed);
                add(&counters.dropped_queue_full, 1);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(len, Relaxed);
                add(&counters.dropped_at_exit, 1);
            }
        }
    }
}

/// The scraping side of a drain.
pub(crate) struct Scrape {
    pub(crate) splitter: Splitter,
    pub(crate) queue: Queue,
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
            let read_at = SystemTime::now();
            let queue = &s.queue;
            s.splitter.feed(data, &mut |line, truncated| {
                offer_line(queue, line, truncated, stream, read_at, counters);
            });
        }
    }
    if let Some(s) = scrape.as_mut() {
        let read_at = SystemTime::now();
        let queue = &s.queue;
        s.splitter.finish(&mut |line, truncated| {
            offer_line(queue, line, truncated, stream, read_at, counters);
        });
    }
}

fn offer_line(
    queue: &Queue,
    line: &[u8],
    truncated: bool,
    stream: Stream,
    read_at: SystemTime,
    counters: &OutputCounters,
) {
    if parse::trim(line).is_empty() {
        return;
    }
    add(&counters.lines, 1);
    if truncated {
        add(&counters.truncated, 1);
    }
    queue.offer(
        Queued {
            text: line.to_vec(),
            stream,
            read_at,
            truncated,
        },
        counters,
    );
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let queue = Queue {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: 1 << 20,
        };
        let counters = OutputCounters::default();
        for _ in 0..5 {
            offer_line(
                &queue,
                b"line",
                false,
                Stream::Stdout,
                SystemTime::now(),
                &counters,
            );
        }
        offer_line(
            &queue,
            b"   ",
            false,
            Stream::Stdout,
            SystemTime::now(),
            &counters,
        );
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(counters.lines.load(Relaxed), 5, "blank lines are not lines");
        assert_eq!(counters.dropped_queue_full.load(Relaxed), 3);
        let small = Queue {
            max_bytes: 6,
            ..queue.clone()
        };
        queue.bytes.store(0, Relaxed);
        offer_line(
            &small,
            b"12345",
            false,
            Stream::Stdout,
            SystemTime::now(),
            &counters,
        );
        offer_line(
            &small,
            b"12345",
            false,
            Stream::Stdout,
            SystemTime::now(),
            &counters,
        );
        assert_eq!(
            counters.dropped_queue_full.load(Relaxed),
            4,
            "the byte bound holds too"
        );
    }
}
