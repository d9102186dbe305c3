//! The task's root process, started with `clone(CLONE_VM)`: a new session,
//! the environment from empty, the sandbox as working directory and stdin
//! from `/dev/null`, exactly what [`super::process::task_command`] asks of a
//! fork, without the fork's cost and without waiting for the program to load.
//!
//! Why not `fork` or `posix_spawn`: a fork copies the executor's page tables
//! and then pays a copy-on-write fault for every page either side touches;
//! `posix_spawn` shares the memory but suspends the executor until the
//! kernel has loaded the new program (about 0.1-0.3 ms on a VM, most of
//! LAUNCH → TASK_RUNNING), resets every signal one system call at a time,
//! and needs glibc 2.29 for its working-directory action. Here the child
//! shares the executor's memory and runs beside it: the executor goes on
//! (it sends TASK_RUNNING, as the Mesos command executor does right after
//! its fork) while the child sets itself up and execs.
//!
//! Sharing memory with a running parent is only sound if the child touches
//! nothing the parent uses. So the child:
//! - runs on its own stack, reads only a [`Prepared`] block nothing mutates,
//!   and makes raw system calls (no libc wrapper: they would write `errno`,
//!   which lives in the parent thread's TLS), allocates nothing, cannot panic;
//! - starts with every signal blocked (the parent blocks them around the
//!   clone), resets the ones that had handlers, and unblocks them only right
//!   before `execve`;
//! - reports a failed `execve` (or set-up step) as its errno on a close-on-exec
//!   pipe, then exits 127.
//!
//! The parent keeps the stack and the block alive until that pipe says the
//! child exec'd (end of file with nothing written) or ended: [`ExecReport`].
//! If the report is dropped before that, the memory is leaked, never freed
//! under a child that may still use it.
//!
//! What the exec would refuse is checked before the clone, so the common
//! mistakes still fail the launch before TASK_RUNNING, with the fork path's
//! messages: a program that is not found, not a regular file, not executable,
//! a script without `#!` (run by `/bin/sh`, as `execvp` does) or whose
//! interpreter is missing, a sandbox that is not a directory. All of these
//! return `None` and the caller forks as before; so do a user switch and a
//! CPU this module has no system-call stub for. What can only fail inside
//! `execve` (an ELF interpreter that is missing, `ETXTBSY`, `E2BIG`, no
//! memory) ends the task as TASK_FAILED "Command could not be executed: …"
//! after TASK_RUNNING, where the Mesos executor would say "exited with status 1".

use std::{
    ffi::{c_char, c_int, c_void, CString},
    io::{self, Read},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use super::launch::{find_on_path, is_executable, LaunchSpec, Program};

/// The child's stack: its code needs well under a kilobyte.
const STACK_SIZE: usize = 16 * 1024;

/// The executable `execvp` would run for `program` with `path_var` as `PATH`
/// (the task's own), or `None` when the fork path should decide.
fn executable(program: &str, path_var: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    find_on_path(program, path_var.unwrap_or("/bin:/usr/bin"), cwd)
}

/// Whether `execve` will take `path` itself, as far as can be known without
/// running it: a program this process may execute that starts with an ELF
/// header, or with a `#!` line naming such a program (the kernel allows a
/// chain of scripts; the fork path handles those).
fn exec_would_start(path: &Path) -> bool {
    const ELF: &[u8] = b"\x7fELF";
    let Some(head) = runnable_head(path) else {
        return false;
    };
    head.starts_with(ELF)
        || interpreter(&head).is_some_and(|i| runnable_head(i).is_some_and(|h| h.starts_with(ELF)))
}

/// The first bytes of `path` (up to 256), if it is a regular file with an
/// execute bit that this process may execute and read.
fn runnable_head(path: &Path) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: access() with a NUL-terminated path.
    if !is_executable(path) || unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } != 0 {
        return None;
    }
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(path)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .ok()?;
    Some(head)
}

/// The interpreter named on a `#!` line, if `head` starts with one.
fn interpreter(head: &[u8]) -> Option<&Path> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n')?];
    let start = line.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let line = &line[start..];
    let end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    Some(Path::new(std::ffi::OsStr::from_bytes(&line[..end])))
}

fn cstring(s: impl AsRef<[u8]>) -> Option<CString> {
    CString::new(s.as_ref()).ok()
}

/// Everything the child reads, built before the clone and not touched by
/// anyone until the child has exec'd or ended.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    cwd: CString,
    /// stdout and stderr for the task, or inherit the executor's.
    output: Option<[c_int; 2]>,
    /// The write end of the report pipe.
    report: c_int,
}

/// The child's stack: heap memory, 16-byte aligned. No guard page is
/// needed (mapping one would cost the launch two system calls): the child's
/// code is one non-recursive function using well under a kilobyte, and no
/// signal frame is ever pushed on it, as signals stay blocked until every
/// handler is back to its default.
struct Stack(Box<[u128]>);

impl Stack {
    fn new() -> Self {
        Self(vec![0u128; STACK_SIZE / 16].into_boxed_slice())
    }

    fn top(&mut self) -> *mut c_void {
        // SAFETY: one past the end of the buffer, where a downward stack starts.
        unsafe { self.0.as_mut_ptr().add(self.0.len()).cast() }
    }
}

/// What the child may still be using.
struct ChildMemory {
    _prepared: Box<Prepared>,
    _stack: Stack,
}

/// The task's process as started: its pid and how its exec went.
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) report: ExecReport,
}

/// The read end of a child's report pipe, and the memory the child may use
/// until the pipe closes.
pub(crate) struct ExecReport {
    pipe: OwnedFd,
    memory: Option<ChildMemory>,
}

// SAFETY: the raw pointers in `Prepared` point into buffers the block owns;
// nothing reads them through the report but the child.
unsafe impl Send for ExecReport {}

impl ExecReport {
    /// Records what was read from the pipe once it reached its end (the
    /// child exec'd or ended, so the memory is free): the errno the child
    /// reported, if any.
    fn finish(&mut self, read: &[u8]) -> Option<i32> {
        self.memory = None;
        errno_of(read)
    }

    /// Waits until the child exec'd or ended (the pipe's end): the errno it
    /// reported, if any. The memory is free once this returns `Ok`.
    pub(crate) async fn wait(&mut self) -> io::Result<Option<i32>> {
        use tokio::io::AsyncReadExt;
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(self.pipe.try_clone()?)?;
        let mut read = Vec::new();
        (&mut pipe).take(64).read_to_end(&mut read).await?;
        Ok(self.finish(&read))
    }

    /// What the child reported, read without waiting, once its process is
    /// known to have ended (reaped): the memory is free whatever the pipe
    /// says, as a stray copy of the write end may keep it open.
    pub(crate) fn after_exit(&mut self) -> Option<i32> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let _ = fcntl(&self.pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let mut read = [0u8; 4];
        let n = nix::unistd::read(&self.pipe, &mut read).unwrap_or(0);
        self.finish(&read[..n])
    }

    /// Blocks until the child exec'd or ended; the errno it reported, if any.
    #[cfg(test)]
    pub(crate) fn wait_blocking(mut self) -> Option<i32> {
        let mut file = std::fs::File::from(self.pipe.try_clone().expect("dup the report pipe"));
        let mut read = Vec::new();
        file.read_to_end(&mut read).expect("read the report pipe");
        self.finish(&read)
    }
}

impl Drop for ExecReport {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            // The child may not have exec'd yet: it must never find its stack
            // or arguments freed under it.
            std::mem::forget(memory);
        }
    }
}

/// The errno in a child's report, if it wrote one.
fn errno_of(read: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = read.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(bytes))
}

/// Starts the task's root process in a new session, or returns `None` when
/// the fork path should (see the module docs). `output` (stdout, stderr)
/// replaces the inherited descriptors.
pub(crate) fn spawn_session(
    spec: &LaunchSpec,
    output: Option<[c_int; 2]>,
) -> Option<io::Result<Started>> {
    if !raw::SUPPORTED {
        return None;
    }
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
    // Relative to the sandbox, as the fork path (which changes directory
    // before its exec) resolves it.
    let resolved = spec.cwd.join(&path);
    if !spec.cwd.is_dir() || !exec_would_start(&resolved) {
        return None;
    }
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
    let nul_terminated = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(ends) => ends,
        Err(e) => return Some(Err(e.into())),
    };
    let prepared = Box::new(Prepared {
        path: cstring(resolved.as_os_str().as_bytes())?,
        argv_ptrs: nul_terminated(&argv),
        _argv: argv,
        envp_ptrs: nul_terminated(&envp),
        _envp: envp,
        cwd: cstring(spec.cwd.as_os_str().as_bytes())?,
        output,
        report: write.as_raw_fd(),
    });
    let mut stack = Stack::new();
    let arg = std::ptr::from_ref::<Prepared>(&prepared)
        .cast_mut()
        .cast::<c_void>();
    // SAFETY: the child runs `child_main` on `stack`, reading `prepared`;
    // both stay alive until the report pipe closes (`ExecReport`). All
    // signals are blocked across the clone so that no handler of ours runs
    // in the child; the parent's mask is restored right after.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        #[allow(clippy::cast_sign_loss)]
        let flags = (libc::CLONE_VM | libc::SIGCHLD) as usize;
        let pid = raw::clone(flags, stack.top(), child_main, arg);
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        if pid < 0 {
            #[allow(clippy::cast_possible_truncation)]
            return Some(Err(io::Error::from_raw_os_error(-pid as i32)));
        }
        #[allow(clippy::cast_possible_truncation)]
        let pid = pid as libc::pid_t;
        pid
    };
    // Only the child may hold the write end: its closing is the report.
    drop(write);
    Some(Ok(Started {
        pid,
        report: ExecReport {
            pipe: read,
            memory: Some(ChildMemory {
                _prepared: prepared,
                _stack: stack,
            }),
        },
    }))
}

/// The child, from the clone to its `execve`. Raw system calls only; see
/// the module docs for why.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Prepared` block the parent keeps alive and
    // unchanged until this process has exec'd or exited.
    let p = unsafe { &*arg.cast_const().cast::<Prepared>() };
    let fail = |errno: isize| -> ! {
        #[allow(clippy::cast_possible_truncation)]
        let bytes = (errno as i32).to_ne_bytes();
        // SAFETY: raw write of a stack buffer, then the end of this process.
        unsafe {
            raw::call(
                libc::SYS_write,
                [p.report as usize, bytes.as_ptr() as usize, 4, 0],
            );
            raw::call(libc::SYS_exit_group, [127, 0, 0, 0]);
        }
        #[allow(clippy::empty_loop)]
        loop {}
    };
    let check = |ret: isize| {
        if ret < 0 {
            fail(-ret);
        }
        ret
    };
    // SAFETY: raw system calls on this process's own state, with pointers
    // to this stack or to the prepared block.
    unsafe {
        // A new process often gets the CPU its parent was on: give it back,
        // so the executor reports TASK_RUNNING while this one sets up.
        raw::call(libc::SYS_sched_yield, [0; 4]);
        // Handlers are the executor's code: back to the default. SIGPIPE,
        // ignored by the Rust runtime, too (as std does for its children).
        for signal in 1..=64usize {
            if signal == libc::SIGKILL as usize || signal == libc::SIGSTOP as usize {
                continue;
            }
            let mut old = raw::KernelSigaction::default();
            let got = raw::call(
                libc::SYS_rt_sigaction,
                [signal, 0, std::ptr::from_mut(&mut old) as usize, 8],
            );
            if got == 0 && (old.handler > 1 || signal == libc::SIGPIPE as usize) {
                let default = raw::KernelSigaction::default();
                check(raw::call(
                    libc::SYS_rt_sigaction,
                    [signal, std::ptr::from_ref(&default) as usize, 0, 8],
                ));
            }
        }
        check(raw::call(libc::SYS_setsid, [0; 4]));
        let null = check(raw::call(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                c"/dev/null".as_ptr() as usize,
                libc::O_RDONLY as usize,
                0,
            ],
        ));
        if null != 0 {
            check(raw::call(libc::SYS_dup3, [null as usize, 0, 0, 0]));
            raw::call(libc::SYS_close, [null as usize, 0, 0, 0]);
        }
        if let Some(fds) = p.output {
            for (fd, target) in fds.into_iter().zip([1usize, 2]) {
                let fd = fd as usize;
                if fd == target {
                    check(raw::call(
                        libc::SYS_fcntl,
                        [fd, libc::F_SETFD as usize, 0, 0],
                    ));
                } else {
                    check(raw::call(libc::SYS_dup3, [fd, target, 0, 0]));
                }
            }
        }
        check(raw::call(
            libc::SYS_chdir,
            [p.cwd.as_ptr() as usize, 0, 0, 0],
        ));
        let none: u64 = 0;
        check(raw::call(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                std::ptr::from_ref(&none) as usize,
                0,
                8,
            ],
        ));
        let ret = raw::call(
            libc::SYS_execve,
            [
                p.path.as_ptr() as usize,
                p.argv_ptrs.as_ptr() as usize,
                p.envp_ptrs.as_ptr() as usize,
                0,
            ],
        );
        fail(-ret)
    }
}

/// System calls without libc: the result, or minus the errno. x86_64 only;
/// elsewhere `SUPPORTED` is false and the task is forked by std.
mod raw {
    use std::ffi::{c_int, c_void};

    /// The kernel's `struct sigaction` on x86_64.
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct KernelSigaction {
        pub(super) handler: usize,
        pub(super) flags: u64,
        pub(super) restorer: usize,
        pub(super) mask: u64,
    }

    pub(super) const SUPPORTED: bool = cfg!(target_arch = "x86_64");

    /// SAFETY: the caller passes what the system call `number` expects.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn call(number: libc::c_long, args: [usize; 4]) -> isize {
        let ret: isize;
        // SAFETY: the `syscall` instruction with the Linux x86_64 convention;
        // it clobbers rcx and r11 only.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") number as isize => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// `clone(flags, stack)`, the child calling `child(arg)` on `stack` and
    /// never returning. Not glibc's `clone()`: before 2.25 its child wrote
    /// the thread's cached pid and tid, and with `CLONE_VM` that is the
    /// parent thread's memory. The pid, or minus the errno, in the parent.
    ///
    /// SAFETY: `stack` is the 16-byte aligned top of memory that stays
    /// valid while the child runs; `child` must end the process, not return.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn clone(
        flags: usize,
        stack: *mut c_void,
        child: extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> isize {
        let ret: isize;
        // SAFETY: in the parent this is a plain system call (rcx and r11
        // clobbered); the child starts on `stack`, clears the frame pointer,
        // calls `child` with the ABI's alignment (`stack` aligned, the call
        // pushes 8) and, should it return, faults rather than run on.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone as isize => ret,
                in("rdi") flags,
                in("rsi") stack,
                in("rdx") 0usize,
                in("r10") 0usize,
                in("r8") 0usize,
                in("r12") child,
                in("r13") arg,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Never called: `SUPPORTED` is false here.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn call(_number: libc::c_long, _args: [usize; 4]) -> isize {
        -(libc::ENOSYS as isize)
    }

    /// Never called: `SUPPORTED` is false here.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn clone(
        _flags: usize,
        _stack: *mut c_void,
        _child: extern "C" fn(*mut c_void) -> c_int,
        _arg: *mut c_void,
    ) -> isize {
        -(libc::ENOSYS as isize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::launch::CommandSource;

    /// What the fork path gives a task, the clone gives too: its own session,
    /// the sandbox as cwd, stdin from /dev/null, exactly the given
    /// environment, no blocked signals and SIGPIPE at its default.
    #[test]
    fn the_task_gets_a_session_its_cwd_stdin_and_environment() {
        let _turn = crate::util::lock(&crate::task::CHILDREN_OF_THE_TEST_PROCESS);
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
        let started = spawn_session(&spec, None)
            .expect("cloned, not left to the fork path")
            .expect("spawned");
        let pid = started.pid;
        assert_eq!(started.report.wait_blocking(), None, "the exec succeeded");
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

    /// What the exec would refuse goes to the fork path, which reports it
    /// before TASK_RUNNING as it always has (or, for a script without `#!`,
    /// runs it with /bin/sh as execvp does).
    #[test]
    fn what_the_exec_would_refuse_goes_to_the_fork_path() {
        let _turn = crate::util::lock(&crate::task::CHILDREN_OF_THE_TEST_PROCESS);
        let sandbox = tempfile::tempdir().expect("tempdir");
        let dir = sandbox.path();
        let spec = |path: &str| exec_spec(path, dir);
        for (path, why) in [
            (
                write_program(dir, "no-shebang", b"echo hi > out\n", 0o755),
                "ENOEXEC: fork and execvp (which runs it with /bin/sh) instead",
            ),
            (
                "surely-not-installed-anywhere".to_owned(),
                "not found here: the fork path says so",
            ),
            (
                write_program(dir, "no-exec-bit", b"#!/bin/sh\n", 0o644),
                "not executable",
            ),
            (
                write_program(
                    dir,
                    "lost-interpreter",
                    b"#!/nonexistent/sh -e\necho\n",
                    0o755,
                ),
                "its interpreter is missing",
            ),
            (dir.display().to_string(), "a directory"),
        ] {
            assert!(spawn_session(&spec(&path), None).is_none(), "{path}: {why}");
        }
        let script = write_program(dir, "script", b"#!/bin/sh\nexit 3\n", 0o755);
        let started = spawn_session(&spec(&script), None)
            .expect("a script whose interpreter runs is cloned")
            .expect("cloned");
        let pid = nix::unistd::Pid::from_raw(started.pid);
        assert_eq!(started.report.wait_blocking(), None);
        assert_eq!(
            nix::sys::wait::waitpid(pid, None).expect("waitpid"),
            nix::sys::wait::WaitStatus::Exited(pid, 3)
        );
        let gone = exec_spec("/bin/true", &dir.join("no-such-sandbox"));
        assert!(spawn_session(&gone, None).is_none(), "no working directory");
    }

    /// What only `execve` can find out comes back on the report pipe after
    /// the clone: here a file that starts like an ELF program but is not one.
    #[test]
    fn an_exec_that_fails_after_the_clone_is_reported_with_its_errno() {
        let _turn = crate::util::lock(&crate::task::CHILDREN_OF_THE_TEST_PROCESS);
        let sandbox = tempfile::tempdir().expect("tempdir");
        let program = write_program(
            sandbox.path(),
            "not-really-elf",
            b"\x7fELF, or so it says\n",
            0o755,
        );
        let started = spawn_session(&exec_spec(&program, sandbox.path()), None)
            .expect("an ELF header passes the checks")
            .expect("cloned");
        let pid = nix::unistd::Pid::from_raw(started.pid);
        assert_eq!(started.report.wait_blocking(), Some(libc::ENOEXEC));
        assert_eq!(
            nix::sys::wait::waitpid(pid, None).expect("waitpid"),
            nix::sys::wait::WaitStatus::Exited(pid, 127)
        );
    }

    /// `path` run with no arguments, `PATH` set, in `cwd`.
    fn exec_spec(path: &str, cwd: &Path) -> LaunchSpec {
        LaunchSpec {
            program: Program::Exec {
                path: path.into(),
                argv: Vec::new(),
            },
            env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())]
                .into_iter()
                .collect(),
            other_env: Vec::new(),
            cwd: cwd.to_path_buf(),
            user: None,
            source: CommandSource::TaskCommand,
        }
    }

    /// Writes `text` to `dir/name` with `mode`; returns its path.
    fn write_program(dir: &Path, name: &str, text: &[u8], mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path.display().to_string()
    }

    #[test]
    fn an_interpreter_is_read_from_the_shebang_line() {
        assert_eq!(interpreter(b"#!/bin/sh\n"), Some(Path::new("/bin/sh")));
        assert_eq!(
            interpreter(b"#! \t/usr/bin/env python3 -u\nprint()"),
            Some(Path::new("/usr/bin/env"))
        );
        assert_eq!(interpreter(b"#!/bin/sh"), None, "no end of line in sight");
        assert_eq!(interpreter(b"#!   \n"), None);
        assert_eq!(interpreter(b"echo hi\n"), None);
        assert_eq!(errno_of(&[]), None);
        assert_eq!(errno_of(&2i32.to_ne_bytes()), Some(2));
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
