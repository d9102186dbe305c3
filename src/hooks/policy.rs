//! The `policy` hook: refuses unsafe launches before anything starts.
//!
//! - Docker `privileged` (the `DockerInfo.privileged` flag, or a `privileged`
//!   Docker parameter) unless `HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED=true`.
//! - A volume whose host path is not under one of
//!   `HOOK_EXECUTOR_POLICY_ALLOWED_HOST_PATHS` (the sandbox is always allowed).
//!   Host paths come from `Volume.host_path`, `Volume.source.host_path.path` and
//!   Docker `volume`/`v` parameters; relative paths are relative to the
//!   sandbox, as in Mesos. `..` is resolved lexically and symlinks by resolving
//!   the longest existing prefix, so `/allowed/../etc` and a symlink
//!   `/allowed/link -> /etc` are both refused. With the list empty, every host
//!   path outside the sandbox is refused.
//! - A user (the command's `user`, else the executor's own user) not in
//!   `HOOK_EXECUTOR_POLICY_ALLOWED_USERS`, when that list is set.
//!
//! Both the task's and the executor's `ContainerInfo` are checked.

use std::path::{Component, Path, PathBuf};

use super::{Hook, HookContext, HookError, HookFuture};
use crate::proto::v1::{self, volume::source::Type as SourceType};

/// The launch policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyHook {
    /// Allow Docker privileged mode.
    pub(crate) allow_privileged: bool,
    /// Host path prefixes volumes may use.
    pub(crate) allowed_host_paths: Vec<PathBuf>,
    /// Users tasks may run as (empty: any).
    pub(crate) allowed_users: Vec<String>,
}

/// What in a launch the policy refuses; the message is the TASK_FAILED reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// Docker privileged mode without `HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED`.
    #[error("Docker privileged mode is not allowed (set HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED=true to permit it)")]
    Privileged,
    /// A volume's host path outside the sandbox and the allowed prefixes.
    #[error("volume host path {host:?} (resolved to {}) is outside the allowed host paths ({allowed})", resolved.display())]
    HostPath {
        /// As the task gave it.
        host: String,
        /// After `..` and symlinks.
        resolved: PathBuf,
        /// The allowed prefixes, as configured.
        allowed: String,
    },
    /// A user outside `HOOK_EXECUTOR_POLICY_ALLOWED_USERS`.
    #[error("user {user:?} is not allowed (HOOK_EXECUTOR_POLICY_ALLOWED_USERS: {allowed})")]
    User {
        /// The user the task would run as.
        user: String,
        /// The allow-list, as configured.
        allowed: String,
    },
}

impl Hook for PolicyHook {
    fn name(&self) -> &'static str {
        "policy"
    }
    fn before_start<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
        Box::pin(async move {
            let Some(task) = ctx.task.as_deref() else {
                return Ok(Vec::new());
            };
            let own_user = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name);
            self.check(task, &ctx.sandbox, own_user.as_deref())?;
            Ok(Vec::new())
        })
    }
}

impl PolicyHook {
    /// Checks `task` (and its executor info); `Err` says precisely what is refused.
    pub(crate) fn check(
        &self,
        task: &v1::TaskInfo,
        sandbox: &Path,
        own_user: Option<&str>,
    ) -> Result<(), Violation> {
        let containers = [
            task.container.as_ref(),
            task.executor.as_ref().and_then(|e| e.container.as_ref()),
        ];
        for container in containers.into_iter().flatten() {
            self.check_container(container, sandbox)?;
        }
        if !self.allowed_users.is_empty() {
            let user = task
                .command
                .as_ref()
                .and_then(|c| c.user.as_deref())
                .or_else(|| {
                    task.executor
                        .as_ref()
                        .and_then(|e| e.command.as_ref())
                        .and_then(|c| c.user.as_deref())
                })
                .or(own_user)
                .unwrap_or("<unknown>");
            if !self.allowed_users.iter().any(|u| u == user) {
                return Err(Violation::User {
                    user: user.to_owned(),
                    allowed: self.allowed_users.join(", "),
                });
            }
        }
        Ok(())
    }

    fn check_container(
        &self,
        container: &v1::ContainerInfo,
        sandbox: &Path,
    ) -> Result<(), Violation> {
        if let Some(docker) = &container.docker {
            let flag = docker.privileged();
            let param = docker
                .parameters
                .iter()
                .any(|p| p.key == "privileged" && p.value != "false");
            if (flag || param) && !self.allow_privileged {
                return Err(Violation::Privileged);
            }
            for p in docker
                .parameters
                .iter()
                .filter(|p| p.key == "volume" || p.key == "v")
            {
                let host = p.value.split(':').next().unwrap_or_default();
                // A bare name is a named Docker volume, not a host path.
                if host.starts_with('/') || host.starts_with('.') {
                    self.check_host_path(host, sandbox)?;
                }
            }
        }
        for volume in &container.volumes {
            let from_source = volume
                .source
                .as_ref()
                .filter(|s| s.r#type() == SourceType::HostPath)
                .and_then(|s| s.host_path.as_ref())
                .map(|h| h.path.as_str());
            for host in volume.host_path.as_deref().into_iter().chain(from_source) {
                self.check_host_path(host, sandbox)?;
            }
        }
        Ok(())
    }

    fn check_host_path(&self, host: &str, sandbox: &Path) -> Result<(), Violation> {
        let resolved = resolve(&sandbox.join(host));
        let sandbox = resolve(sandbox);
        let allowed = std::iter::once(&sandbox)
            .chain(self.allowed_host_paths.iter())
            .any(|prefix| resolved.starts_with(resolve(prefix)));
        if allowed {
            Ok(())
        } else {
            let allowed = if self.allowed_host_paths.is_empty() {
                "none configured: HOOK_EXECUTOR_POLICY_ALLOWED_HOST_PATHS".to_owned()
            } else {
                self.allowed_host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Err(Violation::HostPath {
                host: host.to_owned(),
                resolved,
                allowed,
            })
        }
    }
}

/// Resolves `..` and `.` lexically, then symlinks through the longest prefix
/// that exists, keeping the non-existent rest as is.
#[must_use]
pub(crate) fn resolve(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::Normal(c) => lexical.push(c),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut existing = lexical.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match existing.file_name() {
            Some(name) => {
                rest.push(name.to_owned());
                existing.pop();
            }
            None => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{container_info, volume, ContainerInfo, Parameter, Volume};

    fn task_with(container: ContainerInfo) -> v1::TaskInfo {
        v1::TaskInfo {
            container: Some(container),
            ..Default::default()
        }
    }

    fn docker(privileged: bool, parameters: Vec<(&str, &str)>) -> ContainerInfo {
        ContainerInfo {
            r#type: container_info::Type::Docker as i32,
            docker: Some(container_info::DockerInfo {
                image: "busybox".into(),
                privileged: Some(privileged),
                parameters: parameters
                    .into_iter()
                    .map(|(k, v)| Parameter {
                        key: k.into(),
                        value: v.into(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn host_volume(path: &str) -> ContainerInfo {
        ContainerInfo {
            r#type: container_info::Type::Mesos as i32,
            volumes: vec![Volume {
                container_path: "/data".into(),
                host_path: Some(path.into()),
                mode: volume::Mode::Rw as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn privileged_is_refused_unless_allowed() {
        let sandbox = Path::new("/tmp");
        let policy = PolicyHook::default();
        let err = policy
            .check(&task_with(docker(true, vec![])), sandbox, None)
            .expect_err("refused");
        assert_eq!(err, Violation::Privileged);
        assert!(
            err.to_string().contains("privileged mode is not allowed"),
            "{err}"
        );
        assert!(policy
            .check(
                &task_with(docker(false, vec![("privileged", "true")])),
                sandbox,
                None
            )
            .is_err());
        assert!(policy
            .check(
                &task_with(docker(false, vec![("privileged", "false")])),
                sandbox,
                None
            )
            .is_ok());
        let permissive = PolicyHook {
            allow_privileged: true,
            ..Default::default()
        };
        assert!(permissive
            .check(&task_with(docker(true, vec![])), sandbox, None)
            .is_ok());
    }

    #[test]
    fn host_paths_must_be_under_an_allowed_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(allowed.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", allowed.join("link")).expect("symlink");
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).expect("mkdir");
        let policy = PolicyHook {
            allowed_host_paths: vec![allowed.clone()],
            ..Default::default()
        };
        let ok = |p: &str| policy.check(&task_with(host_volume(p)), &sandbox, None);
        assert!(ok(allowed.join("sub").to_str().expect("utf8")).is_ok());
        assert!(ok(allowed.join("not-yet/created").to_str().expect("utf8")).is_ok());
        assert!(ok("relative/in/sandbox").is_ok());
        let err = ok("/etc").expect_err("refused");
        assert!(
            matches!(&err, Violation::HostPath { host, .. } if host == "/etc"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("outside the allowed host paths"),
            "{err}"
        );
        assert!(
            ok(&format!("{}/../../etc", allowed.display())).is_err(),
            "`..` escape"
        );
        assert!(
            ok(allowed.join("link/passwd").to_str().expect("utf8")).is_err(),
            "symlink escape"
        );
        assert!(
            ok("../../../../etc").is_err(),
            "relative escape from the sandbox"
        );
        let docker_param = task_with(docker(
            false,
            vec![("volume", "/var/run/docker.sock:/var/run/docker.sock")],
        ));
        assert!(policy.check(&docker_param, &sandbox, None).is_err());
        let named = task_with(docker(false, vec![("volume", "named-volume:/data")]));
        assert!(policy.check(&named, &sandbox, None).is_ok());
    }

    #[test]
    fn users_outside_the_allow_list_are_refused() {
        let policy = PolicyHook {
            allowed_users: vec!["app".into()],
            ..Default::default()
        };
        let mut task = v1::TaskInfo {
            command: Some(v1::CommandInfo {
                user: Some("root".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = policy
            .check(&task, Path::new("/tmp"), Some("app"))
            .expect_err("refused");
        assert!(
            err.to_string().contains("user \"root\" is not allowed"),
            "{err}"
        );
        task.command = Some(v1::CommandInfo {
            user: Some("app".into()),
            ..Default::default()
        });
        assert!(policy.check(&task, Path::new("/tmp"), Some("root")).is_ok());
        task.command = None;
        assert!(
            policy
                .check(&task, Path::new("/tmp"), Some("nobody"))
                .is_err(),
            "the executor's own user is checked"
        );
    }

    #[test]
    fn resolve_handles_dots_and_missing_parts() {
        assert_eq!(
            resolve(Path::new("/a/b/../c/./d")),
            resolve(Path::new("/a/c/d"))
        );
        assert_eq!(resolve(Path::new("/../..")), PathBuf::from("/"));
    }
}
