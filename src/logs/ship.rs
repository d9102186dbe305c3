//! The shipper: one thread that takes batches of finished entries from the
//! queue (the drains parse and enrich), applies the rate limit, and writes
//! them to Logstash's `json_lines` input over TCP (large writes, one
//! connection, reconnected with backoff, keep-alive, write timeout) or UDP
//! (one datagram per entry). While the sink is down or slow, entries are dropped and
//! counted; the task is never waited on (only this thread waits).

use std::{
    io::{self, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        mpsc::{Receiver, TryRecvError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{
    counters::{add, OutputCounters},
    drain::{Batch, Level},
};
use crate::config::Protocol;

/// The largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// TCP output is written once it reaches this size (or the queue is empty).
const BATCH: usize = 256 * 1024;
/// A blocked write checks the write timeout and `stop` this often.
const WRITE_SLICE: Duration = Duration::from_millis(100);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A token bucket: `rate` entries per second, bursts of `rate`.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: usize, now: Instant) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = rate as f64;
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Whether one more entry may go at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the sink's addresses come from: a fixed `host:port` (resolved at
/// each connection) or the list Consul discovery keeps current.
#[derive(Debug, Clone)]
pub(crate) enum Targets {
    Fixed(String),
    Discovered(Arc<Mutex<Vec<String>>>),
}

impl Targets {
    /// The `n`-th candidate (round robin over discovered instances).
    fn pick(&self, n: usize) -> Option<String> {
        match self {
            Self::Fixed(a) => Some(a.clone()),
            Self::Discovered(list) => {
                let list = list.lock().ok()?;
                (!list.is_empty()).then(|| list[n % list.len()].clone())
            }
        }
    }

    /// Waits, at most `timeout`, for discovery's first answer, so the first
    /// lines (queued meanwhile) are not dropped for want of an address.
    fn wait_first(&self, timeout: Duration) {
        let Self::Discovered(list) = self else {
            return;
        };
        let until = Instant::now() + timeout;
        while Instant::now() < until && list.lock().is_ok_and(|l| l.is_empty()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether `addr` is still a current target.
    fn still_listed(&self, addr: &str) -> bool {
        match self {
            Self::Fixed(_) => true,
            Self::Discovered(list) => list
                .lock()
                .map(|l| l.iter().any(|a| a == addr))
                .unwrap_or(true),
        }
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    })
}

/// What the shipper needs, fixed at the task's launch.
#[derive(Debug)]
pub(crate) struct ShipConfig {
    pub(crate) protocol: Protocol,
    pub(crate) targets: Targets,
    pub(crate) rate_limit: usize,
    pub(crate) tcp_keep_alive: Duration,
    pub(crate) tcp_timeout: Duration,
    /// Set when the drain time at the task's end ran out: what is left is
    /// dropped (counted), and a write the sink holds up gives up.
    pub(crate) stop: Arc<AtomicBool>,
}

/// The TCP connection, its pending batch, and the reconnect schedule.
struct Tcp {
    conn: Option<(TcpStream, String)>,
    batch: Vec<u8>,
    batch_entries: u64,
    next_attempt: Instant,
    backoff: Duration,
    attempts: usize,
    /// Whether the outage was logged (once per outage).
    down_logged: bool,
}

enum Sink {
    Tcp(Tcp),
    Udp(Option<UdpSocket>, Option<(String, SocketAddr)>),
}

/// Runs the shipper until every producer is gone and the queue is empty,
/// or `stop` is set (then what is left is dropped and counted).
pub(crate) fn run(
    rx: &Receiver<Batch>,
    level: &Level,
    cfg: &ShipConfig,
    counters: &OutputCounters,
) {
    let mut sink = match cfg.protocol {
        Protocol::Tcp => Sink::Tcp(Tcp {
            conn: None,
            batch: Vec::with_capacity(BATCH * 2),
            batch_entries: 0,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            attempts: 0,
            down_logged: false,
        }),
        Protocol::Udp => Sink::Udp(None, None),
    };
    cfg.targets.wait_first(cfg.tcp_timeout);
    let mut rate = (cfg.rate_limit > 0).then(|| RateLimit::new(cfg.rate_limit, Instant::now()));
    loop {
        let batch = match rx.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) => {
                sink.flush(cfg, counters);
                match rx.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        level.bytes.fetch_sub(batch.size(), Relaxed);
        level.entries.fetch_sub(batch.ends.len(), Relaxed);
        if cfg.stop.load(Relaxed) {
            add(&counters.dropped_at_exit, batch.ends.len() as u64);
            continue;
        }
        match (&mut rate, &sink) {
            (None, Sink::Tcp(_)) => sink.send(&batch.data, batch.ends.len() as u64, cfg, counters),
            _ => {
                for entry in batch.entries() {
                    if let Some(rate) = rate.as_mut() {
                        if !rate.take(Instant::now()) {
                            add(&counters.dropped_rate, 1);
                            continue;
                        }
                    }
                    sink.send(entry, 1, cfg, counters);
                }
            }
        }
    }
    sink.flush(cfg, counters);
}

impl Sink {
    /// Sends `entries` whole entries (one, over UDP).
    fn send(&mut self, data: &[u8], entries: u64, cfg: &ShipConfig, counters: &OutputCounters) {
        match self {
            Self::Tcp(tcp) => {
                if tcp.conn.is_none() && !tcp.connect(cfg) {
                    add(&counters.dropped_send_error, entries);
                    return;
                }
                if tcp.batch.is_empty() && data.len() >= BATCH {
                    // A full batch from the queue goes out as it is.
                    tcp.write(data, entries, cfg, counters);
                    return;
                }
                tcp.batch.extend_from_slice(data);
                tcp.batch_entries += entries;
                if tcp.batch.len() >= BATCH {
                    tcp.write_batch(cfg, counters);
                }
            }
            Self::Udp(socket, target) => match udp_send(socket, target, data, cfg) {
                Ok(()) => add(&counters.shipped, 1),
                Err(_) => {
                    *target = None;
                    add(&counters.dropped_send_error, 1);
                }
            },
        }
    }

    fn flush(&mut self, cfg: &ShipConfig, counters: &OutputCounters) {
        if let Self::Tcp(tcp) = self {
            tcp.write_batch(cfg, counters);
        }
    }
}

fn udp_send(
    socket: &mut Option<UdpSocket>,
    target: &mut Option<(String, SocketAddr)>,
    entry: &[u8],
    cfg: &ShipConfig,
) -> io::Result<()> {
    if target.is_none() {
        let name = cfg.targets.pick(0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no Logstash instance known yet")
        })?;
        let addr = resolve(&name)?;
        *target = Some((name, addr));
    }
    let Some((_, addr)) = target.as_ref() else {
        return Ok(());
    };
    if socket.is_none() {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().map_err(io::Error::other)?
        } else {
            "0.0.0.0:0".parse().map_err(io::Error::other)?
        };
        *socket = Some(UdpSocket::bind(bind)?);
    }
    let Some(s) = socket.as_ref() else {
        return Ok(());
    };
    s.send_to(entry, addr).map(|_| ())
}

impl Tcp {
    /// Connects to the next candidate unless backing off; `false` when there
    /// is no connection now.
    fn connect(&mut self, cfg: &ShipConfig) -> bool {
        let now = Instant::now();
        if now < self.next_attempt {
            return false;
        }
        let candidate = cfg.targets.pick(self.attempts);
        self.attempts = self.attempts.wrapping_add(1);
        let result = candidate
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no Logstash instance known yet")
            })
            .and_then(|name| {
                let addr = resolve(&name)?;
                let stream = TcpStream::connect_timeout(&addr, cfg.tcp_timeout)?;
                // Short, so a stalled write notices `stop` (see `write_until`).
                stream.set_write_timeout(Some(WRITE_SLICE.min(cfg.tcp_timeout)))?;
                stream.set_nodelay(true)?;
                keep_alive(&stream, cfg.tcp_keep_alive);
                Ok((stream, name))
            });
        match result {
            Ok((stream, name)) => {
                info!(logstash = %name, "connected to Logstash");
                self.conn = Some((stream, name));
                self.backoff = BACKOFF_MIN;
                self.down_logged = false;
                true
            }
            Err(e) => {
                if !self.down_logged {
                    warn!(cause = %e, "cannot reach Logstash; dropping entries (counted) and retrying with backoff");
                    self.down_logged = true;
                }
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    /// Writes the pending batch (see [`Tcp::write`]).
    fn write_batch(&mut self, cfg: &ShipConfig, counters: &OutputCounters) {
        if self.batch.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.batch_entries);
        let batch = std::mem::take(&mut self.batch);
        self.write(&batch, entries, cfg, counters);
        self.batch = batch;
        self.batch.clear();
    }

    /// Writes `entries` whole entries; on failure they are dropped (counted)
    /// and the connection is closed for a reconnect.
    fn write(&mut self, data: &[u8], entries: u64, cfg: &ShipConfig, counters: &OutputCounters) {
        let result = match &mut self.conn {
            Some((stream, name)) if cfg.targets.still_listed(name) && !peer_closed(stream) => {
                write_until(stream, data, cfg.tcp_timeout, &cfg.stop)
            }
            Some(_) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "Logstash closed the connection, or left the discovered instances",
            )),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
        };
        match result {
            Ok(()) => add(&counters.shipped, entries),
            Err(e) => {
                add(&counters.dropped_send_error, entries);
                if let Some((_, name)) = self.conn.take() {
                    warn!(logstash = %name, cause = %e, entries, "sending to Logstash failed; reconnecting");
                }
                self.next_attempt = Instant::now();
            }
        }
    }
}

/// Writes all of `data`, failing when the sink takes nothing for `timeout`
/// or `stop` is set while it takes nothing (each write waits at most
/// [`WRITE_SLICE`]).
fn write_until(
    stream: &mut TcpStream,
    mut data: &[u8],
    timeout: Duration,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut progress = Instant::now();
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Relaxed) || progress.elapsed() >= timeout {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "Logstash took nothing within the write timeout",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the peer has closed the connection (Logstash never writes to us,
/// so anything readable means EOF or an error): checked before each batch so
/// a restarted collector costs one batch at most, not many.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

/// TCP keep-alive with `idle` before the first probe (best effort).
fn keep_alive(stream: &TcpStream, idle: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = u32::try_from(idle.as_secs().max(1)).unwrap_or(u32::MAX);
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &secs);
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &secs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_is_a_token_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(3, t0);
        assert!((0..3).all(|_| r.take(t0)), "a burst of the rate");
        assert!(!r.take(t0));
        assert!(!r.take(t0 + Duration::from_millis(300)));
        assert!(
            r.take(t0 + Duration::from_millis(400)),
            "one token per 1/rate s"
        );
        assert!(!r.take(t0 + Duration::from_millis(400)));
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            (0..10).filter(|_| r.take(later)).count(),
            3,
            "never more than the burst"
        );
    }

    #[test]
    fn discovered_targets_rotate_and_an_empty_list_gives_none() {
        let list = Arc::new(Mutex::new(vec!["a:1".to_owned(), "b:2".to_owned()]));
        let t = Targets::Discovered(list.clone());
        assert_eq!(t.pick(0).as_deref(), Some("a:1"));
        assert_eq!(t.pick(1).as_deref(), Some("b:2"));
        assert_eq!(t.pick(2).as_deref(), Some("a:1"));
        assert!(t.still_listed("b:2"));
        list.lock().expect("lock").clear();
        assert_eq!(t.pick(0), None);
        assert!(!t.still_listed("b:2"));
    }
}
