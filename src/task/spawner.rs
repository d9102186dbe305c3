//! The spawner: a small copy of the executor, forked once at start, that
//! forks every guard ([`super::guard`]) on the executor's behalf.
//!
//! # Why
//! A guard forked from the executor shares the executor's pages copy-on-write
//! for as long as it lives (a remote command, a hook script): every page the
//! executor then writes is copied, and the fork itself copies the page
//! tables of a grown address space. Forked from this process instead, which
//! stays as small as the executor was at start and writes almost nothing,
//! a guard costs a fraction of that (docs/benchmarks.md).
//!
//! # How
//! [`start`] forks the spawner from the binary's `main` after the
//! configuration is read and before any thread exists, so the spawner may
//! allocate and use `std::process::Command` like any single-threaded
//! program. It then serves two stream sockets, both close-on-exec on both
//! ends (no guard or command inherits them; every guard also closes all its
//! descriptors):
//! - *control*: one request at a time, the command, its user, what becomes
//!   of its leftovers and its standard streams (descriptors passed with
//!   `SCM_RIGHTS`); the answer is the guard's pid or the spawn's error.
//!   The [`Reaper`](super::process::Reaper) sends under its lock, so
//!   requests never interleave, and registers the pid before it reads
//!   another exit.
//! - *exits*: the spawner reaps its guards and writes each one's pid and raw
//!   wait status; the reaper delivers it as it does for its own children.
//!
//! The spawner dies with the executor (parent-death SIGKILL, or end of file
//! on the control socket); its guards then get their own parent-death
//! signal and kill their trees, as they did when the executor was their
//! parent. It ignores the signals a terminal or a process-group kill sends
//! (with handlers that do nothing, which an exec resets, not `SIG_IGN`,
//! which an exec would pass on to the commands). If it is gone or stops
//! answering, the reaper kills it (if it is not reaped yet) and forks guards
//! itself.

use std::{
    ffi::{OsStr, OsString},
    io::{self, IoSlice, IoSliceMut, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, net::UnixStream, process::CommandExt},
    },
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

use super::{guard::Leftovers, process::UserSwitch};

/// How long the executor waits for the spawner's answer to one request
/// before it gives up on the spawner (a spawn is a fork and an exec).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request either side accepts: a command line and an
/// environment within the kernel's own exec limits.
const MAX_REQUEST: usize = 16 << 20;

/// One exit record on the exits socket: pid and raw wait status.
pub(crate) const EXIT_RECORD: usize = 8;

/// The executor's side of the spawner, set once by [`start`].
static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// What the executor holds of the spawner.
#[derive(Debug)]
pub(crate) struct Spawner {
    pid: i32,
    /// `None` once the spawner is given up on.
    control: Mutex<Option<UnixStream>>,
    /// Taken once by the reaper, which reads the exits.
    exits: Mutex<Option<UnixStream>>,
}

/// The spawner started by [`start`] in this process, if any.
pub(crate) fn get() -> Option<&'static Spawner> {
    SPAWNER.get()
}

/// Forks the spawner (see the module docs). Call it once from a
/// single-threaded `main`, before the async runtime exists; a process that
/// never calls it (unit tests) forks its guards itself.
///
/// # Errors
/// The socket pairs or the fork failed; the executor can run without.
pub fn start() -> io::Result<()> {
    let (control, control_child) = UnixStream::pair()?;
    let (exits, exits_child) = UnixStream::pair()?;
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: no other thread exists (the contract above), so the child may
    // do anything a fresh single-threaded program may.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop((control, exits));
            serve(parent, control_child, exits_child)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((control_child, exits_child));
            control.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            control.set_write_timeout(Some(ANSWER_TIMEOUT))?;
            let spawner = Spawner {
                pid: child.as_raw(),
                control: Mutex::new(Some(control)),
                exits: Mutex::new(Some(exits)),
            };
            if SPAWNER.set(spawner).is_err() {
                // A second call: the first spawner serves.
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            Ok(())
        }
    }
}

/// A command for an auxiliary child: always run with exactly this
/// environment (never the executor's).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuxCommand {
    program: OsString,
    argv0: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl AuxCommand {
    /// `program`, found on `PATH` when it has no slash.
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            ..Self::default()
        }
    }

    /// `/bin/sh -c <command>`, or `path` with `argv` verbatim (argv\[0\] included).
    pub(crate) fn program(program: &super::launch::Program) -> Self {
        match program {
            super::launch::Program::Shell { command } => {
                let mut c = Self::new("/bin/sh");
                c.arg("-c").arg(command);
                c
            }
            super::launch::Program::Exec { path, argv } => {
                let mut c = Self::new(path);
                if let Some((argv0, rest)) = argv.split_first() {
                    c.arg0(argv0).args(rest);
                }
                c
            }
        }
    }

    /// Sets argv\[0\] (else the program).
    pub(crate) fn arg0(&mut self, argv0: impl AsRef<OsStr>) -> &mut Self {
        self.argv0 = Some(argv0.as_ref().to_owned());
        self
    }

    /// Adds one argument.
    pub(crate) fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        &mut self,
        args: I,
    ) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one variable (a later value for the same name wins).
    pub(crate) fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets variables.
    pub(crate) fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Its working directory.
    pub(crate) fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The `std` command (environment cleared), without stdio or guard.
    pub(crate) fn to_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        if let Some(argv0) = &self.argv0 {
            c.arg0(argv0);
        }
        c.args(&self.args).env_clear();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(cwd) = &self.cwd {
            c.current_dir(cwd);
        }
        c
    }
}

/// Why the spawner could not be used for one spawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnerError {
    /// The spawner answered: the spawn itself failed (as it would have here).
    #[error("{0}")]
    Spawn(#[source] io::Error),
    /// The spawner is gone, or broke the protocol: fork guards here.
    #[error("the spawner is unavailable: {0}")]
    Unavailable(#[source] io::Error),
}

impl Spawner {
    /// The spawner's pid (a child of the executor; not part of the task).
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// The exits socket, once (for the reaper).
    pub(crate) fn take_exits(&self) -> Option<UnixStream> {
        crate::util::lock(&self.exits).take()
    }

    /// Whether requests still go to the spawner.
    pub(crate) fn available(&self) -> bool {
        crate::util::lock(&self.control).is_some()
    }

    /// Stops sending requests to the spawner. Killing it is the reaper's
    /// call: only the reaper knows whether its pid is still ours.
    pub(crate) fn disconnect(&self) {
        crate::util::lock(&self.control).take();
    }

    /// Has the spawner fork a guard running `command` (see
    /// [`super::guard::guard`]) with `stdio` (`None`: `/dev/null`); returns
    /// the guard's pid. The caller holds the reaper's lock.
    pub(crate) fn spawn(
        &self,
        command: &AuxCommand,
        stdio: [Option<&OwnedFd>; 3],
        user: Option<&UserSwitch>,
        leftovers: Leftovers,
    ) -> Result<i32, SpawnerError> {
        let mut control = crate::util::lock(&self.control);
        let Some(stream) = control.as_mut() else {
            return Err(SpawnerError::Unavailable(io::Error::from(
                io::ErrorKind::NotConnected,
            )));
        };
        let request = encode(command, user, leftovers, stdio.map(|s| s.is_some()));
        if request.len() - 4 > MAX_REQUEST {
            // Far past what exec accepts; refused here so the spawner is
            // never sent what it would have to refuse by ending.
            return Err(SpawnerError::Spawn(io::Error::from_raw_os_error(
                libc::E2BIG,
            )));
        }
        let fds: Vec<RawFd> = stdio.iter().flatten().map(|fd| fd.as_raw_fd()).collect();
        let answer = send_request(stream, &request, &fds).and_then(|()| read_answer(stream));
        match answer {
            Ok(Ok(pid)) => Ok(pid),
            Ok(Err(e)) => Err(SpawnerError::Spawn(e)),
            Err(e) => {
                control.take();
                Err(SpawnerError::Unavailable(e))
            }
        }
    }
}

/// Writes the framed request ([`encode`]), the descriptors with its first bytes.
fn send_request(stream: &mut UnixStream, framed: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    let sent = loop {
        match sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[IoSlice::new(framed)],
            cmsgs,
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => {}
            other => break other.map_err(io::Error::from)?,
        }
    };
    stream.write_all(&framed[sent..])
}

/// Reads one answer: the guard's pid, or the spawn's error.
fn read_answer(stream: &mut UnixStream) -> io::Result<io::Result<i32>> {
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let pid = i32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    let errno = i32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let len = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized answer",
        ));
    }
    let mut text = vec![0u8; len];
    stream.read_exact(&mut text)?;
    if pid > 0 {
        return Ok(Ok(pid));
    }
    Ok(Err(if errno > 0 {
        io::Error::from_raw_os_error(errno)
    } else {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            String::from_utf8_lossy(&text).into_owned(),
        )
    }))
}

/// Appends `bytes` with its length.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(bytes);
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_ne_bytes());
}

/// The request framed for the socket: its length, then the bytes
/// [`decode`] reads.
fn encode(
    command: &AuxCommand,
    user: Option<&UserSwitch>,
    leftovers: Leftovers,
    passed: [bool; 3],
) -> Vec<u8> {
    // The length goes in front once the rest is written.
    let mut out = vec![0u8; 4];
    out.push(u8::from(leftovers == Leftovers::Kill));
    out.extend(passed.map(u8::from));
    match user {
        None => out.push(0),
        Some(u) => {
            out.push(1);
            let (uid, gid, groups) = u.raw();
            put_u32(&mut out, uid);
            put_u32(&mut out, gid);
            put_u32(&mut out, u32::try_from(groups.len()).unwrap_or(0));
            for g in groups.iter().take(u32::MAX as usize) {
                put_u32(&mut out, *g);
            }
        }
    }
    put(&mut out, command.program.as_bytes());
    match &command.argv0 {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            put(&mut out, a.as_bytes());
        }
    }
    put_u32(&mut out, u32::try_from(command.args.len()).unwrap_or(0));
    for a in &command.args {
        put(&mut out, a.as_bytes());
    }
    put_u32(&mut out, u32::try_from(command.env.len()).unwrap_or(0));
    for (k, v) in &command.env {
        put(&mut out, k.as_bytes());
        put(&mut out, v.as_bytes());
    }
    match &command.cwd {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            put(&mut out, d.as_os_str().as_bytes());
        }
    }
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_ne_bytes());
    out
}

/// A decoded request.
#[derive(Debug)]
struct Request {
    command: AuxCommand,
    user: Option<UserSwitch>,
    leftovers: Leftovers,
    passed: [bool; 3],
}

/// Reads a request's fields in order; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Option<OsString> {
        let n = self.u32()? as usize;
        self.take(n).map(|b| OsStr::from_bytes(b).to_owned())
    }
    /// A count of items that each need at least `min` bytes: never more
    /// than the bytes left can hold (no allocation from a bad count).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min) <= self.0.len()).then_some(n)
    }
}

/// Parses [`encode`]'s bytes; `None` if they are malformed.
fn decode(bytes: &[u8]) -> Option<Request> {
    let mut r = Reader(bytes);
    let leftovers = if r.byte()? == 1 {
        Leftovers::Kill
    } else {
        Leftovers::Leave
    };
    let passed = [r.byte()? == 1, r.byte()? == 1, r.byte()? == 1];
    let user = match r.byte()? {
        0 => None,
        _ => {
            let uid = r.u32()?;
            let gid = r.u32()?;
            let n = r.count(4)?;
            let groups = (0..n).map(|_| r.u32()).collect::<Option<Vec<u32>>>()?;
            Some(UserSwitch::from_raw(uid, gid, &groups))
        }
    };
    let mut command = AuxCommand::new(r.bytes()?);
    if r.byte()? == 1 {
        command.argv0 = Some(r.bytes()?);
    }
    let n = r.count(4)?;
    command.args = (0..n).map(|_| r.bytes()).collect::<Option<_>>()?;
    let n = r.count(8)?;
    command.env = (0..n)
        .map(|_| Some((r.bytes()?, r.bytes()?)))
        .collect::<Option<_>>()?;
    if r.byte()? == 1 {
        command.cwd = Some(PathBuf::from(r.bytes()?));
    }
    r.0.is_empty().then_some(Request {
        command,
        user,
        leftovers,
        passed,
    })
}

/// Decodes one exit record: pid and raw wait status.
pub(crate) fn exit_record(bytes: &[u8; EXIT_RECORD]) -> (i32, i32) {
    (
        i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        i32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    )
}

// ---------------------------------------------------------------------------
// The spawner process.

/// The write end of the spawner's SIGCHLD self-pipe (its handler writes a byte).
static WAKE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = WAKE.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; a full pipe already wakes us.
    unsafe {
        libc::write(fd, [0u8].as_ptr().cast(), 1);
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// The spawner's life; never returns.
fn serve(parent: i32, control: UnixStream, exits: UnixStream) -> ! {
    // Dies with the executor; a death before this point leaves us with
    // another parent.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // Told apart from the executor in `ps -o comm` and `top` (its command
    // line stays the executor's).
    let _ = nix::sys::prctl::set_name(c"hook-spawner");
    if nix::unistd::getppid().as_raw() != parent {
        // SAFETY: ends this process (see below).
        unsafe { libc::_exit(0) }
    }
    let code = match serve_requests(control, exits) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // `_exit`, not `exit`: no flush of stdio buffers copied from the executor.
    // SAFETY: ends this process.
    unsafe { libc::_exit(code) }
}

fn serve_requests(mut control: UnixStream, mut exits: UnixStream) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::os::fd::AsFd;

    let (wake_read, wake_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    WAKE.store(wake_write.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    let on_child = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    let quiet = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: both handlers only make async-signal-safe calls (or none).
    unsafe {
        sigaction(Signal::SIGCHLD, &on_child)?;
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            sigaction(signal, &quiet)?;
        }
    }
    SigSet::empty().thread_set_mask()?;
    loop {
        let (control_ready, wake_ready) = {
            let mut fds = [
                PollFd::new(control.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake_read.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if wake_ready {
            let mut drain = [0u8; 64];
            while matches!(nix::unistd::read(&wake_read, &mut drain), Ok(n) if n > 0) {}
        }
        // Every round, not only on a wake: cheap, and no exit is missed.
        reap_guards(&mut exits)?;
        if control_ready {
            match read_request(&control)? {
                None => return Ok(()),
                Some((bytes, fds)) => {
                    let answer = run_request(&bytes, fds);
                    write_answer(&mut control, answer)?;
                }
            }
        }
    }
}

/// Reaps every ended guard and reports it on the exits socket.
fn reap_guards(exits: &mut UnixStream) -> io::Result<()> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a pointer to a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let mut record = [0u8; EXIT_RECORD];
            record[..4].copy_from_slice(&pid.to_ne_bytes());
            record[4..].copy_from_slice(&status.to_ne_bytes());
            exits.write_all(&record)?;
            continue;
        }
        if pid == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Ok(());
    }
}

/// Reads one request and the descriptors that came with it; `None` at end
/// of file (the executor is gone).
fn read_request(control: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut head = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut head)];
        match recvmsg::<UnixAddr>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these descriptors for us.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    if got == 0 {
        return Ok(None);
    }
    let mut rest = control;
    rest.read_exact(&mut head[got..])?;
    let len = u32::from_ne_bytes(head) as usize;
    if len > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized request",
        ));
    }
    let mut bytes = vec![0u8; len];
    rest.read_exact(&mut bytes)?;
    Ok(Some((bytes, fds)))
}

/// Starts the guard a request asks for.
fn run_request(bytes: &[u8], fds: Vec<OwnedFd>) -> io::Result<i32> {
    let request = decode(bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "malformed spawn request"))?;
    let wanted = request.passed.iter().filter(|p| **p).count();
    if fds.len() != wanted {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "spawn request with the wrong descriptors",
        ));
    }
    let mut fds = fds.into_iter();
    let mut stdio = request.passed.map(|passed| {
        if passed {
            fds.next().map_or_else(Stdio::null, Stdio::from)
        } else {
            Stdio::null()
        }
    });
    let mut command = request.command.to_command();
    super::guard::guard(&mut command, request.user, request.leftovers);
    command
        .stdin(std::mem::replace(&mut stdio[0], Stdio::null()))
        .stdout(std::mem::replace(&mut stdio[1], Stdio::null()))
        .stderr(std::mem::replace(&mut stdio[2], Stdio::null()));
    let child = command.spawn()?;
    // Never waited for through `Child`: the loop reaps it.
    Ok(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

fn write_answer(control: &mut UnixStream, answer: io::Result<i32>) -> io::Result<()> {
    let (pid, errno, text) = match answer {
        Ok(pid) => (pid, 0, String::new()),
        Err(e) => (0, e.raw_os_error().unwrap_or(0), e.to_string()),
    };
    let text = &text.as_bytes()[..text.len().min(1024)];
    let mut out = Vec::with_capacity(12 + text.len());
    out.extend_from_slice(&pid.to_ne_bytes());
    out.extend_from_slice(&errno.to_ne_bytes());
    put(&mut out, text);
    control.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_encoding() {
        let mut c = AuxCommand::new("/bin/prog");
        c.arg0("name")
            .args(["a", "", "b c"])
            .env("K", "v")
            .env("E", "")
            .current_dir("/tmp");
        let user = UserSwitch::from_raw(65534, 65534, &[65534, 100]);
        let framed = encode(&c, Some(&user), Leftovers::Kill, [false, true, true]);
        let len = u32::from_ne_bytes(framed[..4].try_into().expect("4 bytes"));
        assert_eq!(len as usize, framed.len() - 4);
        let back = decode(&framed[4..]).expect("decodes");
        assert_eq!(back.command.program, "/bin/prog");
        assert_eq!(back.command.argv0.as_deref(), Some(OsStr::new("name")));
        assert_eq!(back.command.args, ["a", "", "b c"]);
        assert_eq!(back.command.env.len(), 2);
        assert_eq!(back.command.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(back.leftovers, Leftovers::Kill);
        assert_eq!(back.passed, [false, true, true]);
        assert_eq!(
            back.user.expect("user").raw(),
            (65534, 65534, vec![65534, 100])
        );
    }

    #[test]
    fn malformed_requests_are_refused_without_allocating_from_their_counts() {
        let c = AuxCommand::new("true");
        let bytes = encode(&c, None, Leftovers::Leave, [false; 3]).split_off(4);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "prefix of {cut} bytes");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_none());
        // A huge argument count with nothing behind it.
        let mut huge = vec![0u8, 0, 0, 0, 0];
        put(&mut huge, b"true");
        huge.push(0);
        huge.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decode(&huge).is_none());
    }

    #[test]
    fn an_oversized_request_is_refused_without_reaching_the_spawner() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        theirs.set_nonblocking(true).expect("nonblocking");
        let spawner = Spawner {
            pid: 0,
            control: Mutex::new(Some(ours)),
            exits: Mutex::new(None),
        };
        let mut c = AuxCommand::new("true");
        c.env("BIG", "x".repeat(MAX_REQUEST));
        match spawner.spawn(&c, [None, None, None], None, Leftovers::Kill) {
            Err(SpawnerError::Spawn(e)) => assert_eq!(e.raw_os_error(), Some(libc::E2BIG)),
            other => panic!("expected E2BIG, got {other:?}"),
        }
        assert!(spawner.available(), "still in use");
        let mut buf = [0u8; 1];
        assert!((&theirs).read(&mut buf).is_err(), "nothing was sent");
    }

    #[test]
    fn exit_records_carry_pid_and_status() {
        let mut record = [0u8; EXIT_RECORD];
        record[..4].copy_from_slice(&4242i32.to_ne_bytes());
        record[4..].copy_from_slice(&(9i32 << 8).to_ne_bytes());
        assert_eq!(exit_record(&record), (4242, 9 << 8));
    }
}
