//! The executor's own stdout and stderr (the sandbox's `stdout` and `stderr`
//! files with the agent's default container logger) as the destination of
//! the task's output, with optional rotation by size: `stdout` is renamed
//! `stdout.1` (newest rotated), `stdout.1` becomes `stdout.2`, … up to the
//! kept count, as the Mesos logrotate module names them; a fresh `stdout` is
//! then opened and put in place of the executor's descriptor (`dup2`), so the
//! executor's own log lines on stderr follow too.
//!
//! Rotation happens only when the descriptor is a regular file in the
//! sandbox: when the agent gave us a pipe to a logger of its own (the
//! logrotate module, journald), that logger owns rotation.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

/// Why a descriptor is not rotated by us.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotRotatable {
    /// Not a regular file (a pipe or a terminal: another logger owns it).
    #[error("it is not a regular file (the agent's container logger owns it)")]
    NotAFile,
    /// A regular file, elsewhere than the sandbox.
    #[error("{} is not in the sandbox", .0.display())]
    Elsewhere(PathBuf),
    /// The descriptor could not be inspected.
    #[error("cannot inspect it")]
    Inspect(#[source] io::Error),
}

/// Whether `file` lies directly in one of `dirs` (compared canonically).
pub(crate) fn in_sandbox(file: &Path, dirs: &[PathBuf]) -> bool {
    let Some(parent) = file.parent().and_then(|p| p.canonicalize().ok()) else {
        return false;
    };
    dirs.iter()
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| d == parent)
}

/// The path of `fd` if we may rotate it: a regular file in the sandbox.
pub(crate) fn rotation_path(fd: RawFd, sandbox_dirs: &[PathBuf]) -> Result<PathBuf, NotRotatable> {
    // SAFETY: fstat into a zeroed struct; `fd` is one of our own descriptors.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(NotRotatable::Inspect(io::Error::last_os_error()));
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(NotRotatable::NotAFile);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(NotRotatable::Inspect)?;
    if in_sandbox(&path, sandbox_dirs) {
        Ok(path)
    } else {
        Err(NotRotatable::Elsewhere(path))
    }
}

/// Where to cut `data` so that at most `room` bytes go to the current file:
/// after the last newline that fits, else nothing (`0`: rotate first) when
/// the file already holds something, else exactly `room` (a line longer than
/// the rotation size is split).
pub(crate) fn cut(data: &[u8], room: usize, file_empty: bool) -> usize {
    if data.len() <= room {
        return data.len();
    }
    match memchr::memrchr(b'\n', &data[..room]) {
        Some(i) => i + 1,
        None if file_empty => room,
        None => 0,
    }
}

/// Rotation settings and the current file's size.
#[derive(Debug)]
struct Rotation {
    path: PathBuf,
    size: u64,
    keep: usize,
}

/// One of the executor's own output descriptors (1 or 2), written whole.
#[derive(Debug)]
pub(crate) struct SandboxFile {
    fd: RawFd,
    rotation: Option<Rotation>,
    /// Rotations done.
    pub(crate) rotations: u64,
}

impl SandboxFile {
    /// Writes to `fd` as it is.
    pub(crate) fn plain(fd: RawFd) -> Self {
        Self {
            fd,
            rotation: None,
            rotations: 0,
        }
    }

    /// Writes to `fd` (the file at `path`), rotating at `size`, keeping `keep`.
    pub(crate) fn rotating(fd: RawFd, path: PathBuf, size: u64, keep: usize) -> Self {
        Self {
            fd,
            rotation: Some(Rotation {
                path,
                size: size.max(1),
                keep: keep.max(1),
            }),
            rotations: 0,
        }
    }

    /// Writes all of `data`, rotating on the way as needed.
    pub(crate) fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some(rotation) = &self.rotation else {
            return write_fd(self.fd, data);
        };
        let (size, keep, path) = (rotation.size, rotation.keep, rotation.path.clone());
        // The file's real length: the executor's own log lines count too.
        let mut len = current_len(self.fd)?;
        while !data.is_empty() {
            let room = usize::try_from(size.saturating_sub(len)).unwrap_or(usize::MAX);
            let take = if room == 0 {
                0
            } else {
                cut(data, room, len == 0)
            };
            if take == 0 {
                self.rotate(&path, keep)?;
                len = 0;
                continue;
            }
            write_fd(self.fd, &data[..take])?;
            len += take as u64;
            data = &data[take..];
            if len >= size {
                self.rotate(&path, keep)?;
                len = 0;
            }
        }
        Ok(())
    }

    fn rotate(&mut self, path: &Path, keep: usize) -> io::Result<()> {
        let numbered = |i: usize| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        for i in (1..keep).rev() {
            match std::fs::rename(numbered(i), numbered(i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(path, numbered(1))?;
        let fresh: OwnedFd = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)?
            .into();
        // SAFETY: both descriptors are open; dup2 replaces ours atomically.
        if unsafe { libc::dup2(fresh.as_raw_fd(), self.fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(fresh);
        self.rotations += 1;
        Ok(())
    }
}

fn current_len(fd: RawFd) -> io::Result<u64> {
    // SAFETY: `fd` is the executor's own stdout or stderr, open for its life.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    Ok(file.metadata()?.len())
}

/// `write(2)` until all of `data` is out (EINTR retried).
pub(crate) fn write_fd(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: a plain write of a live buffer to a descriptor we own.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[usize::try_from(n).unwrap_or(0)..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fd: &OwnedFd) -> RawFd {
        fd.as_raw_fd()
    }

    #[test]
    fn cuts_after_the_last_newline_that_fits() {
        assert_eq!(cut(b"abc\ndef\n", 100, false), 8, "all fits");
        assert_eq!(cut(b"abc\ndef\n", 6, false), 4, "the first line only");
        assert_eq!(
            cut(b"abcdefgh\n", 4, false),
            0,
            "rotate first, keep the line whole"
        );
        assert_eq!(
            cut(b"abcdefgh\n", 4, true),
            4,
            "longer than a whole file: split"
        );
    }

    #[test]
    fn rotates_with_mesos_names_sizes_and_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let file = std::fs::File::create(&path).expect("create");
        let fd: OwnedFd = file.into();
        let mut out = SandboxFile::rotating(raw(&fd), path.clone(), 100, 3);
        let mut all = Vec::new();
        for i in 0..60 {
            let line = format!("line {i:04} ........\n");
            all.extend_from_slice(line.as_bytes());
            out.write_all(line.as_bytes()).expect("write");
        }
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["stdout", "stdout.1", "stdout.2", "stdout.3"]);
        for name in &names {
            let content = read(name);
            assert!(content.len() <= 100, "{name}: {}", content.len());
            assert!(
                content.ends_with(b"\n") || content.is_empty(),
                "whole lines in {name}"
            );
        }
        // The newest data is in `stdout`, then `.1`, `.2`, `.3`: together the tail of all.
        let tail: Vec<u8> = ["stdout.3", "stdout.2", "stdout.1", "stdout"]
            .iter()
            .flat_map(|n| read(n))
            .collect();
        assert!(
            all.ends_with(&tail),
            "the kept files are the newest output, in order"
        );
        assert!(out.rotations > 3);
        // Writes still go to the fresh `stdout`, through the same descriptor.
        write_fd(raw(&fd), b"after\n").expect("write");
        assert!(read("stdout").ends_with(b"after\n"));
    }

    #[test]
    fn only_regular_files_in_the_sandbox_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let inside: OwnedFd = std::fs::File::create(dir.path().join("stdout"))
            .expect("f")
            .into();
        let outside: OwnedFd = std::fs::File::create(elsewhere.path().join("stdout"))
            .expect("f")
            .into();
        let dirs = [dir.path().to_path_buf()];
        assert!(rotation_path(raw(&inside), &dirs).is_ok());
        assert!(matches!(
            rotation_path(raw(&outside), &dirs),
            Err(NotRotatable::Elsewhere(_))
        ));
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        assert!(matches!(
            rotation_path(raw(&r), &dirs),
            Err(NotRotatable::NotAFile)
        ));
    }
}
