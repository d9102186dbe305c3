//! Which hook scripts the `exec` hook may run: only what the operator
//! installed, in the manner of sshd's `StrictModes`. The hooks directory,
//! every directory above it, each `<event>.d` folder and each script must be
//! owned by a trusted uid (root or the executor's own uid; also the task's
//! user when hooks run as that user) and must not be writable by group or
//! others — except a directory above the hooks directory that is sticky
//! (`/tmp`), where nobody else may rename or remove what a trusted uid owns.
//! A script that is a symlink must resolve inside the hooks directory.
//!
//! So a task running as another user can neither drop, replace or rename a
//! script, nor swap a directory on the way to it, nor point a link at a
//! program elsewhere: whatever it planted is refused, with an error naming
//! the file, before anything runs.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// What a file or directory is, for [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Owner uid.
    pub(crate) uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub(crate) mode: u32,
    /// Whether it is a directory.
    pub(crate) dir: bool,
}

impl Entry {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            dir: meta.is_dir(),
        }
    }
}

/// Where an entry sits: above the hooks directory, or the hooks tree itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A directory on the way to the hooks directory (`/`, `/srv`, …).
    Ancestor,
    /// The hooks directory, an `<event>.d` folder or a script.
    Hooks,
}

/// Why an entry is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Why {
    #[error("it is owned by uid {uid}, not by a trusted uid ({trusted})")]
    Owner { uid: u32, trusted: String },
    #[error("it is writable by its group or by others (mode {mode:04o})")]
    Writable { mode: u32 },
    #[error("it is a symlink that resolves outside the hooks directory, to {0}")]
    Escapes(PathBuf),
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it cannot be inspected: {0}")]
    Unreadable(String),
}

/// A refused hook file: the file and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to run hooks from {}: {why} (hook files must belong to root or the executor's user and be writable by their owner only)", path.display())]
pub(crate) struct Untrusted {
    /// The offending file or directory.
    pub(crate) path: PathBuf,
    /// What is wrong with it.
    pub(crate) why: Why,
}

/// Whether `entry` may be trusted at `place`, given the trusted owners.
pub(crate) fn judge(entry: Entry, place: Place, trusted: &[u32]) -> Result<(), Why> {
    if !trusted.contains(&entry.uid) {
        return Err(Why::Owner {
            uid: entry.uid,
            trusted: trusted
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let writable = entry.mode & 0o022 != 0;
    let sticky_dir = entry.dir && entry.mode & 0o1000 != 0;
    if writable && !(place == Place::Ancestor && sticky_dir) {
        return Err(Why::Writable { mode: entry.mode });
    }
    Ok(())
}

/// The trusted owners: root, the executor's uid, and `extra` (the task's
/// user when hooks run as that user).
pub(crate) fn trusted_uids(extra: Option<u32>) -> Vec<u32> {
    let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
    uids.extend(extra);
    uids.sort_unstable();
    uids.dedup();
    uids
}

fn metadata(path: &Path) -> Result<Entry, Untrusted> {
    std::fs::metadata(path)
        .map(|m| Entry::of(&m))
        .map_err(|e| Untrusted {
            path: path.to_path_buf(),
            why: Why::Unreadable(e.to_string()),
        })
}

fn check(path: &Path, place: Place, trusted: &[u32]) -> Result<Entry, Untrusted> {
    let entry = metadata(path)?;
    judge(entry, place, trusted).map_err(|why| Untrusted {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(entry)
}

/// Checks the hooks directory (given as configured) and every directory
/// above it; returns its canonical path, under which every script must lie.
pub(crate) fn check_hooks_dir(dir: &Path, trusted: &[u32]) -> Result<PathBuf, Untrusted> {
    let canonical = dir.canonicalize().map_err(|e| Untrusted {
        path: dir.to_path_buf(),
        why: Why::Unreadable(e.to_string()),
    })?;
    for ancestor in canonical.ancestors().skip(1) {
        check(ancestor, Place::Ancestor, trusted)?;
    }
    check(&canonical, Place::Hooks, trusted)?;
    Ok(canonical)
}

/// Checks an `<event>.d` folder or a script inside the canonical hooks
/// directory `root`: a symlink must resolve inside `root`, and the file it
/// names (or the file itself) must be trusted. Returns the resolved path,
/// which is what runs, so a link cannot be swapped in between.
pub(crate) fn check_inside(
    path: &Path,
    root: &Path,
    trusted: &[u32],
) -> Result<PathBuf, Untrusted> {
    let resolved = path.canonicalize().map_err(|e| Untrusted {
        path: path.to_path_buf(),
        why: Why::Unreadable(e.to_string()),
    })?;
    if !resolved.starts_with(root) || resolved == root {
        return Err(Untrusted {
            path: path.to_path_buf(),
            why: Why::Escapes(resolved),
        });
    }
    // Every directory between the hooks directory and the file (a link may
    // lead into a deeper folder).
    for dir in resolved.ancestors().skip(1).take_while(|d| *d != root) {
        check(dir, Place::Hooks, trusted)?;
    }
    check(&resolved, Place::Hooks, trusted)?;
    Ok(resolved)
}

/// Checks a script (see [`check_inside`]) and that it is a regular file.
pub(crate) fn check_script(
    path: &Path,
    root: &Path,
    trusted: &[u32],
) -> Result<PathBuf, Untrusted> {
    let resolved = check_inside(path, root, trusted)?;
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => Ok(resolved),
        _ => Err(Untrusted {
            path: path.to_path_buf(),
            why: Why::NotAFile,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(uid: u32, mode: u32, dir: bool) -> Entry {
        Entry { uid, mode, dir }
    }

    #[test]
    fn owners_and_modes_are_judged_like_strict_modes() {
        let trusted = [0, 1000];
        assert_eq!(judge(e(0, 0o755, false), Place::Hooks, &trusted), Ok(()));
        assert_eq!(judge(e(1000, 0o700, true), Place::Hooks, &trusted), Ok(()));
        assert!(matches!(
            judge(e(65534, 0o755, false), Place::Hooks, &trusted),
            Err(Why::Owner { uid: 65534, .. })
        ));
        for mode in [0o775, 0o757, 0o777] {
            assert_eq!(
                judge(e(0, mode, false), Place::Hooks, &trusted),
                Err(Why::Writable { mode })
            );
        }
        // A sticky world-writable directory (/tmp) is fine above the hooks
        // directory, never as part of it.
        assert_eq!(judge(e(0, 0o1777, true), Place::Ancestor, &trusted), Ok(()));
        assert!(judge(e(0, 0o1777, true), Place::Hooks, &trusted).is_err());
        assert!(judge(e(0, 0o777, true), Place::Ancestor, &trusted).is_err());
        assert!(judge(e(0, 0o1777, false), Place::Ancestor, &trusted).is_err());
    }

    #[test]
    fn links_must_stay_inside_and_files_must_be_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let root_path = root.path().canonicalize().expect("canonical");
        let trusted = trusted_uids(None);
        let event = root_path.join("before-start.d");
        std::fs::create_dir(&event).expect("mkdir");
        let script = event.join("10-ok");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            check_script(&script, &root_path, &trusted).ok(),
            Some(script.clone())
        );
        std::os::unix::fs::symlink(&script, event.join("20-link")).expect("link");
        assert_eq!(
            check_script(&event.join("20-link"), &root_path, &trusted).ok(),
            Some(script.clone())
        );
        std::os::unix::fs::symlink("/bin/sh", event.join("30-out")).expect("link");
        let err = check_script(&event.join("30-out"), &root_path, &trusted).expect_err("escapes");
        assert!(matches!(err.why, Why::Escapes(_)), "{err}");
        assert!(err.to_string().contains("30-out"), "{err}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = check_script(&script, &root_path, &trusted).expect_err("writable");
        assert!(err.to_string().contains("10-ok"), "{err}");
        assert!(
            err.to_string()
                .contains("writable by its group or by others"),
            "{err}"
        );
    }
}
