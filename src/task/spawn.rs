//! The task's root process through `posix_spawn(3)`: a new session, the
//! environment from empty, the sandbox as working directory and stdin from
//! `/dev/null`, exactly what [`super::process::task_command`] asks of a fork,
//! at a quarter of the cost (glibc spawns with `CLONE_VFORK`: no page tables
//! copied). That difference is most of LAUNCH → TASK_RUNNING.
//!
//! Only where glibc can do it all: `POSIX_SPAWN_SETSID` (glibc 2.26) and
//! `posix_spawn_file_actions_addchdir_np` (glibc 2.29, looked up at run time
//! so that the binary still starts on older glibc). Everything else — a user
//! switch, an older glibc, a program not found on `PATH` here, a script
//! without `#!` — returns `None` and the caller forks as before, with the same
//! error messages.

use std::{
    ffi::{c_char, c_int, CString},
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::launch::{find_on_path, LaunchSpec, Program};

type AddChdir = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const c_char) -> c_int;

/// glibc's `posix_spawn_file_actions_addchdir_np`, when this glibc has it.
fn addchdir() -> Option<AddChdir> {
    static FOUND: OnceLock<Option<AddChdir>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is the
        // function glibc documents with exactly this signature.
        let symbol = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addchdir_np".as_ptr(),
            )
        };
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, AddChdir>(symbol) })
    })
}

/// The executable `execvp` would run for `program` with `path_var` as `PATH`
/// (the task's own), or `None` when the fork path should decide.
fn executable(program: &str, path_var: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    find_on_path(program, path_var.unwrap_or("/bin:/usr/bin"), cwd)
}

fn cstring(s: impl AsRef<[u8]>) -> Option<CString> {
    CString::new(s.as_ref()).ok()
}

/// Owns a spawn attribute and file-action object and frees them.
struct Objects {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Drop for Objects {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `spawn_session` before `Objects`
        // was built.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

/// Starts the task's root process in a new session with `posix_spawn`, or
/// returns `None` when this glibc or this spec needs the fork path.
/// `output` (stdout, stderr) replaces the inherited descriptors.
pub(crate) fn spawn_session(
    spec: &LaunchSpec,
    output: Option<[c_int; 2]>,
) -> Option<io::Result<libc::pid_t>> {
    let chdir = addchdir()?;
    let (path, argv): (PathBuf, Vec<&str>) = match &spec.program {
        Program::Shell { command } => (PathBuf::from("/bin/sh"), vec!["/bin/sh", "-c", command]),
        Program::Exec { path, argv } => {
            let exe = executable(path, spec.env.get("PATH").map(String::as_str), &spec.cwd)?;
            let argv = if argv.is_empty() {
                vec![path.as_str()]
            } else {
                argv.iter().map(String::as_str).collect()
            };
            (exe, argv)
        }
    };
    let path = cstring(path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = argv.into_iter().map(cstring).collect::<Option<_>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .chain(spec.unshadowed_other_env().map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(entry)
        }))
        .collect::<Option<_>>()?;
    let cwd = cstring(spec.cwd.as_os_str().as_bytes())?;
    let mut argv_ptrs: Vec<*mut c_char> = argv
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let mut envp_ptrs: Vec<*mut c_char> = envp
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();

    // SAFETY: plain C calls on objects we own; every pointer outlives the
    // posix_spawn call (argv, envp, path and cwd live until the end of this
    // function); the objects are destroyed by `Objects::drop`.
    unsafe {
        let mut objects = Objects {
            attr: std::mem::zeroed(),
            actions: std::mem::zeroed(),
        };
        if libc::posix_spawnattr_init(&mut objects.attr) != 0 {
            return None;
        }
        if libc::posix_spawn_file_actions_init(&mut objects.actions) != 0 {
            libc::posix_spawnattr_destroy(&mut objects.attr);
            return None;
        }
        // As std does for its children: an empty signal mask, and SIGPIPE
        // (ignored by the Rust runtime) back to its default.
        let mut none: libc::sigset_t = std::mem::zeroed();
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        #[allow(clippy::cast_possible_truncation)]
        let flags = (libc::POSIX_SPAWN_SETSID as c_int
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        // An older glibc refuses POSIX_SPAWN_SETSID with EINVAL: fork instead.
        if libc::posix_spawnattr_setflags(&mut objects.attr, flags) != 0
            || libc::posix_spawnattr_setsigmask(&mut objects.attr, &none) != 0
            || libc::posix_spawnattr_setsigdefault(&mut objects.attr, &pipe) != 0
            || libc::posix_spawn_file_actions_addopen(
                &mut objects.actions,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ) != 0
            || chdir(&mut objects.actions, cwd.as_ptr()) != 0
            || output.is_some_and(|[out, err]| {
                libc::posix_spawn_file_actions_adddup2(&mut objects.actions, out, 1) != 0
                    || libc::posix_spawn_file_actions_adddup2(&mut objects.actions, err, 2) != 0
            })
        {
            return None;
        }
        let mut pid: libc::pid_t = 0;
        let rc = libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &objects.actions,
            &objects.attr,
            argv_ptrs.as_mut_ptr(),
            envp_ptrs.as_mut_ptr(),
        );
        match rc {
            0 => Some(Ok(pid)),
            // A script without `#!`: execvp runs it with /bin/sh; so does the fork path.
            libc::ENOEXEC => None,
            errno => Some(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::launch::CommandSource;

    /// What the fork path gives a task, the spawn gives too: its own session,
    /// the sandbox as cwd, stdin from /dev/null, exactly the given
    /// environment, no blocked signals and SIGPIPE at its default.
    #[test]
    fn the_task_gets_a_session_its_cwd_stdin_and_environment() {
        let sandbox = tempfile::tempdir().expect("tempdir");
        let script = "set -e; \
            awk '{print $6}' /proc/self/stat > sid; echo $$ > pid; pwd > cwd; readlink /proc/self/fd/0 > stdin; env > env; \
            grep -E '^(SigBlk|SigIgn)' /proc/self/status > signals";
        let spec = LaunchSpec {
            program: Program::Shell {
                command: script.into(),
            },
            env: [
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
                ("ONLY".to_owned(), "this".to_owned()),
            ]
            .into_iter()
            .collect(),
            other_env: Vec::new(),
            cwd: sandbox.path().to_path_buf(),
            user: None,
            source: CommandSource::TaskCommand,
        };
        let pid = spawn_session(&spec, None)
            .expect("glibc can spawn with SETSID here")
            .expect("spawned");
        let status =
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("waitpid");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        let read = |name: &str| {
            std::fs::read_to_string(sandbox.path().join(name))
                .expect(name)
                .trim()
                .to_owned()
        };
        assert_eq!(read("sid"), read("pid"), "the task leads its own session");
        assert_eq!(
            Path::new(&read("cwd")).canonicalize().ok(),
            sandbox.path().canonicalize().ok()
        );
        assert_eq!(read("stdin"), "/dev/null");
        let env = read("env");
        assert!(env.lines().any(|l| l == "ONLY=this"), "{env}");
        assert!(
            !env.lines()
                .any(|l| l.starts_with("HOME=") || l.starts_with("CARGO")),
            "nothing inherited: {env}"
        );
        let signals = read("signals");
        let mask = |name: &str| {
            let line = signals.lines().find(|l| l.starts_with(name)).expect(name);
            u64::from_str_radix(line.split_whitespace().last().expect("a mask"), 16).expect("hex")
        };
        assert_eq!(mask("SigBlk"), 0, "no blocked signal: {signals}");
        assert_eq!(
            mask("SigIgn") & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE at its default: {signals}"
        );
    }

    /// A script without `#!` (execvp runs it with /bin/sh) and a program not
    /// on this PATH both go to the fork path, which reports them as before.
    #[test]
    fn what_posix_spawn_cannot_do_falls_back_to_the_fork_path() {
        use std::os::unix::fs::PermissionsExt;
        let sandbox = tempfile::tempdir().expect("tempdir");
        let script = sandbox.path().join("no-shebang");
        std::fs::write(&script, "echo hi > out\n").expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let spec = |path: &str| LaunchSpec {
            program: Program::Exec {
                path: path.into(),
                argv: Vec::new(),
            },
            env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())]
                .into_iter()
                .collect(),
            other_env: Vec::new(),
            cwd: sandbox.path().to_path_buf(),
            user: None,
            source: CommandSource::TaskCommand,
        };
        assert!(
            spawn_session(&spec(&script.display().to_string()), None).is_none(),
            "ENOEXEC: fork and execvp instead"
        );
        assert!(
            spawn_session(&spec("surely-not-installed-anywhere"), None).is_none(),
            "not found here: the fork path says so"
        );
    }

    #[test]
    fn programs_are_found_on_the_tasks_path() {
        let cwd = Path::new("/");
        assert_eq!(
            executable("sh", Some("/nonexistent:/bin"), cwd),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            executable("./run", Some("/bin"), cwd),
            Some(PathBuf::from("./run")),
            "a path with a slash is used as given"
        );
        assert_eq!(
            executable("no-such-program-here", Some("/bin:/usr/bin"), cwd),
            None,
            "the fork path reports it"
        );
    }
}
