//! The remote API under abuse and load, against the real executor binary
//! (docs/remote-limits.md): idle and refused connections, token-less TCP
//! clients, bursts over the running limit, unbounded output, processes that
//! leave a command's group, and an executor that is SIGKILLed.

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mesos_hook_executor::emulator::EmulatorOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const NOBODY: u32 = 65534;

/// A `perl` (perl-base, on every Debian) peer running as `uid` that opens
/// `n` connections to the Unix socket, sends a request on each, reads each
/// one's answer, prints how many began with `HTTP/1.1 403` and how many were
/// closed without an answer, then keeps them all open until killed.
fn refused_peer(socket: &Path, n: usize, uid: u32) -> (Child, usize, usize) {
    let script = r#"
        use IO::Socket::UNIX; use IO::Select;
        # A refused connection may be closed before our request is written
        # (the server gives each refused exchange a second): EPIPE, not death.
        $SIG{PIPE} = 'IGNORE';
        my ($path, $n) = @ARGV; my @held; my ($forbidden, $closed) = (0, 0);
        for (1 .. $n) {
            my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path)
                or die "connect: $!";
            print $s "GET /remote/status HTTP/1.1\r\nHost: x\r\n\r\n";
            push @held, $s;
        }
        for my $s (@held) {
            my $buf = '';
            if (IO::Select->new($s)->can_read(20)) { sysread($s, $buf, 4096); }
            if ($buf =~ m{^HTTP/1\.1 403 }) { $forbidden++ } elsif ($buf eq '') { $closed++ }
        }
        print "$forbidden $closed\n"; STDOUT->flush;
        sleep 600;
    "#;
    let mut child = Command::new("perl")
        .args(["-e", script, socket.to_str().expect("utf8"), &n.to_string()])
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl (perl-base) runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the peer's report");
    let mut counts = line.split_whitespace().map(|c| c.parse::<usize>().ok());
    match (counts.next().flatten(), counts.next().flatten()) {
        (Some(forbidden), Some(closed)) => (child, forbidden, closed),
        _ => panic!("unexpected report from the refused peer: {line:?}"),
    }
}

/// `GET /remote/status` over TCP with `token`; the status code.
async fn tcp_status(addr: &str, token: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .uri("/remote/status")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    sender
        .send_request(request)
        .await
        .expect("response")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_refused_and_tokenless_connections_do_not_stop_an_allowed_client() {
    if !nix::unistd::geteuid().is_root() {
        // Running the refused peer as nobody needs root (as the suite runs in CI).
        eprintln!("skipped: needs root to run a peer as nobody");
        return;
    }
    let emu = emulator(EmulatorOptions::default()).await;
    // An allow-list naming another uid makes the socket 0666, so `nobody`
    // can connect at all and SO_PEERCRED refuses it.
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", "0,1000"),
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:0"),
            ("HOOK_EXECUTOR_REMOTE_TOKEN", "abuse-s3cret"),
        ],
    )
    .await;
    std::fs::set_permissions(exec.sandbox.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let addr = tcp_address(&exec).await;

    // 300 connections from a refused uid: each is answered 403 and closed
    // (or, past the answers in progress at once, closed), none takes a slot.
    let (mut refused, forbidden, closed) = refused_peer(&socket, 300, NOBODY);
    assert_eq!(
        forbidden + closed,
        300,
        "every refused connection was ended"
    );
    assert!(
        forbidden >= 64,
        "refused peers are answered: {forbidden} of 300"
    );

    // 400 token-less TCP connections that send nothing (more than the
    // listener's slots and the per-address cap) and 200 idle allowed ones.
    let mut tokenless = Vec::new();
    for _ in 0..400 {
        tokenless.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(api_connect(&socket).await.expect("connect"));
    }

    // The allowed client still gets every answer, on both listeners.
    for _ in 0..20 {
        assert_eq!(
            api_json(&socket, "GET", "/remote/status", None).await.0,
            200
        );
        assert_eq!(tcp_status(&addr, "abuse-s3cret").await, 200);
    }
    let pid = remote_execute(&socket, r#"{"command": "echo still-served"}"#).await;
    assert_eq!(
        remote_result(&socket, pid).await["stdout"],
        "still-served\n"
    );

    // A token-less connection is closed after the first-request timeout.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(SOON, silent.read(&mut buf))
        .await
        .expect("closed within the first-request timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");

    let log = exec.log();
    assert!(
        log.contains("remote API connection refused") && log.contains("peer_uid=65534"),
        "the refused peer is audited:\n{log}"
    );
    let audit_lines = log.matches("remote API connection refused").count();
    assert!(
        audit_lines < 300,
        "audit lines of refused peers are rate-limited: {audit_lines}"
    );
    let _ = refused.kill();
    let _ = refused.wait();
    drop(tokenless);
    drop(idle);
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_and_a_long_wait_in_it_is_503() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_MAX_RUNNING", "1"),
            ("HOOK_EXECUTOR_REMOTE_MAX_QUEUED", "1"),
            ("HOOK_EXECUTOR_REMOTE_QUEUE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let running = remote_execute(&socket, r#"{"command": "sleep 600"}"#).await;
    // Two at once: one waits in the queue (and times out: 503), the other
    // finds the queue full (429), whichever comes first.
    let queued = {
        let socket = socket.clone();
        tokio::spawn(async move {
            api_json(
                &socket,
                "POST",
                "/remote/execute",
                Some(r#"{"command": "true"}"#),
            )
            .await
        })
    };
    let mut answers = vec![
        api_json(
            &socket,
            "POST",
            "/remote/execute",
            Some(r#"{"command": "true"}"#),
        )
        .await,
        queued.await.expect("task"),
    ];
    // Until both outcomes were seen (a late one may find the queue empty).
    for _ in 0..20 {
        if answers.iter().any(|a| a.0 == 429) && answers.iter().any(|a| a.0 == 503) {
            break;
        }
        answers.push(
            api_json(
                &socket,
                "POST",
                "/remote/execute",
                Some(r#"{"command": "true"}"#),
            )
            .await,
        );
    }
    let said = |status: u16, variable: &str| {
        answers
            .iter()
            .any(|(s, v)| *s == status && v["error"].as_str().is_some_and(|e| e.contains(variable)))
    };
    assert!(said(429, "HOOK_EXECUTOR_REMOTE_MAX_QUEUED"), "{answers:?}");
    assert!(
        said(503, "HOOK_EXECUTOR_REMOTE_QUEUE_TIMEOUT"),
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 429 || *s == 503),
        "{answers:?}"
    );
    assert_eq!(
        api_json(&socket, "DELETE", &format!("/remote/task/{running}"), None)
            .await
            .0,
        200
    );
    // A slot is free again: an execute runs at once.
    let pid = remote_execute(&socket, r#"{"command": "echo free"}"#).await;
    assert_eq!(remote_result(&socket, pid).await["stdout"], "free\n");
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[running, pid]).await;
}

/// Reads a running command's output until it has `n` lines.
async fn lines(socket: &Path, pid: i32, n: usize) -> Vec<i32> {
    let found = {
        let mut got = None;
        for _ in 0..1000 {
            let (_, v) = api_json(socket, "GET", &format!("/remote/task/{pid}"), None).await;
            let pids: Vec<i32> = v["stdout"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.len() >= n {
                got = Some(pids);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got
    };
    found.unwrap_or_else(|| panic!("{pid} never printed {n} pids"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_leave_a_commands_group_die_with_it() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;

    // Ends at once, leaving a double-forked sleep in its own session.
    let pid = remote_execute(&socket, r#"{"command": "(setsid sleep 600 & echo $!)"}"#).await;
    let r = remote_result(&socket, pid).await;
    assert_eq!(r["exitCode"], 0, "{r}");
    let escaped: i32 = r["stdout"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("the escaped pid: {r}"));
    assert_gone(&[escaped, pid]).await;

    // Terminated while the escaped process runs; the exit code is the
    // command's own (143: its shell got the SIGTERM).
    let pid = remote_execute(
        &socket,
        r#"{"command": "(setsid sleep 600 & echo $!); sleep 600"}"#,
    )
    .await;
    let escaped = lines(&socket, pid, 1).await[0];
    assert!(alive(escaped), "the escaped sleep runs");
    let (status, r) = api_json(&socket, "DELETE", &format!("/remote/task/{pid}"), None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["signaled"].as_bool(), r["exitCode"].as_i64()),
        (Some(true), Some(15)),
        "{r}"
    );
    assert_gone(&[escaped, pid]).await;

    // Its exit status is the command's, not the guard's.
    let pid = remote_execute(&socket, r#"{"command": "exit 7"}"#).await;
    assert_eq!(remote_result(&socket, pid).await["exitCode"], 7);
    let pid = remote_execute(&socket, r#"{"command": "kill -KILL $$"}"#).await;
    let r = remote_result(&socket, pid).await;
    assert_eq!(
        (r["signaled"].as_bool(), r["exitCode"].as_i64()),
        (Some(true), Some(9)),
        "{r}"
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_executor_leaves_no_remote_command() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (_, status) = api_json(&socket, "GET", "/remote/status", None).await;
    let task = i32::try_from(status["task_pid"].as_i64().expect("task pid")).expect("fits");
    // A lone sleep, a shell with a child, and one that left its group.
    let lone = remote_execute(
        &socket,
        r#"{"command": "sleep", "arguments": ["600"], "shell": false}"#,
    )
    .await;
    let tree = remote_execute(
        &socket,
        r#"{"command": "echo $$; sleep 600 & echo $!; (setsid sleep 600 & echo $!); wait"}"#,
    )
    .await;
    let mut pids = lines(&socket, tree, 3).await;
    pids.extend([lone, tree]);
    for p in &pids {
        assert!(alive(*p), "{p} runs");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the executor");
    let _ = exec.wait_exit(SOON).await;
    assert_gone(&pids).await;
    // The task is the agent's to clean up (not the executor's) once the
    // executor is gone: this test does it.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(task),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_gone(&[task]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_output_is_discarded_past_the_cap_and_the_command_still_ends() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_MAX_OUTPUT", "10000")]).await;
    // 200 MB on stdout (one long line) and 100 MB on stderr: far past the cap.
    let pid = remote_execute(
        &socket,
        r#"{"command": "head -c 100000000 /dev/zero >&2 & head -c 200000000 /dev/zero | tr '\\0' y; wait; echo done >&2"}"#,
    )
    .await;
    let (status, r) = api_json(
        &socket,
        "GET",
        &format!("/remote/task/{pid}?wait=600"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["stdout"], "y".repeat(10000));
    assert_eq!(
        (
            r["stdoutTruncated"].as_bool(),
            r["stderrTruncated"].as_bool()
        ),
        (Some(true), Some(true)),
        "{r}"
    );
    assert_eq!(r["stderr"].as_str().map(str::len), Some(10000));
    // The SSE replay of a capped long line ends with its tail and the exit.
    let a = api(&socket, "GET", &format!("/remote/task/{pid}/output"), None).await;
    let events = sse_events(&a.body);
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("exit"));
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_pid_is_400_on_every_route_and_an_unknown_one_404() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    for bad in ["0", "-1", "+5", "2147483648", "abc"] {
        for (method, path) in [
            ("GET", format!("/remote/task/{bad}")),
            ("DELETE", format!("/remote/task/{bad}")),
            ("GET", format!("/remote/task/{bad}/output")),
        ] {
            assert_eq!(
                api(&socket, method, &path, None).await.status,
                400,
                "{method} {path}"
            );
        }
    }
    for bad in ["0", "-1", "2147483648", "1.5", "\"5\""] {
        let body = format!(r#"{{"pid": {bad}}}"#);
        assert_eq!(
            api(&socket, "POST", "/remote/task", Some(&body))
                .await
                .status,
            400,
            "{body}"
        );
    }
    assert_eq!(
        api(&socket, "GET", "/remote/task/999999", None)
            .await
            .status,
        404
    );
    assert_eq!(
        api(&socket, "POST", "/remote/task", Some(r#"{"pid": 999999}"#))
            .await
            .status,
        404
    );
    // Any positive timeout is a timeout, however small.
    let pid = remote_execute(&socket, r#"{"command": "sleep 600", "timeout": 1e-12}"#).await;
    let r = remote_result(&socket, pid).await;
    assert_eq!(r["timedOut"], true, "{r}");
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[pid]).await;
}

/// A refused peer's request is answered 403 at once; an allowed peer whose
/// request arrives in pieces is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_peer_is_answered_at_once() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a peer as nobody");
        return;
    }
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", "0,1000")]).await;
    std::fs::set_permissions(exec.sandbox.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let (mut peer, forbidden, closed) = refused_peer(&socket, 1, NOBODY);
    assert_eq!((forbidden, closed), (1, 0));
    let _ = peer.kill();
    let _ = peer.wait();
    // The allowed peer on a raw connection: a request in pieces still works.
    let short = mesos_hook_executor::remote::socket::ShortPath::new(&socket).expect("path");
    let mut raw = tokio::net::UnixStream::connect(short.path())
        .await
        .expect("connect");
    raw.write_all(b"GET /remote/status HTTP/1.1\r\n")
        .await
        .expect("write");
    raw.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    stop_executor(&emu, &mut exec).await;
}

/// The parent pid of `pid` from `/proc`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The children of `pid` from `/proc`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// The descriptors `pid` holds open.
fn open_fds(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the fd directory")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// Guards are forked by the spawner (a child of the executor), and neither
/// a guard nor its command holds any descriptor of the executor's or the
/// spawner's: the command has its three streams, the guard none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commands_run_under_a_guard_of_the_spawner_and_inherit_no_descriptor() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (guard, spawner) = spawner_of(&socket, &exec).await;
    assert_eq!(
        parent_of(spawner),
        Some(exec.pid),
        "the spawner is the executor's child"
    );
    let comm = std::fs::read_to_string(format!("/proc/{spawner}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "hook-spawner", "named for ps");
    let command = poll(SOON, || children_of(guard).first().copied())
        .await
        .expect("the guard's command");
    assert_eq!(
        open_fds(guard),
        Vec::<i32>::new(),
        "the guard keeps nothing open"
    );
    // Eventually: a program may open a file or two while it starts (sleep
    // reads its locale); a leaked descriptor stays.
    let streams_only = |pid: i32| async move {
        poll(SOON, || (open_fds(pid) == [0, 1, 2]).then_some(()))
            .await
            .is_some()
    };
    let settled = streams_only(command).await;
    let targets: Vec<String> = open_fds(command)
        .iter()
        .map(|fd| {
            format!(
                "{fd} -> {:?}",
                std::fs::read_link(format!("/proc/{command}/fd/{fd}"))
            )
        })
        .collect();
    assert!(settled, "the command has its streams only: {targets:?}");
    // Nor does the task (started by the executor itself).
    let (_, status) = api_json(&socket, "GET", "/remote/status", None).await;
    let task = i32::try_from(status["task_pid"].as_i64().expect("task pid")).expect("fits");
    assert!(
        streams_only(task).await,
        "the task has its streams only: {:?}",
        open_fds(task)
    );
    let (status, r) = api_json(&socket, "DELETE", &format!("/remote/task/{guard}"), None).await;
    assert_eq!(status, 200, "{r}");
    assert_gone(&[command, guard]).await;
    stop_executor(&emu, &mut exec).await;
}

/// Starts `sleep 600` as a remote command; returns its guard and the
/// spawner that forked it (checked not to be the executor).
async fn spawner_of(socket: &Path, exec: &Executor) -> (i32, i32) {
    let guard = remote_execute(socket, r#"{"command": "sleep 600"}"#).await;
    let spawner = parent_of(guard).expect("the guard's parent");
    assert_ne!(
        spawner, exec.pid,
        "the guard was forked by the executor itself"
    );
    (guard, spawner)
}

/// A command runs and reports its output (after the spawner was lost).
async fn assert_a_command_runs(socket: &Path) {
    let pid = remote_execute(socket, r#"{"command": "echo after"}"#).await;
    let r = remote_result(socket, pid).await;
    assert_eq!(
        (r["exitCode"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("after\n")),
        "{r}"
    );
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal");
}

/// The spawner dies (say the OOM killer chose it): the commands it started
/// die with it and report how they ended, and the executor forks later
/// guards itself; the task and the executor carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_spawner_dies_the_executor_forks_guards_itself() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (running, spawner) = spawner_of(&socket, &exec).await;
    signal(spawner, nix::sys::signal::Signal::SIGKILL);
    let r = remote_result(&socket, running).await;
    assert_eq!(
        (r["signaled"].as_bool(), r["exitCode"].as_i64()),
        (Some(true), Some(9)),
        "{r}"
    );
    assert_gone(&[spawner, running]).await;
    assert_a_command_runs(&socket).await;
    stop_executor(&emu, &mut exec).await;
    assert!(
        exec.log().contains("spawner is gone"),
        "log:\n{}",
        exec.log()
    );
}

/// When the executor ends, its spawner ends with it and is collected by the
/// executor itself, not left as a zombie for whoever inherits it (this
/// machine's init, for one, does not reap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_collects_its_spawner_when_it_ends() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (running, spawner) = spawner_of(&socket, &exec).await;
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[running]).await;
    assert_collected(spawner);
}

/// So are the guards it forked itself once its spawner was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_collects_the_guards_it_forked_when_it_ends() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (first, spawner) = spawner_of(&socket, &exec).await;
    signal(spawner, nix::sys::signal::Signal::SIGKILL);
    assert_gone(&[spawner, first]).await;
    let guard = remote_execute(&socket, r#"{"command": "sleep 600"}"#).await;
    assert_eq!(parent_of(guard), Some(exec.pid), "forked by the executor");
    stop_executor(&emu, &mut exec).await;
    assert_collected(guard);
}

/// Not even a zombie of `pid` is left (this machine's init does not reap
/// what is handed to it).
fn assert_collected(pid: i32) {
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(
        !proc_dir.exists(),
        "{pid} is still there: {:?}",
        std::fs::read_to_string(proc_dir.join("stat"))
    );
}

/// A spawner that stops answering (here: SIGSTOPped) costs one request its
/// answer timeout, then the executor kills it and forks guards itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawner_that_stops_answering_is_replaced_after_its_timeout() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let (first, spawner) = spawner_of(&socket, &exec).await;
    let (status, r) = api_json(&socket, "DELETE", &format!("/remote/task/{first}"), None).await;
    assert_eq!(status, 200, "{r}");
    signal(spawner, nix::sys::signal::Signal::SIGSTOP);
    let held = remote_execute(&socket, r#"{"command": "sleep 600"}"#).await;
    assert_eq!(parent_of(held), Some(exec.pid), "forked by the executor");
    let (status, r) = api_json(&socket, "DELETE", &format!("/remote/task/{held}"), None).await;
    assert_eq!(status, 200, "{r}");
    assert_a_command_runs(&socket).await;
    assert_gone(&[spawner]).await;
    stop_executor(&emu, &mut exec).await;
    assert!(
        exec.log()
            .contains("forking guards in the executor from now on"),
        "log:\n{}",
        exec.log()
    );
}
