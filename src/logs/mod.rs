//! The task's output through the executor, when asked: sandbox rotation and
//! log scraping with shipping to Logstash (docs/logging.md).
//!
//! By default the task inherits the executor's stdout and stderr (the
//! sandbox files) and nothing here runs. When rotation
//! (`HOOK_EXECUTOR_LOG_ROTATE_SIZE`) or scraping (task label `log-scraping`,
//! or `HOOK_EXECUTOR_LOG_SCRAPING`) is on, the task's stdout and stderr are
//! two pipes, each drained by a thread of its own ([`drain`]) that writes
//! every byte, in order, to the executor's own stdout or stderr ([`rotate`]),
//! and, when scraping, parses ([`parse`]) and enriches ([`entry`]) the lines
//! of each read and offers the finished entries, as one batch, to a bounded
//! queue (never waiting: what does not fit is dropped and counted). One
//! shipper thread ([`ship`]) sends them; Consul discovery ([`discovery`])
//! runs on the executor's runtime.
//! [`counters`] count what happened, including every drop by cause.
//!
//! The owner loop decides ([`plan`], pure, in the step), starts the
//! [`Pipeline`] with the task, and, when the task has ended, asks it to
//! drain ([`Pipeline::finish`], bounded by `HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT`)
//! before the terminal update goes out.

pub mod counters;
mod discovery;
mod drain;
pub mod entry;
mod parse;
mod rotate;
mod ship;

use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{info, warn};

pub use self::counters::{OutputCounters, OutputCountersSnapshot};
use self::entry::{Context, Stream};
use crate::{
    config::{LogstashTarget, OutputSettings, ScrapeFormat, Secret},
    proto::v1,
};

/// The task label that turns scraping on (`logstash`, `json`, `logfmt`).
pub const SCRAPING_LABEL: &str = "log-scraping";
/// The task label that also ships lines that do not parse.
pub const SCRAPING_ALL_LABEL: &str = "log-scraping-all";

/// After the drain time, how long the shipper gets to count what it drops.
const SETTLE: Duration = Duration::from_millis(500);

/// Batches waiting to be shipped at most.
const MAX_BATCHES: usize = 4096;

/// What to do with one task's output when it goes through the executor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputPlan {
    /// Rotate the sandbox files (when they are ours to rotate).
    pub rotate: bool,
    /// Scrape and ship.
    pub scrape: Option<ScrapePlan>,
}

/// How to scrape one task's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapePlan {
    /// How lines are read.
    pub format: ScrapeFormat,
    /// Ship lines that do not parse as plain `message`s.
    pub forward_plain: bool,
    /// Fields every entry carries.
    pub context: Context,
}

/// What [`plan`] knows of the task besides the settings.
#[derive(Debug, Clone, Copy)]
pub struct TaskFacts<'a> {
    /// The task.
    pub task: &'a v1::TaskInfo,
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: &'a str,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: &'a str,
    /// The agent's hostname, once SUBSCRIBED told it.
    pub agent_host: Option<&'a str>,
    /// The task's environment (Marathon's `MARATHON_APP_*` are there).
    pub env: &'a BTreeMap<String, String>,
}

fn label<'a>(task: &'a v1::TaskInfo, key: &str) -> Option<&'a str> {
    task.labels
        .as_ref()?
        .labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_deref().unwrap_or(""))
}

/// Whether the task's output goes through the executor, and how; `None`
/// (the default) leaves the task writing to the sandbox files itself.
#[must_use]
pub fn plan(settings: &OutputSettings, facts: TaskFacts<'_>) -> Option<OutputPlan> {
    let task = facts.task;
    let format = match label(task, SCRAPING_LABEL) {
        Some(value) => match ScrapeFormat::from_label(value.trim()) {
            Some(format) => Some(format),
            None => {
                warn!(task_id = %task.task_id.value, value, "unknown `log-scraping` label value (expected logstash, json or logfmt); not scraping");
                None
            }
        },
        None => settings.scraping,
    };
    let format = match (format, &settings.target) {
        (Some(_), None) => {
            warn!(task_id = %task.task_id.value, "log scraping asked for, but no Logstash address or discovery service is configured; not scraping");
            None
        }
        (format, _) => format,
    };
    let rotate = settings.rotate_size.is_some();
    if format.is_none() && !rotate {
        return None;
    }
    let scrape = format.map(|format| {
        let forward_plain = settings.scraping_all
            || label(task, SCRAPING_ALL_LABEL).is_some_and(|v| !matches!(v.trim(), "false" | "0"));
        ScrapePlan {
            format,
            forward_plain,
            context: context(settings, facts),
        }
    });
    Some(OutputPlan { rotate, scrape })
}

/// The fields every entry of the task carries (docs/logging.md).
fn context(settings: &OutputSettings, facts: TaskFacts<'_>) -> Context {
    let mut fields = vec![
        ("task_id".to_owned(), facts.task.task_id.value.clone()),
        ("framework_id".to_owned(), facts.framework_id.to_owned()),
        ("executor_id".to_owned(), facts.executor_id.to_owned()),
        // allegro's `instance-id`: Marathon names a custom executor per instance.
        ("instance_id".to_owned(), facts.executor_id.to_owned()),
    ];
    if let Some(host) = facts.agent_host {
        fields.push(("agent_host".to_owned(), host.to_owned()));
    }
    for (var, field) in [
        ("MARATHON_APP_ID", "marathon_app_id"),
        ("MARATHON_APP_VERSION", "marathon_app_version"),
    ] {
        if let Some(value) = facts.env.get(var) {
            fields.push((field.to_owned(), value.clone()));
        }
    }
    for key in &settings.labels {
        if let Some(value) = label(facts.task, key) {
            fields.push((key.to_lowercase(), value.to_owned()));
        }
    }
    Context {
        fields,
        ignore_keys: settings.ignore_keys.clone(),
    }
}

/// The executor side of the task's two pipes.
#[derive(Debug)]
pub struct TaskPipes {
    /// Read ends, for the pipeline.
    pub readers: [OwnedFd; 2],
    /// Write ends, for the task (stdout, stderr); closed here after the spawn.
    pub writers: [OwnedFd; 2],
}

/// Two close-on-exec pipes with a 1 MiB buffer where the system allows it
/// (fewer wake-ups for the drain, more slack for the task).
pub fn task_pipes() -> std::io::Result<TaskPipes> {
    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure just keeps the default.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        Ok((r, w))
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok(TaskPipes {
        readers: [out_r, err_r],
        writers: [out_w, err_w],
    })
}

/// How to reach Consul for discovery (the `consul` hook's conventions).
#[derive(Debug, Clone)]
pub struct ConsulAccess {
    /// `CONSUL_HTTP_ADDR` as a base URL.
    pub base_url: String,
    /// `CONSUL_HTTP_TOKEN`.
    pub token: Option<Secret>,
    /// Timeout of each call.
    pub timeout: Duration,
}

/// A running pipeline: the drain threads, the shipper, discovery.
#[derive(Debug)]
pub struct Pipeline {
    done: Vec<oneshot::Receiver<()>>,
    stop: Arc<AtomicBool>,
    discovery: Option<JoinHandle<()>>,
    counters: Arc<OutputCounters>,
}

impl Pipeline {
    /// Starts draining `readers` (stdout, stderr) per `plan`. Must run on
    /// the executor's runtime (discovery is a task on it). An error means no
    /// thread could be started: the caller lets the task inherit instead.
    pub fn start(
        plan: &OutputPlan,
        settings: &OutputSettings,
        sandbox_dirs: &[PathBuf],
        consul: &ConsulAccess,
        readers: [OwnedFd; 2],
        counters: Arc<OutputCounters>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut done = Vec::new();
        let mut discovery = None;
        let mut encoding = None;
        let queue = match &plan.scrape {
            None => None,
            Some(scrape) => {
                // Slots are allocated up front: bound them in batches (each
                // holds one read's entries); entries and bytes are bound in
                // `drain::Queue`.
                let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue_size.min(MAX_BATCHES));
                let level = Arc::new(drain::Level::default());
                let targets = match settings.target.clone() {
                    Some(LogstashTarget::Consul { service, refresh }) => {
                        let list = Arc::new(Mutex::new(Vec::new()));
                        discovery = Some(tokio::spawn(discovery::run(
                            consul.clone(),
                            service,
                            refresh,
                            list.clone(),
                        )));
                        ship::Targets::Discovered(list)
                    }
                    Some(LogstashTarget::Address(a)) => ship::Targets::Fixed(a),
                    None => ship::Targets::Discovered(Arc::new(Mutex::new(Vec::new()))),
                };
                encoding = Some(Arc::new(drain::Encoding {
                    format: scrape.format,
                    forward_plain: scrape.forward_plain,
                    context: entry::Prepared::new(&scrape.context),
                    size_limit: entry_limit(settings.protocol, settings.size_limit),
                }));
                let cfg = ship::ShipConfig {
                    protocol: settings.protocol,
                    targets,
                    rate_limit: settings.rate_limit,
                    tcp_keep_alive: settings.tcp_keep_alive,
                    tcp_timeout: settings.tcp_timeout,
                    stop: stop.clone(),
                };
                let (done_tx, done_rx) = oneshot::channel();
                let (shared_level, counters) = (level.clone(), counters.clone());
                let spawned = std::thread::Builder::new()
                    .name("log-shipper".into())
                    .spawn(move || {
                        ship::run(&rx, &shared_level, &cfg, &counters);
                        let _ = done_tx.send(());
                    });
                if let Err(e) = spawned {
                    if let Some(d) = discovery.take() {
                        d.abort();
                    }
                    return Err(e);
                }
                done.push(done_rx);
                Some(drain::Queue {
                    tx,
                    level,
                    max_bytes: settings.queue_bytes,
                    max_entries: settings.queue_size,
                })
            }
        };
        counters.activate();
        let [out_r, err_r] = readers;
        let targets = rotation_targets(plan, settings, sandbox_dirs);
        for ((pipe, stream, fd), target) in [(out_r, Stream::Stdout, 1), (err_r, Stream::Stderr, 2)]
            .into_iter()
            .zip(targets)
        {
            let mut file = match (target, settings.rotate_size) {
                (Some(path), Some(size)) => {
                    info!(stream = stream.name(), file = %path.display(), size, keep = settings.rotate_keep, "rotating the sandbox file by size");
                    rotate::SandboxFile::rotating(fd, path, size, settings.rotate_keep)
                }
                _ => rotate::SandboxFile::plain(fd),
            };
            let scrape = queue
                .clone()
                .zip(encoding.clone())
                .map(|(queue, encoding)| drain::Scrape {
                    splitter: drain::Splitter::new(settings.max_line),
                    queue,
                    encoding,
                });
            let (done_tx, done_rx) = oneshot::channel();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("task-{}", stream.name()))
                .spawn(move || {
                    drain::drain(&pipe, stream, &mut file, scrape, &counters);
                    let _ = done_tx.send(());
                })?;
            done.push(done_rx);
        }
        Ok(Self {
            done,
            stop,
            discovery,
            counters,
        })
    }

    /// Waits, at most `timeout`, for both pipes to reach EOF (every process
    /// of the task gone) and the queue to be shipped; then stops what is
    /// left (queued entries are dropped and counted) and returns the counters.
    pub async fn finish(self, timeout: Duration) -> Option<OutputCountersSnapshot> {
        let mut done = self.done;
        if tokio::time::timeout(timeout, wait_all(&mut done))
            .await
            .is_err()
        {
            warn!(?timeout, "the task's output was not drained in time (HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT); dropping what is left");
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // A moment for the shipper to count what it drops (a write the
            // sink holds gives up within a tenth of a second).
            let _ = tokio::time::timeout(SETTLE, wait_all(&mut done)).await;
        }
        if let Some(d) = self.discovery {
            d.abort();
        }
        self.counters.snapshot()
    }
}

/// Waits for every thread's end, forgetting each once seen (a finished
/// receiver must not be polled again), so it can be resumed after a timeout.
async fn wait_all(done: &mut Vec<oneshot::Receiver<()>>) {
    while let Some(first) = done.first_mut() {
        let _ = first.await;
        done.remove(0);
    }
}

/// The largest entry shipped, newline included (0: no limit): the size
/// limit, and over UDP the datagram size.
fn entry_limit(protocol: crate::config::Protocol, size_limit: usize) -> usize {
    match protocol {
        crate::config::Protocol::Udp if size_limit == 0 => ship::MAX_DATAGRAM,
        crate::config::Protocol::Udp => size_limit.min(ship::MAX_DATAGRAM),
        crate::config::Protocol::Tcp => size_limit,
    }
}

/// The files to rotate for stdout and stderr (the executor's descriptors 1
/// and 2): only regular files in the sandbox, and neither when both are one
/// file (two rotations of one file would tear it apart).
fn rotation_targets(
    plan: &OutputPlan,
    settings: &OutputSettings,
    sandbox_dirs: &[PathBuf],
) -> [Option<PathBuf>; 2] {
    if !plan.rotate || settings.rotate_size.is_none() {
        return [None, None];
    }
    let [out, err] = [(1, Stream::Stdout), (2, Stream::Stderr)].map(|(fd, stream)| {
        rotate::rotation_path(fd, sandbox_dirs)
            .map_err(|why| {
                info!(stream = stream.name(), reason = %why, "not rotating the executor's output: the agent's logger owns it");
            })
            .ok()
    });
    if out.is_some() && out == err {
        info!("stdout and stderr are one file; not rotating it");
        return [None, None];
    }
    [out, err]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Label, Labels, TaskId};

    fn task(labels: &[(&str, &str)]) -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: TaskId { value: "t1".into() },
            labels: Some(Labels {
                labels: labels
                    .iter()
                    .map(|(k, v)| Label {
                        key: (*k).into(),
                        value: Some((*v).into()),
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    fn settings() -> OutputSettings {
        OutputSettings {
            target: Some(LogstashTarget::Address("127.0.0.1:5000".into())),
            labels: vec!["scId".into()],
            ..OutputSettings::default()
        }
    }

    fn facts<'a>(task: &'a v1::TaskInfo, env: &'a BTreeMap<String, String>) -> TaskFacts<'a> {
        TaskFacts {
            task,
            framework_id: "fw",
            executor_id: "ex",
            agent_host: Some("agent1"),
            env,
        }
    }

    #[test]
    fn by_default_the_task_writes_to_the_sandbox_itself() {
        let env = BTreeMap::new();
        assert_eq!(plan(&settings(), facts(&task(&[]), &env)), None);
    }

    #[test]
    fn the_label_turns_scraping_on_with_the_context() {
        let env: BTreeMap<String, String> = [
            ("MARATHON_APP_ID".to_owned(), "/shop/api".to_owned()),
            (
                "MARATHON_APP_VERSION".to_owned(),
                "2024-01-01T00:00:00.000Z".to_owned(),
            ),
        ]
        .into();
        let t = task(&[("log-scraping", "logstash"), ("scId", "123")]);
        let p = plan(&settings(), facts(&t, &env)).expect("scraping");
        assert!(!p.rotate);
        let s = p.scrape.expect("scrape");
        assert_eq!(s.format, ScrapeFormat::Auto);
        assert!(!s.forward_plain);
        let field = |k: &str| {
            s.context
                .fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("task_id"), Some("t1"));
        assert_eq!(field("framework_id"), Some("fw"));
        assert_eq!(field("executor_id"), Some("ex"));
        assert_eq!(field("instance_id"), Some("ex"));
        assert_eq!(field("agent_host"), Some("agent1"));
        assert_eq!(field("marathon_app_id"), Some("/shop/api"));
        assert_eq!(
            field("marathon_app_version"),
            Some("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(field("scid"), Some("123"));
    }

    #[test]
    fn forced_formats_scraping_all_and_bad_values() {
        let env = BTreeMap::new();
        let t = task(&[("log-scraping", "logfmt"), ("log-scraping-all", "true")]);
        let s = plan(&settings(), facts(&t, &env))
            .and_then(|p| p.scrape)
            .expect("scrape");
        assert_eq!(s.format, ScrapeFormat::Logfmt);
        assert!(s.forward_plain);
        let t = task(&[("log-scraping", "json"), ("log-scraping-all", "false")]);
        let s = plan(&settings(), facts(&t, &env))
            .and_then(|p| p.scrape)
            .expect("scrape");
        assert!(!s.forward_plain);
        assert_eq!(
            plan(&settings(), facts(&task(&[("log-scraping", "xml")]), &env)),
            None
        );
        let nowhere = OutputSettings {
            target: None,
            ..settings()
        };
        assert_eq!(
            plan(&nowhere, facts(&task(&[("log-scraping", "json")]), &env)),
            None,
            "nowhere to ship"
        );
    }

    #[test]
    fn settings_scrape_and_rotate_every_task() {
        let env = BTreeMap::new();
        let all = OutputSettings {
            scraping: Some(ScrapeFormat::Json),
            scraping_all: true,
            rotate_size: Some(1 << 20),
            ..settings()
        };
        let p = plan(&all, facts(&task(&[]), &env)).expect("plan");
        assert!(p.rotate);
        let s = p.scrape.expect("scrape");
        assert_eq!(s.format, ScrapeFormat::Json);
        assert!(s.forward_plain);
        let rotate_only = OutputSettings {
            rotate_size: Some(1 << 20),
            ..settings()
        };
        assert_eq!(
            plan(&rotate_only, facts(&task(&[]), &env)),
            Some(OutputPlan {
                rotate: true,
                scrape: None
            })
        );
    }
}
