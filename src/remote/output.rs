//! A remote command's captured output: both streams capped (with truncation
//! flags), the order in which they arrived, and readers' cursors that turn it
//! into lines for SSE, live or replayed.

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The SSE event name.
    #[must_use]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A command's captured output: both streams capped, plus the order in which
/// runs of bytes arrived on them (one entry per switch between streams), so
/// the SSE replay interleaves lines as they were produced.
#[derive(Debug, Default)]
pub(crate) struct Output {
    cap: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    order: Vec<(Stream, usize)>,
}

impl Output {
    /// Empty, keeping at most `cap` bytes per stream.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Whether `stream` reached the cap: what follows is only discarded.
    #[must_use]
    pub(crate) fn full(&self, stream: Stream) -> bool {
        self.bytes(stream).len() >= self.cap
    }

    /// Flags `stream` as truncated (output arrived past the cap).
    pub(crate) fn truncate(&mut self, stream: Stream) {
        match stream {
            Stream::Stdout => self.stdout_truncated = true,
            Stream::Stderr => self.stderr_truncated = true,
        }
    }

    /// Frees spare capacity once nothing more will be appended; returns the
    /// bytes kept (what a retained result costs).
    pub(crate) fn seal(&mut self) -> usize {
        self.stdout.shrink_to_fit();
        self.stderr.shrink_to_fit();
        self.order.shrink_to_fit();
        self.stdout.len()
            + self.stderr.len()
            + self.order.len() * std::mem::size_of::<(Stream, usize)>()
    }

    /// Appends what fits under the cap; the rest is dropped and flagged.
    /// Returns whether anything was appended.
    pub(crate) fn append(&mut self, stream: Stream, data: &[u8]) -> bool {
        let cap = self.cap;
        let (buf, truncated) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.stdout_truncated),
            Stream::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
        };
        let take = cap.saturating_sub(buf.len()).min(data.len());
        if take < data.len() {
            *truncated = true;
        }
        if take == 0 {
            return false;
        }
        if buf.capacity() - buf.len() < take {
            // Grow geometrically but never past the cap.
            let want = (buf.len() + take)
                .max(buf.capacity() * 2)
                .max(4096)
                .min(cap);
            buf.reserve_exact(want.saturating_sub(buf.len()));
        }
        buf.extend_from_slice(&data[..take]);
        let end = buf.len();
        match self.order.last_mut() {
            Some((s, e)) if *s == stream => *e = end,
            _ => self.order.push((stream, end)),
        }
        true
    }

    /// Whether output of `stream` was dropped at the cap.
    #[must_use]
    pub(crate) fn truncated(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout_truncated,
            Stream::Stderr => self.stderr_truncated,
        }
    }

    /// The captured bytes of one stream.
    #[must_use]
    pub(crate) fn bytes(&self, stream: Stream) -> &[u8] {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

/// A reader's position in an [`Output`], producing complete lines in arrival
/// order; [`LineCursor::flush`] gives the unterminated tails at the end.
/// Each byte is scanned for `\n` once per reader (`scanned`), so following
/// a long line that arrives in pieces costs time linear in its length.
#[derive(Debug, Default)]
pub(crate) struct LineCursor {
    index: usize,
    /// Per stream: where the next line starts.
    emitted: [usize; 2],
    /// Per stream: how far the bytes were searched for a newline.
    scanned: [usize; 2],
}

fn slot(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LineCursor {
    /// Complete lines not yet returned, without their `\n`.
    pub(crate) fn advance(&mut self, out: &Output) -> Vec<(Stream, String)> {
        let mut lines = Vec::new();
        for &(stream, end) in out.order.iter().skip(self.index) {
            let buf = out.bytes(stream);
            let i = slot(stream);
            let (from, scanned) = (&mut self.emitted[i], &mut self.scanned[i]);
            loop {
                let start = (*scanned).max(*from);
                match buf
                    .get(start..end)
                    .and_then(|b| b.iter().position(|c| *c == b'\n'))
                {
                    Some(nl) => {
                        let at = start + nl;
                        lines.push((
                            stream,
                            String::from_utf8_lossy(&buf[*from..at]).into_owned(),
                        ));
                        *from = at + 1;
                        *scanned = at + 1;
                    }
                    None => {
                        *scanned = end.max(*scanned);
                        break;
                    }
                }
            }
        }
        // The last run may still grow; it is scanned again next time.
        self.index = out.order.len().saturating_sub(1);
        lines
    }

    /// The unterminated last line of each stream.
    pub(crate) fn flush(&mut self, out: &Output) -> Vec<(Stream, String)> {
        let mut lines = self.advance(out);
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = out.bytes(stream);
            let from = &mut self.emitted[slot(stream)];
            if *from < buf.len() {
                lines.push((stream, String::from_utf8_lossy(&buf[*from..]).into_owned()));
                *from = buf.len();
                self.scanned[slot(stream)] = buf.len();
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_lines_keep_their_order() {
        let mut out = Output::new(10);
        out.append(Stream::Stdout, b"ab");
        out.append(Stream::Stderr, b"x\n");
        out.append(Stream::Stdout, b"c\nd");
        let mut cursor = LineCursor::default();
        assert_eq!(
            cursor.advance(&out),
            vec![
                (Stream::Stderr, "x".to_owned()),
                (Stream::Stdout, "abc".to_owned())
            ]
        );
        out.append(Stream::Stdout, b"e\nfghijkl");
        assert!(out.stdout_truncated);
        assert_eq!(out.bytes(Stream::Stdout), b"abc\nde\nfgh");
        assert_eq!(
            cursor.advance(&out),
            vec![(Stream::Stdout, "de".to_owned())]
        );
        assert_eq!(cursor.flush(&out), vec![(Stream::Stdout, "fgh".to_owned())]);
        assert!(cursor.flush(&out).is_empty());
        // A second reader replays everything in the same order.
        let mut replay = LineCursor::default();
        let all: Vec<String> = replay.flush(&out).into_iter().map(|(_, l)| l).collect();
        assert_eq!(all, ["x", "abc", "de", "fgh"]);
        assert!(out.full(Stream::Stdout) && !out.full(Stream::Stderr));
        assert!(
            !out.append(Stream::Stdout, b"more"),
            "nothing fits any more"
        );
    }

    /// A long line arriving byte by byte is scanned once, not once per
    /// piece: the cursor's scan position only moves forward.
    #[test]
    fn a_long_line_in_pieces_is_scanned_linearly() {
        let mut out = Output::new(1 << 20);
        let mut cursor = LineCursor::default();
        for _ in 0..1000 {
            out.append(Stream::Stdout, b"y");
            assert!(cursor.advance(&out).is_empty());
            assert_eq!(cursor.scanned[0], out.bytes(Stream::Stdout).len());
        }
        out.append(Stream::Stderr, b"e\n");
        out.append(Stream::Stdout, b"z\nrest");
        assert_eq!(
            cursor.advance(&out),
            vec![
                (Stream::Stderr, "e".to_owned()),
                (Stream::Stdout, format!("{}z", "y".repeat(1000)))
            ]
        );
        assert_eq!(
            cursor.flush(&out),
            vec![(Stream::Stdout, "rest".to_owned())]
        );
        let mut sealed = Output::new(100);
        sealed.append(Stream::Stdout, b"abc");
        assert!(sealed.seal() >= 3);
    }
}
