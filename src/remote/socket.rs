//! The Unix socket's file: binding it safely, and reaching it when its path is
//! longer than `sun_path` allows.
//!
//! # Long paths
//! A socket address holds at most 107 bytes of path, and Mesos sandbox paths
//! (`<work_dir>/slaves/<id>/frameworks/<id>/executors/<id>/runs/<uuid>`) often
//! exceed that. Path resolution is not limited that way, so for a long path we
//! open the socket's directory with `O_PATH` and use
//! `/proc/self/fd/<fd>/<name>`: the kernel follows the magic link to the
//! directory for `bind` and `connect` alike. Clients do the same
//! ([`ShortPath`], used by `executorctl` and the tests); from a shell,
//! `cd` into the sandbox and use the relative path `./executor.sock`.
//!
//! # Hygiene (style practice 17)
//! A socket file that accepts a connection belongs to a live server and is
//! never stolen; one that refuses (`ECONNREFUSED`) is a dead executor's and is
//! replaced; anything that is not a socket is left alone. The file's mode is
//! set between `bind` and `listen`, so no peer can connect before it is
//! right. On exit the file is removed only if it is still the one we created.

use std::{
    fs, io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

/// Longest path `sun_path` takes (108 bytes including the terminating NUL).
pub(crate) const SUN_PATH_MAX: usize = 107;

/// A path usable in a socket address, standing for a possibly longer one.
/// Keep it alive while the path is used: it may hold the directory's fd.
#[derive(Debug)]
pub struct ShortPath {
    path: PathBuf,
    /// The `O_PATH` descriptor `/proc/self/fd/<n>` refers to.
    _dir: Option<OwnedFd>,
}

impl ShortPath {
    /// Wraps `path`, going through `/proc/self/fd` when it is too long.
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(Self {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", parent.display())))?
            .into();
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        if short.as_os_str().len() > SUN_PATH_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the socket's file name {name:?} is too long even for the /proc/self/fd form"
                ),
            ));
        }
        Ok(Self {
            path: short,
            _dir: Some(dir),
        })
    }

    /// The path to give `bind` or `connect`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    /// Another live server answers on the path.
    #[error("{0} is in use by a live server (not taking it over)")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket (not removing it)")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{context} {path}: {cause}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        cause: io::Error,
    },
}

fn io_err<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |cause| BindError::Io {
        context,
        path: path.to_path_buf(),
        cause,
    }
}

/// A bound socket file; [`BoundSocket::remove`] deletes it if it is still ours.
/// Call it while the listener is still open: the open socket pins the file's
/// inode, so its number cannot have been reused by a replacement.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    /// The full path.
    pub(crate) path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Removes the socket file unless another one replaced it meanwhile.
    pub(crate) fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), cause = %e, "could not remove the remote API socket");
                }
            }
            _ => {
                tracing::debug!(path = %self.path.display(), "the remote API socket was already replaced or removed")
            }
        }
    }
}

/// Whether a server accepts connections at `path`: `Ok` if one does (or its
/// backlog is full, which only a live server has), `ECONNREFUSED` if the file
/// is a dead server's. Non-blocking, so a busy server cannot stall our start.
fn probe(path: &Path) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    match socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Binds a listening Unix socket at `path` with `mode`, replacing a stale
/// socket file (see the module docs).
pub(crate) fn bind(
    path: &Path,
    mode: u32,
) -> Result<(std::os::unix::net::UnixListener, BoundSocket), BindError> {
    let short = ShortPath::new(path).map_err(io_err("resolving", path))?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match probe(short.path()) {
            Ok(()) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "replacing a stale socket file left by a dead server");
                fs::remove_file(path).map_err(io_err("removing the stale socket", path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BindError::Io {
                    context: "probing the existing socket",
                    path: path.to_path_buf(),
                    cause: e,
                })
            }
        },
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BindError::Io {
                context: "inspecting",
                path: path.to_path_buf(),
                cause: e,
            })
        }
    }
    let errno = |context: &'static str| {
        move |e: nix::errno::Errno| BindError::Io {
            context,
            path: path.to_path_buf(),
            cause: e.into(),
        }
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(errno("creating a socket for"))?;
    let addr = UnixAddr::new(short.path()).map_err(errno("addressing"))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(errno("binding"))?;
    let bound = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
    let bound = BoundSocket {
        path: path.to_path_buf(),
        dev: bound.dev(),
        ino: bound.ino(),
    };
    // Nobody can connect before listen(), so the mode is right from the first peer on.
    if let Err(cause) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        bound.remove();
        return Err(BindError::Io {
            context: "setting the mode of",
            path: path.to_path_buf(),
            cause,
        });
    }
    let backlog = Backlog::new(1024).unwrap_or(Backlog::MAXCONN);
    if let Err(e) = socket::listen(&fd, backlog) {
        bound.remove();
        return Err(errno("listening on")(e));
    }
    Ok((std::os::unix::net::UnixListener::from(fd), bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_dir(root: &Path) -> PathBuf {
        let mut dir = root.to_path_buf();
        while dir.as_os_str().len() < 220 {
            dir.push("a-rather-long-directory-name-like-mesos-uses");
        }
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn binds_and_connects_past_the_sun_path_limit() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = long_dir(root.path()).join("executor.sock");
        assert!(path.as_os_str().len() > 200);
        let (listener, bound) = bind(&path, 0o600).expect("binds");
        assert_eq!(
            fs::metadata(&path).expect("exists").permissions().mode() & 0o777,
            0o600
        );
        let short = ShortPath::new(&path).expect("short");
        assert!(short.path().as_os_str().len() <= SUN_PATH_MAX);
        std::os::unix::net::UnixStream::connect(short.path()).expect("connects");
        drop(listener);
        drop(bound);
        // Now stale: a new bind replaces it.
        let (_again, bound2) = bind(&path, 0o600).expect("replaces the stale socket");
        // Someone removes ours and binds their own while ours still listens:
        // our cleanup must leave theirs alone (our inode is pinned by our
        // listener, so theirs differs).
        fs::remove_file(&path).expect("remove");
        let (_theirs, bound3) = bind(&path, 0o600).expect("binds");
        bound2.remove();
        assert!(path.exists());
        bound3.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_is_not_stolen_and_other_files_are_left_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("executor.sock");
        let (_live, _bound) = bind(&path, 0o600).expect("binds");
        assert!(matches!(bind(&path, 0o600), Err(BindError::InUse(_))));
        let file = root.path().join("plain");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(bind(&file, 0o600), Err(BindError::NotASocket(_))));
        assert!(file.exists());
    }
}
