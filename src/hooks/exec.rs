//! The `exec` hook: runs the executables in `$HOOK_EXECUTOR_HOOKS_DIR/<event>.d/`
//! in lexical order.
//!
//! Contract with a script:
//! - stdin: the JSON document of [`super::HookContext::document`] (event, ids,
//!   sandbox, the TaskInfo in Mesos JSON field names);
//! - environment: the executor's environment without our settings and secrets,
//!   plus `HOOK_EVENT`, `MESOS_TASK_ID`, `MESOS_SANDBOX`, `MESOS_FRAMEWORK_ID`,
//!   `MESOS_EXECUTOR_ID`, and the variables earlier before-start hooks added;
//! - working directory: the sandbox; its own process group, SIGKILLed as a
//!   whole when the hook's time is up;
//! - exit status 0 = success; otherwise the hook fails with the tail of stderr;
//! - for `before-start`, each non-empty stdout line must be `KEY=VALUE` (lines
//!   starting with `#` are comments) and becomes a task environment variable.
//!
//! Hidden files (`.name`) are ignored; a non-executable file is skipped with a
//! warning (as `run-parts` does), so a script can be disabled with `chmod -x`.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Hook, HookContext, HookError, HookEvent, HookFuture};
use crate::task::{process::AuxiliaryStdio, termination::ExitOutcome};

/// Largest stdout kept from one script (it only carries KEY=VALUE lines).
const MAX_STDOUT: usize = 64 * 1024;
/// Largest stderr kept from one script (only its end is quoted).
const MAX_STDERR: usize = 64 * 1024;
/// How much of stderr's end is quoted in a failure reason.
const STDERR_TAIL: usize = 512;

/// Runs hook scripts from a directory tree.
#[derive(Debug, Clone)]
pub(crate) struct ExecHook {
    dir: PathBuf,
}

impl ExecHook {
    /// Scripts live in `dir/<event>.d/`.
    #[must_use]
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The scripts for `event`, in lexical order.
    fn scripts(&self, event: HookEvent) -> Result<Vec<PathBuf>, HookError> {
        let dir = self.dir.join(format!("{event}.d"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => return Err(HookError::ScriptDir { dir, cause }),
        };
        let mut scripts: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        scripts.sort();
        Ok(scripts
            .into_iter()
            .filter(|p| {
                let executable = std::fs::metadata(p).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
                if !executable {
                    tracing::warn!(script = %p.display(), "skipping a hook script that is not executable (chmod +x to enable it)");
                }
                executable
            })
            .collect())
    }

    async fn run_event(&self, ctx: &HookContext) -> Result<Vec<(String, String)>, HookError> {
        let mut added: Vec<(String, String)> = Vec::new();
        for script in self.scripts(ctx.event)? {
            let stdout = run_script(&script, ctx, &added).await?;
            if ctx.event == HookEvent::BeforeStart {
                added.extend(parse_env_lines(&stdout, &script)?);
            }
        }
        Ok(added)
    }
}

impl Hook for ExecHook {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn before_start<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
        Box::pin(self.run_event(ctx))
    }
    fn after_start<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
    fn after_healthy<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
    fn before_terminate<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
}

fn script_name(script: &Path) -> String {
    script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

async fn run_script(
    script: &Path,
    ctx: &HookContext,
    added: &[(String, String)],
) -> Result<String, HookError> {
    let name = script_name(script);
    let mut cmd = Command::new(script);
    cmd.env_clear()
        .envs(ctx.base_env.iter())
        .envs(ctx.added_env.iter().map(|(k, v)| (k, v)))
        .envs(added.iter().map(|(k, v)| (k, v)))
        .env("HOOK_EVENT", ctx.event.as_str())
        .env("MESOS_TASK_ID", ctx.task_id())
        .env("MESOS_SANDBOX", &ctx.sandbox)
        .env("MESOS_FRAMEWORK_ID", &ctx.framework_id)
        .env("MESOS_EXECUTOR_ID", &ctx.executor_id)
        .current_dir(&ctx.sandbox);
    // Kills the script's whole group when dropped: on timeout the chain drops
    // this future, and nothing of the script may survive.
    let mut child = ctx
        .reaper
        .spawn_auxiliary(cmd, AuxiliaryStdio::piped())
        .map_err(|cause| HookError::ScriptStart {
            script: name.clone(),
            cause,
        })?;
    let mut stdin = child.stdin.take();
    let document = ctx.document().to_string();
    // A script may ignore its stdin and exit before reading it: a broken pipe
    // here is not a failure.
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(document.as_bytes()).await;
        }
        drop(stdin);
    };
    let read_out = read_capped(child.stdout.take(), MAX_STDOUT, false);
    let read_err = read_capped(child.stderr.take(), MAX_STDERR, true);
    let ((), out, err) = tokio::join!(feed, read_out, read_err);
    let outcome = child.wait().await.map_err(|cause| HookError::ScriptLost {
        script: name.clone(),
        cause,
    })?;
    drop(child);
    match outcome {
        ExitOutcome::Exited(0) => {
            if err.is_empty() {
                tracing::debug!(script = %name, event = %ctx.event, "hook script succeeded");
            } else {
                tracing::info!(script = %name, event = %ctx.event, stderr = %stderr_tail(&err), "hook script succeeded");
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        outcome => Err(HookError::ScriptFailed {
            script: name,
            outcome,
            stderr: stderr_tail(&err),
        }),
    }
}

fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        return "(no stderr output)".to_owned();
    }
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].replace('\n', " | ")
}

/// Reads a pipe to its end, keeping at most `cap` bytes: the first ones, or
/// with `keep_tail` the last ones. The rest is still drained, so the writer
/// never blocks on a full pipe.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    keep_tail: bool,
) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if keep_tail => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                }
            }
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Parses a before-start script's stdout: `KEY=VALUE` lines, blank lines and
/// `#` comments. Anything else is an error naming the script and the line.
pub(crate) fn parse_env_lines(
    stdout: &str,
    script: &Path,
) -> Result<Vec<(String, String)>, HookError> {
    let mut out = Vec::new();
    for (number, line) in stdout.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let valid = line.split_once('=').filter(|(key, _)| valid_name(key));
        match valid {
            Some((key, value)) => out.push((key.to_owned(), value.to_owned())),
            None => {
                return Err(HookError::ScriptOutput {
                    script: script_name(script),
                    line: number + 1,
                    text: line.chars().take(80).collect(),
                })
            }
        }
    }
    Ok(out)
}

fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_parsed_strictly() {
        let p = Path::new("/hooks/before-start.d/10-env");
        assert_eq!(
            parse_env_lines("A=1\n\n# comment\nB_2=x=y\nEMPTY=\n", p).expect("valid"),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B_2".to_owned(), "x=y".to_owned()),
                ("EMPTY".to_owned(), String::new())
            ]
        );
        let err = parse_env_lines("A=1\nnot a variable\n", p)
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("10-env printed an invalid line 2"), "{err}");
        assert!(parse_env_lines("1A=x", p).is_err());
        assert!(parse_env_lines("A B=x", p).is_err());
        assert!(parse_env_lines("=x", p).is_err());
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        assert_eq!(stderr_tail(b""), "(no stderr output)");
        assert_eq!(stderr_tail(b"line1\nline2\n"), "line1 | line2");
        let long = "x".repeat(2000) + "END";
        assert!(stderr_tail(long.as_bytes()).ends_with("END"));
        assert!(stderr_tail(long.as_bytes()).len() <= STDERR_TAIL);
    }
}
