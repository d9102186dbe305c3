//! When a task ends on a schedule of its own: shortly before its certificate
//! expires (allegro's `validate-certificate` label, so that Marathon starts a
//! fresh instance with a new certificate), or after a maximum lifetime
//! (`HOOK_EXECUTOR_MAX_LIFETIME`, for operators who rotate instances).
//!
//! Pure decisions only: the step passes the certificate text, the wall-clock
//! time and a random unit; it turns the answer into a deadline on its clock.

use std::time::{Duration, SystemTime};

use crate::proto::v1;

/// The TaskInfo label that asks for the certificate check (allegro's name).
pub const CERTIFICATE_LABEL: &str = "validate-certificate";

/// The task environment variable holding the PEM certificate (allegro's name).
pub const CERTIFICATE_VAR: &str = "CERTIFICATE";

/// Why a task ends on schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its certificate is about to expire.
    CertificateExpiry,
    /// It reached `HOOK_EXECUTOR_MAX_LIFETIME`.
    MaxLifetime,
}

impl EndReason {
    /// Stable name for logs, labels, the status API and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertificateExpiry => "certificate-expiry",
            Self::MaxLifetime => "max-lifetime",
        }
    }
}

/// A task end fixed at launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Why.
    pub reason: EndReason,
    /// How long after launch the graceful kill starts.
    pub after: Duration,
    /// The certificate's `NotAfter`, for the message.
    pub not_after: Option<SystemTime>,
}

impl Schedule {
    /// The terminal message's first part: what happened, in words an operator
    /// looking at Marathon understands.
    #[must_use]
    pub fn message(&self, at: SystemTime) -> String {
        match (self.reason, self.not_after) {
            (EndReason::CertificateExpiry, Some(not_after)) => format!(
                "Certificate expired: valid until {}, the task was stopped at {} (NotAfter minus a random margin) so that a new instance gets a fresh certificate",
                rfc3339(not_after),
                rfc3339(at)
            ),
            (EndReason::CertificateExpiry, None) => "Certificate expired".to_owned(),
            (EndReason::MaxLifetime, _) => format!(
                "Maximum lifetime reached (HOOK_EXECUTOR_MAX_LIFETIME): the task was stopped at {}",
                rfc3339(at)
            ),
        }
    }
}

/// Why a task that asks for the certificate check is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Neither the task environment nor the configured file has one.
    #[error("missing certificate: the task's environment has no {CERTIFICATE_VAR} and HOOK_EXECUTOR_CERTIFICATE_FILE is not set")]
    Missing,
    /// The configured file could not be read at start.
    #[error("cannot read the certificate file: {0}")]
    Unreadable(String),
    /// No `-----BEGIN CERTIFICATE-----` block.
    #[error("no PEM certificate block (-----BEGIN CERTIFICATE-----) found")]
    NoPem,
    /// The PEM or the DER inside it is malformed.
    #[error("cannot parse the certificate: {0}")]
    Malformed(String),
    /// `NotAfter` has passed.
    #[error("the certificate expired at {}", rfc3339(*not_after))]
    Expired {
        /// The certificate's `NotAfter`.
        not_after: SystemTime,
    },
}

/// Whether the task carries `validate-certificate: true`.
#[must_use]
pub fn requires_certificate(task: &v1::TaskInfo) -> bool {
    task.labels.as_ref().is_some_and(|l| {
        l.labels.iter().any(|l| {
            l.key == CERTIFICATE_LABEL
                && l.value
                    .as_deref()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        })
    })
}

/// The `NotAfter` of the first certificate in `pem`.
///
/// # Errors
/// [`CertificateError::NoPem`] or [`CertificateError::Malformed`].
pub fn not_after(pem: &str) -> Result<SystemTime, CertificateError> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .find(|b| !matches!(b, Ok(p) if p.label != "CERTIFICATE"))
        .ok_or(CertificateError::NoPem)?
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let cert = block
        .parse_x509()
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    // A NotAfter before 1970 is simply long expired.
    let secs = u64::try_from(secs).unwrap_or(0);
    Ok(SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

/// When to end a task whose certificate expires at `not_after`: that long
/// after `now`, minus a random margin of `unit` (in `[0, 1)`) times the
/// range, the range capped at the time left so that instances sharing a
/// certificate spread their restarts over what remains rather than failing.
///
/// # Errors
/// [`CertificateError::Expired`] when `not_after` is not after `now`.
pub fn certificate_end(
    not_after: SystemTime,
    now: SystemTime,
    range: Duration,
    unit: f64,
) -> Result<Duration, CertificateError> {
    let left = not_after
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(CertificateError::Expired { not_after })?;
    Ok(left.saturating_sub(margin(range.min(left), unit)))
}

/// The end of a task after `max`, minus a random margin of `unit` times
/// `spread` (capped at `max`).
#[must_use]
pub fn lifetime_end(max: Duration, spread: Duration, unit: f64) -> Duration {
    max.saturating_sub(margin(spread.min(max), unit))
}

/// `unit × range`, `unit` clamped to `[0, 1]` so it cannot overflow or panic.
fn margin(range: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Duration::from_secs_f64(range.as_secs_f64() * unit).min(range)
}

/// Of two schedules, the one that ends first.
#[must_use]
pub fn earliest(a: Option<Schedule>, b: Option<Schedule>) -> Option<Schedule> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.after < a.after { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// RFC 3339 in UTC, seconds precision.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn cert_pem(not_after_unix: i64) -> String {
        let mut params =
            rcgen::CertificateParams::new(vec!["task.example".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(not_after_unix).expect("timestamp");
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").pem()
    }

    #[test]
    fn not_after_is_read_from_the_first_certificate_block() {
        let pem = cert_pem(2_000_000_000);
        let key_first =
            format!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{pem}");
        let want = SystemTime::UNIX_EPOCH + secs(2_000_000_000);
        assert_eq!(not_after(&pem), Ok(want));
        assert_eq!(not_after(&key_first), Ok(want));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert_eq!(not_after(""), Err(CertificateError::NoPem));
        assert_eq!(not_after("hello"), Err(CertificateError::NoPem));
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            not_after(bad),
            Err(CertificateError::Malformed(_))
        ));
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            not_after(not_base64),
            Err(CertificateError::Malformed(_))
        ));
    }

    #[test]
    fn an_expired_certificate_is_refused_and_says_when() {
        let now = SystemTime::UNIX_EPOCH + secs(1000);
        let err = certificate_end(now - secs(1), now, secs(0), 0.5).expect_err("expired");
        assert_eq!(
            err.to_string(),
            "the certificate expired at 1970-01-01T00:16:39Z"
        );
        assert!(certificate_end(now, now, secs(0), 0.0).is_err());
    }

    #[test]
    fn the_margin_is_random_within_the_range_and_the_time_left() {
        let now = SystemTime::UNIX_EPOCH + secs(1000);
        let na = now + secs(100);
        assert_eq!(certificate_end(na, now, secs(0), 0.9), Ok(secs(100)));
        assert_eq!(certificate_end(na, now, secs(10), 0.0), Ok(secs(100)));
        assert_eq!(certificate_end(na, now, secs(10), 0.5), Ok(secs(95)));
        // A range beyond the time left spreads over what is left.
        assert_eq!(certificate_end(na, now, secs(1000), 0.5), Ok(secs(50)));
        assert_eq!(certificate_end(na, now, secs(1000), 1.0), Ok(secs(0)));
        // Nonsense units cannot panic.
        assert_eq!(certificate_end(na, now, secs(10), f64::NAN), Ok(secs(100)));
        assert_eq!(certificate_end(na, now, secs(10), -3.0), Ok(secs(100)));
        assert_eq!(certificate_end(na, now, Duration::MAX, 7.0), Ok(secs(0)));
    }

    #[test]
    fn lifetime_spread_is_capped_and_saturates() {
        assert_eq!(lifetime_end(secs(60), secs(0), 0.7), secs(60));
        assert_eq!(lifetime_end(secs(60), secs(20), 0.5), secs(50));
        assert_eq!(lifetime_end(secs(60), secs(600), 1.0), secs(0));
        assert_eq!(
            lifetime_end(Duration::MAX, Duration::MAX, 0.0),
            Duration::MAX
        );
    }

    #[test]
    fn the_earliest_schedule_wins() {
        let s = |reason, after| Schedule {
            reason,
            after: secs(after),
            not_after: None,
        };
        let cert = s(EndReason::CertificateExpiry, 10);
        let life = s(EndReason::MaxLifetime, 5);
        assert_eq!(
            earliest(Some(cert.clone()), Some(life.clone())),
            Some(life.clone())
        );
        assert_eq!(earliest(Some(cert.clone()), None), Some(cert));
        assert_eq!(earliest(None, None), None);
    }

    #[test]
    fn the_label_must_say_true() {
        let task = |value: &str| v1::TaskInfo {
            labels: Some(v1::Labels {
                labels: vec![v1::Label {
                    key: CERTIFICATE_LABEL.into(),
                    value: Some(value.into()),
                }],
            }),
            ..Default::default()
        };
        assert!(requires_certificate(&task("true")));
        assert!(requires_certificate(&task(" TRUE ")));
        assert!(!requires_certificate(&task("false")));
        assert!(!requires_certificate(&v1::TaskInfo::default()));
    }
}
