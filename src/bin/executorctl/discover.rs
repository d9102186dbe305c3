//! Host-wide discovery: the executors running on this agent host, found by
//! their sockets in the agent's work directory, and the choice of one of them
//! from `--task`.
//!
//! The Mesos agent keeps each executor run at
//! `<work_dir>/slaves/<agent>/frameworks/<framework>/executors/<executor>/runs/<container>/`
//! with `runs/latest` a symlink to the newest run; the sandbox is that run
//! directory, and our socket is `executor.sock` in it (unless
//! `HOOK_EXECUTOR_REMOTE_SOCKET` moved it elsewhere, which discovery cannot
//! see). Older runs have ended, so only `latest` is looked at.

use std::{
    io,
    path::{Path, PathBuf},
};

use mesos_hook_executor::remote::types::StatusResponse;

use crate::error::CtlError;

/// The socket's name in the sandbox (design §2).
pub const SOCKET_NAME: &str = "executor.sock";

/// One socket found under the work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The socket, through the resolved run directory (not `latest`).
    pub socket: PathBuf,
    /// The framework id, from the path.
    pub framework_id: String,
    /// The executor id, from the path.
    pub executor_id: String,
}

/// What asking a found socket for `/remote/status` gave.
#[derive(Debug, Clone)]
pub enum Probe {
    /// It answered.
    Running(Box<StatusResponse>),
    /// Nothing listens on it: the executor has exited.
    Stale,
    /// Something else went wrong (permission, timeout, bad answer).
    Unreachable(String),
}

/// A found socket and its probe.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is.
    pub found: Found,
    /// What it said.
    pub probe: Probe,
}

impl Entry {
    /// The task id, when the executor answered and has a task.
    pub fn task_id(&self) -> Option<&str> {
        match &self.probe {
            Probe::Running(s) => s.task_id.as_deref(),
            _ => None,
        }
    }

    /// The Marathon app id, when the executor answered and knows it.
    pub fn app_id(&self) -> Option<&str> {
        match &self.probe {
            Probe::Running(s) => s.marathon_app_id.as_deref(),
            _ => None,
        }
    }

    /// `task id (app id)`, how candidates are listed.
    pub fn label(&self) -> String {
        let task = self.task_id().unwrap_or(&self.found.executor_id);
        match self.app_id() {
            Some(app) => format!("{task} ({app})"),
            None => task.to_owned(),
        }
    }
}

/// The sockets under `work_dir`, sorted by path. Only an unreadable
/// `work_dir/slaves` is an error: an unreadable framework or executor
/// directory further down is skipped (the agent's layout is root's; a
/// non-root operator sees what they may).
pub fn scan(work_dir: &Path) -> Result<Vec<Found>, CtlError> {
    let slaves = work_dir.join("slaves");
    let agents = std::fs::read_dir(&slaves).map_err(|source| CtlError::WorkDir {
        path: slaves.clone(),
        source,
    })?;
    let mut found = Vec::new();
    for agent in subdirs(agents) {
        for framework in children(&agent.join("frameworks")) {
            for executor in children(&framework.join("executors")) {
                let latest = executor.join("runs").join("latest");
                // `latest` is a symlink to the run directory: resolve it, so
                // the path shown stays right when a new run replaces it.
                let Ok(run) = std::fs::canonicalize(&latest) else {
                    continue;
                };
                let socket = run.join(SOCKET_NAME);
                if std::fs::symlink_metadata(&socket).is_ok() {
                    found.push(Found {
                        socket,
                        framework_id: name(&framework),
                        executor_id: name(&executor),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.socket.cmp(&b.socket));
    Ok(found)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(subdirs).unwrap_or_default()
}

fn subdirs(entries: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(io::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Whether `query` names this app id: a prefix of it, with or without
/// Marathon's leading `/`.
fn app_matches(app: &str, query: &str) -> bool {
    let bare = |s: &str| s.trim_start_matches('/').to_owned();
    !bare(query).is_empty() && bare(app).starts_with(&bare(query))
}

/// The entry `query` names among the running ones: the task whose id is
/// exactly `query` if there is one; otherwise the only task whose id, or
/// Marathon app id, starts with `query`. No match, or several, is an error
/// that lists what there is.
pub fn select<'a>(
    entries: &'a [Entry],
    query: &str,
    work_dir: &Path,
) -> Result<&'a Entry, CtlError> {
    if let Some(exact) = entries.iter().find(|e| e.task_id() == Some(query)) {
        return Ok(exact);
    }
    // An empty query is a prefix of everything; it names nothing.
    let matches: Vec<&Entry> = entries
        .iter()
        .filter(|_| !query.is_empty())
        .filter(|e| {
            e.task_id().is_some_and(|t| t.starts_with(query))
                || e.app_id().is_some_and(|a| app_matches(a, query))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CtlError::NoTask {
            query: query.to_owned(),
            work_dir: work_dir.to_owned(),
            found: entries
                .iter()
                .filter(|e| matches!(e.probe, Probe::Running(_)))
                .count(),
        }),
        several => Err(CtlError::AmbiguousTask {
            query: query.to_owned(),
            candidates: several.iter().map(|e| e.label()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(task: Option<&str>, app: Option<&str>) -> Entry {
        let id = task.unwrap_or("none");
        Entry {
            found: Found {
                socket: PathBuf::from(format!("/w/{id}/executor.sock")),
                framework_id: "f".into(),
                executor_id: format!("e-{id}"),
            },
            probe: Probe::Running(Box::new(StatusResponse {
                release: String::new(),
                result: "ok".into(),
                sandbox_dir: String::new(),
                status: "active".into(),
                work_dir: String::new(),
                framework_id: "f".into(),
                executor_id: format!("e-{id}"),
                task_id: task.map(str::to_owned),
                marathon_app_id: app.map(str::to_owned),
                task_state: None,
                task_pid: None,
                healthy: None,
                running_commands: 0,
                retained_results: 0,
                task_output: None,
                scheduled_end: None,
                scheduled_end_reason: None,
            })),
        }
    }

    fn pick<'a>(entries: &'a [Entry], q: &str) -> Result<Option<&'a str>, CtlError> {
        select(entries, q, Path::new("/w")).map(Entry::task_id)
    }

    #[test]
    fn exact_task_id_wins_over_prefixes() {
        let entries = [
            running(Some("web.1"), Some("/shop/web")),
            running(Some("web.10"), Some("/shop/web")),
        ];
        assert_eq!(pick(&entries, "web.1").ok(), Some(Some("web.1")));
        assert_eq!(pick(&entries, "web.10").ok(), Some(Some("web.10")));
    }

    #[test]
    fn unique_prefix_of_task_or_app_id_selects() {
        let entries = [
            running(Some("shop_web.a1"), Some("/shop/web")),
            running(Some("shop_worker.b2"), Some("/shop/worker")),
            Entry {
                probe: Probe::Stale,
                ..running(Some("x"), None)
            },
        ];
        assert_eq!(pick(&entries, "shop_we").ok(), Some(Some("shop_web.a1")));
        assert_eq!(
            pick(&entries, "/shop/wo").ok(),
            Some(Some("shop_worker.b2"))
        );
        assert_eq!(
            pick(&entries, "shop/worker").ok(),
            Some(Some("shop_worker.b2"))
        );
    }

    #[test]
    fn ambiguity_and_no_match_list_what_there_is() {
        let entries = [
            running(Some("shop_web.a1"), Some("/shop/web")),
            running(Some("shop_worker.b2"), Some("/shop/worker")),
            Entry {
                probe: Probe::Stale,
                ..running(Some("x"), None)
            },
        ];
        match pick(&entries, "/shop") {
            Err(CtlError::AmbiguousTask { candidates, .. }) => assert_eq!(
                candidates,
                ["shop_web.a1 (/shop/web)", "shop_worker.b2 (/shop/worker)"]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick(&entries, "shop_w"),
            Err(CtlError::AmbiguousTask { .. })
        ));
        match pick(&entries, "db") {
            Err(CtlError::NoTask { found, .. }) => assert_eq!(found, 2),
            other => panic!("{other:?}"),
        }
        // A stale socket has no task to match; "/" alone names no app.
        assert!(matches!(pick(&entries, "x"), Err(CtlError::NoTask { .. })));
        assert!(matches!(pick(&entries, "/"), Err(CtlError::NoTask { .. })));
        assert!(matches!(
            pick(&entries[..1], ""),
            Err(CtlError::NoTask { .. })
        ));
    }

    #[test]
    fn scan_follows_runs_latest_and_skips_the_rest() {
        let w = tempfile::tempdir().expect("tempdir");
        let exec_dir = |f: &str, e: &str| {
            w.path()
                .join("slaves/S0/frameworks")
                .join(f)
                .join("executors")
                .join(e)
                .join("runs")
        };
        // A run with a socket, reached through `latest`.
        let runs = exec_dir("F1", "E1");
        std::fs::create_dir_all(runs.join("c-new")).expect("mkdir");
        std::fs::create_dir_all(runs.join("c-old")).expect("mkdir");
        let _l = std::os::unix::net::UnixListener::bind(runs.join("c-new").join(SOCKET_NAME))
            .expect("bind");
        std::fs::write(runs.join("c-old").join(SOCKET_NAME), "").expect("old run");
        std::os::unix::fs::symlink("c-new", runs.join("latest")).expect("symlink");
        // An executor without `latest`, and one whose run has no socket.
        std::fs::create_dir_all(exec_dir("F1", "E2").join("c")).expect("mkdir");
        let runs3 = exec_dir("F2", "E3");
        std::fs::create_dir_all(runs3.join("c")).expect("mkdir");
        std::os::unix::fs::symlink("c", runs3.join("latest")).expect("symlink");

        let found = scan(w.path()).expect("scan");
        let real = std::fs::canonicalize(runs.join("c-new")).expect("canonical");
        assert_eq!(
            found,
            [Found {
                socket: real.join(SOCKET_NAME),
                framework_id: "F1".into(),
                executor_id: "E1".into(),
            }]
        );
        let e = scan(&w.path().join("nope")).expect_err("no work dir");
        assert_eq!((e.kind(), e.exit_code()), ("work_dir", 5));
    }
}
