//! The checkers: one spawned task per check that probes on its [`Schedule`]
//! and hands each raw [`Observation`] to the owner's inbox. HTTP(S) probes go
//! through the shared probe client of [`crate::net::http`] (fresh connection,
//! `curl -k -L` semantics), TCP probes connect in-process, COMMAND probes
//! fork through the executor's reaper.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle};
use tracing::debug;

use super::{
    spec::{Probe, Schedule},
    verdict::Observation,
    TaskContext,
};
use crate::{
    net::http::{self, MAX_REDIRECTS},
    task::guard::Leftovers,
    task::launch::{self, Program},
    task::process::{AuxCommand, AuxIo, AuxiliaryStdio, Reaper},
    task::termination::{self, ExitOutcome},
};

/// One check, ready to probe repeatedly.
pub(crate) struct ProbeRunner {
    /// `health check` or `check`, for logs and timeout messages.
    name: &'static str,
    kind: RunnerKind,
    /// The schedule's per-probe timeout, also given to HTTP requests.
    timeout: Option<Duration>,
}

enum RunnerKind {
    /// GET this URL (`http(s)://127.0.0.1:PORT/path` or `[::1]`).
    Http {
        url: String,
    },
    Tcp {
        addr: SocketAddr,
    },
    Command {
        program: Program,
        env: BTreeMap<String, String>,
        cwd: PathBuf,
        reaper: Reaper,
    },
}

impl ProbeRunner {
    pub(crate) fn new(
        name: &'static str,
        probe: Probe,
        schedule: &Schedule,
        ctx: &TaskContext,
    ) -> Self {
        let loopback = |ipv6: bool| {
            if ipv6 {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        };
        let kind = match probe {
            Probe::Http {
                tls,
                ipv6,
                port,
                path,
            } => {
                let scheme = if tls { "https" } else { "http" };
                let host = if ipv6 { "[::1]" } else { "127.0.0.1" };
                RunnerKind::Http {
                    url: format!("{scheme}://{host}:{port}{path}"),
                }
            }
            Probe::Tcp { ipv6, port } => RunnerKind::Tcp {
                addr: SocketAddr::new(loopback(ipv6), port),
            },
            Probe::Command(info) => {
                let mut env = ctx.env.clone();
                launch::apply_environment(&mut env, info.environment.as_ref());
                RunnerKind::Command {
                    program: launch::command_program(&info),
                    env,
                    cwd: ctx.cwd.clone(),
                    reaper: ctx.reaper.clone(),
                }
            }
        };
        Self {
            name,
            kind,
            timeout: schedule.timeout,
        }
    }

    async fn probe(&self) -> Observation {
        match &self.kind {
            RunnerKind::Http { url } => http_probe(url, self.timeout).await,
            RunnerKind::Tcp { addr } => Observation::Tcp(TcpStream::connect(addr).await.is_ok()),
            RunnerKind::Command {
                program,
                env,
                cwd,
                reaper,
            } => command_probe(program, env, cwd, reaper).await,
        }
    }
}

/// Spawns the checker loop: sleep `delay`, then probe under the timeout,
/// report, and sleep `interval` counted from the end of the probe (fixed
/// delay, as Mesos), so a slow check never runs twice at once.
pub(crate) fn spawn_checker<T: Send + 'static>(
    runner: ProbeRunner,
    schedule: Schedule,
    inbox: mpsc::Sender<T>,
    input: fn(Observation) -> T,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(schedule.delay).await;
        let mut failures_in_a_row = 0;
        loop {
            let run = runner.probe();
            let started = tokio::time::Instant::now();
            let observation = match schedule.timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                    Observation::Error(format!("{} timed out after {limit:?}", runner.name))
                }),
                None => run.await,
            };
            debug!(check = runner.name, ?observation, "probe done");
            failures_in_a_row = count_probe(
                runner.name,
                &observation,
                started.elapsed(),
                failures_in_a_row,
            );
            if inbox.send(input(observation)).await.is_err() {
                return;
            }
            tokio::time::sleep(schedule.interval).await;
        }
    })
}

/// Counts one probe for the metrics; returns the failures in a row.
fn count_probe(
    check: &'static str,
    observation: &Observation,
    took: Duration,
    in_a_row: i64,
) -> i64 {
    let m = &crate::metrics::get().health;
    let kind = if check == "health check" {
        "health"
    } else {
        "check"
    };
    let success = super::verdict::health_failure(observation).is_none();
    m.probes
        .with_label_values(&[kind, crate::metrics::result_label(success)])
        .inc();
    m.probe_duration
        .with_label_values(&[kind])
        .observe(took.as_secs_f64());
    let in_a_row = if success {
        0
    } else {
        in_a_row.saturating_add(1)
    };
    m.consecutive_failures
        .with_label_values(&[kind])
        .set(in_a_row);
    in_a_row
}

/// GETs `url`, following redirects; the final status. A request that cannot
/// be made, too many redirects, or a redirect whose `Location` cannot be
/// followed is an error (curl fails on all three).
async fn http_probe(url: &str, timeout: Option<Duration>) -> Observation {
    match http::probe(url, timeout).await {
        Ok(http::ProbeAnswer {
            unfollowed: Some(location),
            ..
        }) => Observation::Error(format!(
            "GET {url}: cannot follow the redirect to {location:?}"
        )),
        Ok(answer) => Observation::Http(answer.status),
        Err(e) if e.is_too_many_redirects() => Observation::Error(format!(
            "GET {url}: maximum ({MAX_REDIRECTS}) redirects followed"
        )),
        Err(e) => Observation::Error(e.to_string()),
    }
}

/// Runs a COMMAND check: through the reaper (never `Child::wait`), in its own
/// process group, stdin from `/dev/null`, stdout and stderr to the
/// executor's stderr, in the task's environment and sandbox.
async fn command_probe(
    program: &Program,
    env: &BTreeMap<String, String>,
    cwd: &Path,
    reaper: &Reaper,
) -> Observation {
    let mut cmd = AuxCommand::program(program);
    cmd.envs(env).current_dir(cwd);
    let stdio = AuxiliaryStdio {
        stdin: AuxIo::Null,
        stdout: executor_stderr(),
        stderr: executor_stderr(),
    };
    // Dropped on every way out (the check's timeout drops this future): the group goes with it.
    let mut check = match reaper.spawn_guarded(cmd, stdio, None, Leftovers::Leave) {
        Ok(check) => check,
        Err(e) => {
            return Observation::Error(format!(
                "cannot start the check command `{}`: {e}",
                program.display()
            ))
        }
    };
    match check.wait().await {
        Ok(ExitOutcome::Exited(code)) => Observation::Exited(code),
        Ok(ExitOutcome::Signaled { signal, .. }) => Observation::Error(format!(
            "Command terminated with signal {}",
            termination::signal_description(signal)
        )),
        Ok(outcome @ ExitOutcome::NotExecuted { .. }) => Observation::Error(outcome.message()),
        Err(_) => Observation::Error("the check command's exit status was lost".to_owned()),
    }
}

/// The executor's stderr (the sandbox `stderr` file) for a child's output.
fn executor_stderr() -> AuxIo {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or(AuxIo::Null, AuxIo::Fd)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A keep-alive HTTP/1.1 server on 127.0.0.1 answering every request with
    /// `route(path)` = (status, `Location`); returns its port and the number
    /// of connections it accepted.
    async fn server(route: fn(&str) -> (u16, Option<String>)) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head: String = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let (code, location) = route(head.split_whitespace().nth(1).unwrap_or("/"));
                        let location = location
                            .map(|l| format!("Location: {l}\r\n"))
                            .unwrap_or_default();
                        let answer =
                            format!("HTTP/1.1 {code} Test\r\n{location}Content-Length: 0\r\n\r\n");
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, connections)
    }

    /// `/hop/N` redirects (relatively) to `/hop/N-1`, `/hop/0` is 200.
    fn routes(path: &str) -> (u16, Option<String>) {
        match path {
            "/missing" => (404, None),
            "/no-location" => (302, None),
            "/mail" => (302, Some("mailto:x@y".into())),
            "/ftp" => (301, Some("ftp://127.0.0.1/x".into())),
            "/absolute" => (307, Some("/hop/0".into())),
            _ => match path
                .strip_prefix("/hop/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(0) => (200, None),
                Some(n) => (302, Some((n - 1).to_string())),
                None => (500, None),
            },
        }
    }

    const LIMIT: Option<Duration> = Some(Duration::from_secs(5));

    #[tokio::test]
    async fn redirects_are_followed_up_to_the_limit() {
        let (port, _) = server(routes).await;
        let get = |path: &str| {
            let url = format!("http://127.0.0.1:{port}{path}");
            async move { http_probe(&url, LIMIT).await }
        };
        assert_eq!(get("/hop/0").await, Observation::Http(200));
        assert_eq!(
            get(&format!("/hop/{MAX_REDIRECTS}")).await,
            Observation::Http(200),
            "relative locations resolve"
        );
        assert_eq!(get("/absolute").await, Observation::Http(200));
        let Observation::Error(e) = get(&format!("/hop/{}", MAX_REDIRECTS + 1)).await else {
            panic!("followed too many")
        };
        assert!(e.contains("maximum (5) redirects followed"), "{e}");
        assert_eq!(get("/missing").await, Observation::Http(404));
        assert_eq!(
            get("/no-location").await,
            Observation::Http(302),
            "a redirect without Location is an answer"
        );
        for bad in ["/mail", "/ftp"] {
            assert!(matches!(get(bad).await, Observation::Error(_)), "{bad}");
        }
    }

    #[tokio::test]
    async fn every_probe_opens_a_fresh_connection() {
        let (port, connections) = server(routes).await;
        let url = format!("http://127.0.0.1:{port}/hop/0");
        for _ in 0..3 {
            assert_eq!(http_probe(&url, LIMIT).await, Observation::Http(200));
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            3,
            "the server keeps connections alive; the probe must not reuse them"
        );
    }

    #[tokio::test]
    async fn refused_and_silent_servers_are_errors() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let Observation::Error(e) = http_probe(&format!("http://127.0.0.1:{closed}/"), LIMIT).await
        else {
            panic!("connected")
        };
        assert!(e.to_lowercase().contains("refused"), "{e}");
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", silent.local_addr().expect("addr"));
        let Observation::Error(e) = http_probe(&url, Some(Duration::from_millis(200))).await else {
            panic!("answered")
        };
        assert!(e.contains("no answer within 200ms"), "{e}");
    }
}
