//! Validating `HealthCheck` and `CheckInfo` from the TaskInfo, as Mesos'
//! `validateHealthCheck` and `validateCheckInfo` do, and filling in Mesos'
//! defaults. The result says what to probe ([`Probe`]) and when
//! ([`Schedule`]); a check that fails validation is a [`SpecError`], which the
//! caller logs before running the task without it (as Mesos does).

use std::{num::TryFromIntError, time::Duration, time::TryFromFloatSecsError};

use crate::proto::v1::{self, check_info, health_check, network_info::Protocol};

/// Why a check is invalid. The texts are Mesos' own where Mesos has one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SpecError {
    /// No `type`.
    #[error("{what} must specify 'type'")]
    NoType {
        /// `HealthCheck` or `CheckInfo`.
        what: &'static str,
    },
    /// A `type` this version does not know.
    #[error("'{kind}' is not a valid {what} type")]
    UnknownType {
        /// The raw enum value.
        kind: i32,
        /// `health check` or `check`.
        what: &'static str,
    },
    /// The field the type needs is missing.
    #[error("Expecting '{field}' to be set for {kind} {what}")]
    Missing {
        /// `command`, `http` or `tcp`.
        field: &'static str,
        /// `COMMAND`, `HTTP` or `TCP`.
        kind: &'static str,
        /// `health check` or `check`.
        what: &'static str,
    },
    /// A COMMAND check without its command.
    #[error("Command {what} must contain {}", if *.shell { "'shell command'" } else { "'executable path'" })]
    NoCommand {
        /// `health check` or `check`.
        what: &'static str,
        /// Whether the command is a shell command.
        shell: bool,
    },
    /// An HTTP health check scheme other than `http` and `https`.
    #[error("Unsupported HTTP health check scheme: '{0}'")]
    Scheme(String),
    /// An HTTP path not starting with `/`.
    #[error("The path '{path}' of HTTP {what} must start with '/'")]
    Path {
        /// The path.
        path: String,
        /// `health check` or `check`.
        what: &'static str,
    },
    /// Port 0 (the task's first port) for a task without ports.
    #[error("port 0 and the task has no port resource")]
    NoTaskPort,
    /// A port above 65535.
    #[error("port {port} is out of range")]
    Port {
        /// The port given.
        port: u32,
        /// The conversion error.
        #[source]
        source: TryFromIntError,
    },
    /// A negative duration.
    #[error("Expecting '{0}' to be non-negative")]
    Negative(&'static str),
    /// A duration that is NaN or too large.
    #[error("'{name}' is not a usable number of seconds: {value}")]
    Seconds {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The conversion error.
        #[source]
        source: TryFromFloatSecsError,
    },
}

/// When a checker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Before the first probe.
    pub delay: Duration,
    /// Between the end of one probe and the start of the next.
    pub interval: Duration,
    /// Per probe; `None` (`timeout_seconds` 0) means none.
    pub timeout: Option<Duration>,
}

/// What a checker probes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probe {
    /// GET `path` on the loopback address.
    Http {
        /// `https` scheme (no certificate verification, like `curl -k`).
        tls: bool,
        /// `[::1]` instead of `127.0.0.1`.
        ipv6: bool,
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
    },
    /// TCP connect to the loopback address.
    Tcp {
        /// `[::1]` instead of `127.0.0.1`.
        ipv6: bool,
        /// Port.
        port: u16,
    },
    /// A command in the task's environment and sandbox.
    Command(Box<v1::CommandInfo>),
}

/// A validated `HealthCheck`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthSpec {
    /// What to probe.
    pub probe: Probe,
    /// When.
    pub schedule: Schedule,
    /// Failures ignored until the first success while within it.
    pub grace: Duration,
    /// Consecutive failures that kill the task.
    pub consecutive_failures: u32,
}

/// A validated `CheckInfo`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckSpec {
    /// The check's type (also the `check_status` type).
    pub kind: check_info::Type,
    /// What to probe.
    pub probe: Probe,
    /// When.
    pub schedule: Schedule,
}

/// A non-negative, finite number of seconds (`validateHealthCheck` rejects
/// negative values; NaN or overflow would crash Mesos, here it is invalid too).
fn seconds(name: &'static str, value: f64) -> Result<Duration, SpecError> {
    if value < 0.0 {
        return Err(SpecError::Negative(name));
    }
    Duration::try_from_secs_f64(value).map_err(|source| SpecError::Seconds {
        name,
        value,
        source,
    })
}

/// `timeout_seconds`: 0 means no timeout; any positive value is a timeout,
/// at least 1ns (one below a nanosecond must not round to "none").
fn timeout(value: f64) -> Result<Option<Duration>, SpecError> {
    seconds("timeout_seconds", value).map(|d| {
        if value > 0.0 {
            Some(d.max(Duration::from_nanos(1)))
        } else {
            None
        }
    })
}

/// The port to probe: the given one, or (0) the task's first port.
fn probe_port(port: u32, task_port: Option<u16>) -> Result<u16, SpecError> {
    match port {
        0 => task_port.ok_or(SpecError::NoTaskPort),
        p => u16::try_from(p).map_err(|source| SpecError::Port { port: p, source }),
    }
}

fn http_path(path: Option<&str>, what: &'static str) -> Result<String, SpecError> {
    match path {
        None | Some("") => Ok("/".to_owned()),
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        Some(p) => Err(SpecError::Path {
            path: p.to_owned(),
            what,
        }),
    }
}

fn command_probe_spec(
    command: Option<&v1::CommandInfo>,
    what: &'static str,
) -> Result<Probe, SpecError> {
    let command = command.ok_or(SpecError::Missing {
        field: "command",
        kind: "COMMAND",
        what,
    })?;
    if command.value.is_none() {
        return Err(SpecError::NoCommand {
            what,
            shell: command.shell(),
        });
    }
    Ok(Probe::Command(Box::new(command.clone())))
}

/// The first port of the task's `ports` resource, for checks with port 0.
pub(crate) fn task_port(task: &v1::TaskInfo) -> Option<u16> {
    task.resources
        .iter()
        .filter(|r| r.name == "ports")
        .filter_map(|r| r.ranges.as_ref())
        .flat_map(|r| r.range.iter())
        .find_map(|r| u16::try_from(r.begin).ok().filter(|p| *p != 0))
}

/// Validates a `HealthCheck` (`validateHealthCheck`) and fills in Mesos'
/// defaults: delay 15 s, interval 10 s, timeout 20 s, 3 consecutive
/// failures, grace 10 s.
pub(crate) fn health_spec(
    check: &v1::HealthCheck,
    task_port: Option<u16>,
) -> Result<HealthSpec, SpecError> {
    const WHAT: &str = "health check";
    let kind = check.r#type.ok_or(SpecError::NoType {
        what: "HealthCheck",
    })?;
    let probe = match health_check::Type::try_from(kind) {
        Ok(health_check::Type::Command) => command_probe_spec(check.command.as_ref(), WHAT)?,
        Ok(health_check::Type::Http) => {
            let http = check.http.as_ref().ok_or(SpecError::Missing {
                field: "http",
                kind: "HTTP",
                what: WHAT,
            })?;
            let tls = match http.scheme.as_deref() {
                None | Some("http") => false,
                Some("https") => true,
                Some(other) => return Err(SpecError::Scheme(other.to_owned())),
            };
            Probe::Http {
                tls,
                ipv6: http.protocol() == Protocol::IPv6,
                port: probe_port(http.port, task_port)?,
                path: http_path(http.path.as_deref(), WHAT)?,
            }
        }
        Ok(health_check::Type::Tcp) => {
            let tcp = check.tcp.as_ref().ok_or(SpecError::Missing {
                field: "tcp",
                kind: "TCP",
                what: WHAT,
            })?;
            Probe::Tcp {
                ipv6: tcp.protocol() == Protocol::IPv6,
                port: probe_port(tcp.port, task_port)?,
            }
        }
        Ok(health_check::Type::Unknown) | Err(_) => {
            return Err(SpecError::UnknownType { kind, what: WHAT })
        }
    };
    Ok(HealthSpec {
        probe,
        schedule: Schedule {
            delay: seconds("delay_seconds", check.delay_seconds())?,
            interval: seconds("interval_seconds", check.interval_seconds())?,
            timeout: timeout(check.timeout_seconds())?,
        },
        grace: seconds("grace_period_seconds", check.grace_period_seconds())?,
        consecutive_failures: check.consecutive_failures(),
    })
}

/// Validates a `CheckInfo` (`validateCheckInfo`) and fills in Mesos'
/// defaults: delay 15 s, interval 10 s, timeout 20 s. HTTP is plain `http`
/// on IPv4 (CheckInfo has neither scheme nor protocol).
pub(crate) fn check_spec(
    check: &v1::CheckInfo,
    task_port: Option<u16>,
) -> Result<CheckSpec, SpecError> {
    const WHAT: &str = "check";
    let raw = check
        .r#type
        .ok_or(SpecError::NoType { what: "CheckInfo" })?;
    let kind = check_info::Type::try_from(raw).unwrap_or(check_info::Type::Unknown);
    let probe = match kind {
        check_info::Type::Command => {
            command_probe_spec(check.command.as_ref().map(|c| &c.command), WHAT)?
        }
        check_info::Type::Http => {
            let http = check.http.as_ref().ok_or(SpecError::Missing {
                field: "http",
                kind: "HTTP",
                what: WHAT,
            })?;
            Probe::Http {
                tls: false,
                ipv6: false,
                port: probe_port(http.port, task_port)?,
                path: http_path(http.path.as_deref(), WHAT)?,
            }
        }
        check_info::Type::Tcp => {
            let tcp = check.tcp.as_ref().ok_or(SpecError::Missing {
                field: "tcp",
                kind: "TCP",
                what: WHAT,
            })?;
            Probe::Tcp {
                ipv6: false,
                port: probe_port(tcp.port, task_port)?,
            }
        }
        check_info::Type::Unknown => {
            return Err(SpecError::UnknownType {
                kind: raw,
                what: WHAT,
            })
        }
    };
    Ok(CheckSpec {
        kind,
        probe,
        schedule: Schedule {
            delay: seconds("delay_seconds", check.delay_seconds())?,
            interval: seconds("interval_seconds", check.interval_seconds())?,
            timeout: timeout(check.timeout_seconds())?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_health(port: u32, path: Option<&str>, scheme: Option<&str>) -> v1::HealthCheck {
        v1::HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(health_check::HttpCheckInfo {
                port,
                path: path.map(Into::into),
                scheme: scheme.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn health_spec_has_mesos_defaults() {
        let spec = health_spec(&http_health(8080, None, None), None).expect("valid");
        assert_eq!(
            spec.probe,
            Probe::Http {
                tls: false,
                ipv6: false,
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(
            spec.schedule,
            Schedule {
                delay: Duration::from_secs(15),
                interval: Duration::from_secs(10),
                timeout: Some(Duration::from_secs(20))
            }
        );
        assert_eq!(
            (spec.grace, spec.consecutive_failures),
            (Duration::from_secs(10), 3)
        );
        let mut hc = http_health(443, Some("/health?x=1"), Some("https"));
        hc.timeout_seconds = Some(0.0);
        hc.interval_seconds = Some(0.25);
        if let Some(h) = hc.http.as_mut() {
            h.protocol = Some(Protocol::IPv6 as i32);
        }
        let spec = health_spec(&hc, None).expect("valid");
        assert_eq!(
            spec.probe,
            Probe::Http {
                tls: true,
                ipv6: true,
                port: 443,
                path: "/health?x=1".into()
            }
        );
        assert_eq!(
            (spec.schedule.timeout, spec.schedule.interval),
            (None, Duration::from_millis(250))
        );
    }

    #[test]
    fn invalid_health_checks_are_refused() {
        let refuse = |hc: v1::HealthCheck| health_spec(&hc, None).expect_err("invalid").to_string();
        assert!(refuse(v1::HealthCheck::default()).contains("must specify 'type'"));
        assert!(refuse(http_health(80, Some("health"), None)).contains("must start with '/'"));
        assert!(refuse(http_health(80, None, Some("ftp"))).contains("Unsupported"));
        assert!(refuse(http_health(70000, None, None)).contains("out of range"));
        assert!(refuse(http_health(0, None, None)).contains("no port"));
        assert!(refuse(v1::HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            ..Default::default()
        })
        .contains("'http'"));
        for field in 0..4 {
            let mut hc = http_health(80, None, None);
            match field {
                0 => hc.delay_seconds = Some(-1.0),
                1 => hc.interval_seconds = Some(-0.5),
                2 => hc.timeout_seconds = Some(-2.0),
                _ => hc.grace_period_seconds = Some(f64::NAN),
            }
            assert!(health_spec(&hc, None).is_err(), "field {field}");
        }
        let cmd = v1::HealthCheck {
            r#type: Some(health_check::Type::Command as i32),
            command: Some(v1::CommandInfo {
                shell: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(refuse(cmd).contains("'executable path'"));
        assert!(refuse(v1::HealthCheck {
            r#type: Some(0),
            ..Default::default()
        })
        .contains("not a valid"));
    }

    #[test]
    fn port_zero_means_the_tasks_first_port() {
        let task = v1::TaskInfo {
            resources: vec![v1::Resource {
                name: "ports".into(),
                r#type: v1::value::Type::Ranges as i32,
                ranges: Some(v1::value::Ranges {
                    range: vec![v1::value::Range {
                        begin: 31000,
                        end: 31001,
                    }],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(task_port(&task), Some(31000));
        let hc = v1::HealthCheck {
            r#type: Some(health_check::Type::Tcp as i32),
            tcp: Some(health_check::TcpCheckInfo {
                port: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            health_spec(&hc, task_port(&task)).map(|s| s.probe),
            Ok(Probe::Tcp {
                ipv6: false,
                port: 31000
            })
        );
    }

    #[test]
    fn check_spec_validates_and_defaults() {
        let ci = v1::CheckInfo {
            r#type: Some(check_info::Type::Tcp as i32),
            tcp: Some(check_info::Tcp { port: 9000 }),
            ..Default::default()
        };
        let spec = check_spec(&ci, None).expect("valid");
        assert_eq!(
            (spec.kind, spec.probe),
            (
                check_info::Type::Tcp,
                Probe::Tcp {
                    ipv6: false,
                    port: 9000
                }
            )
        );
        assert_eq!(spec.schedule.delay, Duration::from_secs(15));
        assert!(check_spec(
            &v1::CheckInfo {
                r#type: Some(check_info::Type::Command as i32),
                ..Default::default()
            },
            None
        )
        .is_err());
        let bad_path = v1::CheckInfo {
            r#type: Some(check_info::Type::Http as i32),
            http: Some(check_info::Http {
                port: 80,
                path: Some("x".into()),
            }),
            ..Default::default()
        };
        assert!(check_spec(&bad_path, None).is_err());
        assert!(check_spec(
            &v1::CheckInfo {
                timeout_seconds: Some(-1.0),
                ..ci
            },
            None
        )
        .is_err());
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn any_positive_timeout_is_a_timeout() {
        assert_eq!(timeout(0.0).ok(), Some(None));
        assert_eq!(timeout(1e-12).ok(), Some(Some(Duration::from_nanos(1))));
        assert_eq!(timeout(2.5).ok(), Some(Some(Duration::from_millis(2500))));
        assert!(timeout(-1.0).is_err());
        assert!(timeout(f64::NAN).is_err());
    }
}
