//! Keeping the executor's secrets inside the executor process.
//!
//! The task, hook scripts and remote commands usually run as the executor's
//! own uid (or as root's children): without care they could read the agent's
//! token, Consul's token and the remote API token from
//! `/proc/<executor>/environ`, or from its memory through `/proc/<pid>/mem`.
//! Two measures, both at start:
//! - [`make_undumpable`]: `PR_SET_DUMPABLE` 0, before any secret is read. The
//!   kernel then owns `/proc/<pid>/{environ,mem,…}` by root and refuses
//!   ptrace attach to anyone without `CAP_SYS_PTRACE`, same uid included.
//!   It is reset by `execve`, so children are unaffected.
//! - [`scrub_secrets`]: after the configuration is read, every
//!   [`Kind::Secret`] variable's value is overwritten in place in the
//!   process's environment block (what `/proc/<pid>/environ` shows, even
//!   after `unsetenv`) and the variable is unset. The task's, hooks' and
//!   remote commands' environments are built from the configuration's copy
//!   ([`super::Config::environment`]), never from the live block.
//!
//! Root (or a process with `CAP_SYS_PTRACE`) can still read everything; see
//! docs/security.md.
//!
//! A third, [`close_inherited_on_exec`], keeps descriptors the executor was
//! started with (beyond stdin, stdout and stderr) from reaching the task,
//! hooks and remote commands.

use std::{ffi::CStr, io};

use super::variables::{Kind, VARIABLES};

/// Marks the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`).
pub fn make_undumpable() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)
}

/// Marks every descriptor above stderr close-on-exec: whatever the process
/// that started us left open (a pipe, a socket of its own) stays ours and
/// reaches no program we start. Returns how many were marked.
pub fn close_inherited_on_exec() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    let mut marked = 0;
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a number: a closed one (the directory's
        // own descriptor, gone by now) fails with EBADF and is skipped.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                marked += 1;
            }
        }
    }
    marked
}

/// Whether the process is dumpable (for tests and diagnostics).
#[must_use]
pub fn is_dumpable() -> bool {
    nix::sys::prctl::get_dumpable().unwrap_or(true)
}

/// The names (and second names) of every secret variable.
fn secret_names() -> Vec<&'static str> {
    VARIABLES
        .iter()
        .filter(|v| v.kind == Kind::Secret)
        .flat_map(|v| std::iter::once(v.name).chain(v.also_read_as.iter().map(|a| a.name)))
        .collect()
}

extern "C" {
    /// The C library's environment block.
    static mut environ: *mut *mut libc::c_char;
}

/// Overwrites the value of every secret variable in the environment block
/// with NUL bytes and unsets it. Must run before any other thread exists
/// (it writes the block std and libc read without a lock of ours).
pub fn scrub_secrets() {
    let names = secret_names();
    // SAFETY: single-threaded at start (see above); `environ` is a
    // NULL-terminated array of NUL-terminated strings owned by libc (the
    // initial ones live on the stack the kernel set up, which is writable).
    // Each write stays inside the string's own bytes, before its NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = *entry;
            let bytes = CStr::from_ptr(text).to_bytes();
            if let Some(eq) = bytes.iter().position(|b| *b == b'=') {
                let name = &bytes[..eq];
                if names.iter().any(|n| n.as_bytes() == name) {
                    let value_len = bytes.len() - eq - 1;
                    std::ptr::write_bytes(text.add(eq + 1), 0, value_len);
                }
            }
            entry = entry.add(1);
        }
    }
    for name in names {
        // SAFETY (edition 2024 wording): no other thread reads the
        // environment yet.
        std::env::remove_var(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // SAFETY: dup of stdin and fcntl on the copy, closed at the end.
        unsafe {
            let fd = libc::dup(0);
            assert!(fd > 2);
            assert_eq!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert!(close_inherited_on_exec() >= 1);
            assert_ne!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            libc::close(fd);
        }
    }

    #[test]
    fn every_secret_variable_is_scrubbed() {
        let names = secret_names();
        for want in [
            "MESOS_EXECUTOR_AUTHENTICATION_TOKEN",
            "CONSUL_HTTP_TOKEN",
            "HOOK_EXECUTOR_REMOTE_TOKEN",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.contains(&"MESOS_FRAMEWORK_ID"));
    }
}
