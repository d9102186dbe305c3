//! Resource usage read from `/proc`: the task's process tree and the
//! executor itself. The tree is found through the `children` files of its
//! members (a scrape then reads a handful of files, not all of `/proc`),
//! with `task::process::task_tree`'s full walk as the fallback.

use std::collections::HashSet;

use crate::task::process;

/// Usage of a set of processes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TreeUsage {
    /// User + system CPU seconds, reaped children included.
    pub(crate) cpu_seconds: f64,
    /// Resident memory.
    pub(crate) rss_bytes: u64,
    /// How many processes.
    pub(crate) processes: usize,
    /// Seconds since the root started (0 when it is gone).
    pub(crate) root_uptime_seconds: f64,
}

/// The fields of `/proc/<pid>/stat` we need, in clock ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatUsage {
    /// utime + stime + cutime + cstime.
    pub(crate) cpu_ticks: u64,
    /// Start time after boot.
    pub(crate) start_ticks: u64,
    /// Resident set size.
    pub(crate) rss_pages: u64,
}

/// Parses the usage fields of a `/proc/<pid>/stat` line (fields 14–17, 22
/// and 24, counted after the `comm` field, which may contain spaces).
#[must_use]
pub(crate) fn parse_stat_usage(line: &str) -> Option<StatUsage> {
    let rest = line.get(line.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let ticks = |n: usize| field(n).map(|v| u64::try_from(v).unwrap_or(0));
    let cpu_ticks = [14, 15, 16, 17]
        .into_iter()
        .map(ticks)
        .sum::<Option<u64>>()?;
    Some(StatUsage {
        cpu_ticks,
        start_ticks: ticks(22)?,
        rss_pages: ticks(24)?,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

fn stat_of(pid: i32) -> Option<StatUsage> {
    parse_stat_usage(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Seconds since boot (`/proc/uptime`).
fn system_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The children of every thread of `pid` (`/proc/<pid>/task/*/children`);
/// `None` when the kernel does not provide the file.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.filter_map(Result::ok) {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// The task's tree without reading all of `/proc`: the root, the executor's
/// other children that are not its helpers (orphans it reaped as subreaper),
/// and their descendants. `None` without `children` files (then the caller
/// walks `/proc` as the kill does).
fn tree_by_children(root: i32, executor: i32, auxiliary: &HashSet<i32>) -> Option<Vec<i32>> {
    let mut queue = vec![root];
    queue.extend(
        children_of(executor)?
            .into_iter()
            .filter(|p| *p != root && !auxiliary.contains(p)),
    );
    let mut members = HashSet::new();
    while let Some(pid) = queue.pop() {
        if pid == executor || !members.insert(pid) {
            continue;
        }
        queue.extend(children_of(pid).unwrap_or_default());
    }
    Some(members.into_iter().collect())
}

/// Sums the usage of the task's tree rooted at `root`.
pub(crate) fn tree_usage(root: i32, auxiliary: &HashSet<i32>) -> TreeUsage {
    let executor = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let members = tree_by_children(root, executor, auxiliary).unwrap_or_else(|| {
        process::task_tree(&process::list_processes(), root, executor, auxiliary)
    });
    let (hz, page) = (clock_ticks(), page_size());
    let mut usage = TreeUsage::default();
    for pid in members {
        let Some(stat) = stat_of(pid) else { continue };
        usage.processes += 1;
        usage.cpu_seconds += stat.cpu_ticks as f64 / hz;
        usage.rss_bytes = usage
            .rss_bytes
            .saturating_add(stat.rss_pages.saturating_mul(page));
        if pid == root {
            if let Some(up) = system_uptime() {
                usage.root_uptime_seconds = (up - stat.start_ticks as f64 / hz).max(0.0);
            }
        }
    }
    usage
}

/// The executor's own usage (its reaped children are the task's and the
/// commands', counted there, so only utime + stime here).
pub(crate) fn own_usage() -> Option<TreeUsage> {
    let line = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = line.get(line.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let stat = parse_stat_usage(&line)?;
    Some(TreeUsage {
        cpu_seconds: (field(14)? + field(15)?) as f64 / clock_ticks(),
        rss_bytes: stat.rss_pages.saturating_mul(page_size()),
        processes: 1,
        root_uptime_seconds: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_comm() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 5555 1000000 250 18446744073709551615";
        assert_eq!(
            parse_stat_usage(line),
            Some(StatUsage {
                cpu_ticks: 13,
                start_ticks: 5555,
                rss_pages: 250
            })
        );
        assert_eq!(parse_stat_usage("garbage"), None);
        assert_eq!(parse_stat_usage("1 (x) S 1 2"), None);
    }

    #[test]
    fn a_real_tree_is_measured() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        // Measure once the exec is done (a process mid-exec has no memory yet).
        for _ in 0..500 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let usage = tree_usage(pid, &HashSet::new());
        let executor = i32::try_from(std::process::id()).expect("pid");
        let by_children = tree_by_children(pid, executor, &HashSet::new());
        let _ = child.kill();
        let _ = child.wait();
        assert!(usage.processes >= 1, "{usage:?}");
        assert!(
            by_children.is_some_and(|m| m.contains(&pid)),
            "the root is found through the children files"
        );
        // A tiny fresh process may still read 0 pages: the kernel's RSS
        // counters are per-CPU and folded lazily. This process is not tiny.
        assert!(own_usage().is_some_and(|u| u.rss_bytes > 0));
    }
}
