//! The executor's own log output, crash-only: a log line that cannot be
//! written (sandbox disk full, stderr a closed pipe) is dropped and counted,
//! never an error and never a panic. `tracing_subscriber`'s formatter would
//! otherwise report a failed write with `eprintln!`, which panics when stderr
//! itself is what failed, and `panic = "abort"` would take the task's
//! terminal update with it.
//!
//! Every writer of ours goes through here: the text and JSON log layers
//! ([`LossyStderr`]) and the few lines printed before logging is set up
//! ([`print_stderr`], [`print_stdout`]). It uses nothing else of the crate.

use std::{
    io::{self, Write},
    sync::atomic::{AtomicU64, Ordering},
};

/// Log writes dropped since start (each failed write counts once).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log writes have been dropped because they failed.
#[must_use]
pub fn dropped_writes() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes `bytes` to `out` and flushes; a failure is counted, not returned.
fn write_lossy(mut out: impl Write, bytes: &[u8]) {
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints `text` and a newline on stderr, dropping it (counted) on failure:
/// `eprintln!` panics instead.
pub fn print_stderr(text: &str) {
    write_lossy(io::stderr().lock(), format!("{text}\n").as_bytes());
}

/// Prints `text` on stdout as is, dropping it (counted) on failure:
/// `print!` panics instead (e.g. `--help | head -1` closes the pipe).
pub fn print_stdout(text: &str) {
    write_lossy(io::stdout().lock(), text.as_bytes());
}

/// A `tracing_subscriber` writer for stderr that never fails: each event is
/// one `write_all` of a whole formatted line, and a failed one is dropped
/// and counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

/// The per-event handle [`LossyStderr`] makes.
#[derive(Debug)]
pub struct LossyLine(io::Stderr);

impl Write for LossyLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over a whole line at once (`write_all`): take it
        // all or drop it all, and report success either way.
        write_lossy(self.0.lock(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyLine;

    fn make_writer(&'a self) -> Self::Writer {
        LossyLine(io::stderr())
    }
}

/// Makes sure a write to a closed pipe is an `EPIPE` error, never a fatal
/// signal. The Rust runtime already ignores SIGPIPE in `main`; this says so
/// explicitly, so that nothing (a library, a changed build flag such as
/// `-Zon-broken-pipe=kill`) can make a closed stderr kill the executor.
/// Children get SIGPIPE back at its default (std and our spawn paths reset it).
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no handler to
    // be unsafe about; it is done once at start, before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails like a full disk.
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_returned() {
        let before = dropped_writes();
        write_lossy(Full, b"a line\n");
        write_lossy(Full, b"another\n");
        assert!(dropped_writes() >= before + 2);
        let mut ok = Vec::new();
        let counted = dropped_writes();
        write_lossy(&mut ok, b"kept\n");
        assert_eq!(ok, b"kept\n");
        // Other tests may drop concurrently; a successful write never counts.
        assert!(dropped_writes() >= counted);
    }
}
