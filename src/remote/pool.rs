//! Connection slots of one listener, so that no kind of client can take the
//! slots another needs (docs/remote-limits.md):
//! - every open connection holds a slot; a connection that is *idle* (no
//!   request in progress: before its first request, between keep-alive
//!   requests, or still sending its headers) is evicted, oldest first, when a
//!   new client would otherwise be turned away;
//! - a TCP peer address holds at most [`PoolLimits::per_peer`] slots (its own
//!   idle connections give way first);
//! - requests that wait long (`?wait=`, `POST /remote/task`, `DELETE`, SSE)
//!   move their connection out of the short slots into a separate allowance
//!   ([`PoolLimits::max_long`]), so waiters never crowd out short requests.
//!
//! The decision is [`admit`], pure; [`Pool`] applies it under a `std` mutex
//! held only for short, non-awaiting sections.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::util::lock;

/// Limits of one listener's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Connections that are idle or in a short request.
    pub(crate) max: usize,
    /// Connections of one TCP peer address (Unix peers: no such cap).
    pub(crate) per_peer: usize,
    /// Connections in a long request (wait, SSE).
    pub(crate) max_long: usize,
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// No request in progress, since this instant.
    Idle(Instant),
    /// A short request is being answered.
    Busy,
    /// A long request (wait, SSE) is being answered.
    Long,
}

/// One connection as [`admit`] sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// Its slot id.
    pub(crate) id: u64,
    /// Its TCP peer address.
    pub(crate) peer: Option<IpAddr>,
    /// What it does now.
    pub(crate) using: Use,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Serve it.
    Admit,
    /// Close this idle connection, then serve the new one.
    Evict(u64),
    /// Turn it away: every short slot (of the pool, or of this peer) is busy.
    Refuse(Refusal),
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The pool's short slots are all in requests.
    Full,
    /// This peer's slots are all in requests.
    PeerFull,
}

fn oldest_idle<'a>(candidates: impl Iterator<Item = &'a Seen>) -> Option<u64> {
    candidates
        .filter_map(|s| match s.using {
            Use::Idle(since) => Some((since, s.id)),
            _ => None,
        })
        .min()
        .map(|(_, id)| id)
}

/// The admission decision for a new connection from `peer`, given the open
/// connections: within the peer's cap and the pool's, admit; over either,
/// evict the oldest idle connection that frees the needed slot; if there is
/// none, refuse.
pub(crate) fn admit(open: &[Seen], peer: Option<IpAddr>, limits: PoolLimits) -> Admission {
    if let Some(ip) = peer {
        let mine = || open.iter().filter(|s| s.peer == Some(ip));
        let short = mine().filter(|s| s.using != Use::Long).count();
        if short >= limits.per_peer {
            return oldest_idle(mine())
                .map_or(Admission::Refuse(Refusal::PeerFull), Admission::Evict);
        }
    }
    let short = open.iter().filter(|s| s.using != Use::Long).count();
    if short >= limits.max {
        return oldest_idle(open.iter()).map_or(Admission::Refuse(Refusal::Full), Admission::Evict);
    }
    Admission::Admit
}

#[derive(Debug)]
struct Entry {
    peer: Option<IpAddr>,
    using: Use,
    evict: CancellationToken,
    /// Made a request that passed the access check (TCP: the token).
    authenticated: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    entries: HashMap<u64, Entry>,
}

/// The slots of one listener.
#[derive(Debug)]
pub(crate) struct Pool {
    inner: Mutex<Inner>,
    limits: PoolLimits,
}

/// A request turned away because the long-request allowance is used up.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} requests are already waiting on this listener")]
pub(crate) struct LongFull(pub(crate) usize);

impl Pool {
    /// An empty pool.
    #[must_use]
    pub(crate) fn new(limits: PoolLimits) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            limits,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Takes a slot for a new connection from `peer`, evicting an idle one
    /// if needed ([`admit`]).
    pub(crate) fn open(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut inner = self.inner();
        let seen: Vec<Seen> = inner
            .entries
            .iter()
            .map(|(id, e)| Seen {
                id: *id,
                peer: e.peer,
                using: e.using,
            })
            .collect();
        match admit(&seen, peer, self.limits) {
            Admission::Refuse(why) => return Err(why),
            Admission::Evict(id) => {
                if let Some(e) = inner.entries.remove(&id) {
                    e.evict.cancel();
                }
            }
            Admission::Admit => {}
        }
        inner.next += 1;
        let id = inner.next;
        let evict = CancellationToken::new();
        inner.entries.insert(
            id,
            Entry {
                peer,
                using: Use::Idle(Instant::now()),
                evict: evict.clone(),
                authenticated: false,
            },
        );
        Ok(Slot {
            pool: Arc::clone(self),
            id,
            evicted: evict,
        })
    }

    fn set(&self, id: u64, using: Use) {
        if let Some(e) = self.inner().entries.get_mut(&id) {
            e.using = using;
        }
    }

    /// (open, long) connections.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.inner();
        let long = inner
            .entries
            .values()
            .filter(|e| e.using == Use::Long)
            .count();
        (inner.entries.len(), long)
    }
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pool: Arc<Pool>,
    id: u64,
    /// Cancelled when the slot is taken for a new client.
    pub(crate) evicted: CancellationToken,
}

impl Slot {
    /// Marks a request in progress until the returned guard is dropped
    /// (with the response body, so a streamed body counts too).
    #[must_use]
    pub(crate) fn begin(self: &Arc<Self>) -> InUse {
        self.pool.set(self.id, Use::Busy);
        InUse {
            slot: Arc::clone(self),
        }
    }

    /// Records that a request on this connection passed the access check.
    pub(crate) fn authenticate(&self) {
        if let Some(e) = self.pool.inner().entries.get_mut(&self.id) {
            e.authenticated = true;
        }
    }

    /// When the connection counts as idle for too long: `limit` after it went
    /// idle (`first` instead while no request passed the access check), or
    /// `None` while a request is in progress.
    #[must_use]
    pub(crate) fn idle_deadline(&self, limit: Duration, first: Duration) -> Option<Instant> {
        let inner = self.pool.inner();
        let e = inner.entries.get(&self.id)?;
        match e.using {
            Use::Idle(since) => Some(since + if e.authenticated { limit } else { first }),
            Use::Busy | Use::Long => None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.inner().entries.remove(&self.id);
    }
}

/// A request in progress on a slot; idle again when dropped.
#[derive(Debug)]
pub(crate) struct InUse {
    slot: Arc<Slot>,
}

impl InUse {
    /// Moves the request to the long allowance, if there is room.
    pub(crate) fn long(&self) -> Result<(), LongFull> {
        let pool = &self.slot.pool;
        let mut inner = pool.inner();
        let long = inner
            .entries
            .values()
            .filter(|e| e.using == Use::Long)
            .count();
        if long >= pool.limits.max_long {
            return Err(LongFull(pool.limits.max_long));
        }
        if let Some(e) = inner.entries.get_mut(&self.slot.id) {
            e.using = Use::Long;
        }
        Ok(())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.slot.pool.set(self.slot.id, Use::Idle(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PoolLimits = PoolLimits {
        max: 3,
        per_peer: 2,
        max_long: 1,
    };

    fn seen(id: u64, peer: Option<u8>, using: Use) -> Seen {
        Seen {
            id,
            peer: peer.map(|p| IpAddr::from([10, 0, 0, p])),
            using,
        }
    }

    #[test]
    fn idle_connections_give_way_oldest_first_and_busy_ones_never() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let open = [
            seen(1, None, Use::Idle(later)),
            seen(2, None, Use::Idle(t0)),
            seen(3, None, Use::Busy),
        ];
        assert_eq!(admit(&open[..2], None, LIMITS), Admission::Admit);
        assert_eq!(admit(&open, None, LIMITS), Admission::Evict(2));
        let busy = [
            seen(1, None, Use::Busy),
            seen(2, None, Use::Busy),
            seen(3, None, Use::Busy),
        ];
        assert_eq!(admit(&busy, None, LIMITS), Admission::Refuse(Refusal::Full));
        // Long requests do not take short slots.
        let waiting = [
            seen(1, None, Use::Long),
            seen(2, None, Use::Busy),
            seen(3, None, Use::Busy),
        ];
        assert_eq!(admit(&waiting, None, LIMITS), Admission::Admit);
    }

    #[test]
    fn a_peer_over_its_cap_evicts_its_own_idle_connection_only() {
        let t0 = Instant::now();
        let open = [
            seen(1, Some(1), Use::Idle(t0)),
            seen(2, Some(1), Use::Busy),
            seen(3, Some(2), Use::Idle(t0 - Duration::from_millis(1))),
        ];
        assert_eq!(
            admit(&open, Some(IpAddr::from([10, 0, 0, 1])), LIMITS),
            Admission::Evict(1)
        );
        let open = [seen(1, Some(1), Use::Busy), seen(2, Some(1), Use::Busy)];
        assert_eq!(
            admit(&open, Some(IpAddr::from([10, 0, 0, 1])), LIMITS),
            Admission::Refuse(Refusal::PeerFull)
        );
        assert_eq!(
            admit(&open, Some(IpAddr::from([10, 0, 0, 2])), LIMITS),
            Admission::Admit
        );
    }

    #[tokio::test]
    async fn slots_track_their_connection() {
        let pool = Pool::new(LIMITS);
        let a = Arc::new(pool.open(None).expect("a"));
        let b = Arc::new(pool.open(None).expect("b"));
        let c = pool.open(None).expect("c");
        // a and b busy; c idle and the oldest idle: it gives way.
        let in_a = a.begin();
        let in_b = b.begin();
        let d = pool.open(None).expect("d evicts c");
        assert!(c.evicted.is_cancelled());
        assert!(!a.evicted.is_cancelled());
        in_a.long().expect("one long request fits");
        assert!(in_b.long().is_err(), "only one long request");
        assert_eq!(pool.counts(), (3, 1));
        assert!(a
            .idle_deadline(Duration::from_secs(30), Duration::from_secs(5))
            .is_none());
        drop(in_a);
        let first = a
            .idle_deadline(Duration::from_secs(30), Duration::from_secs(5))
            .expect("idle");
        a.authenticate();
        let later = a
            .idle_deadline(Duration::from_secs(30), Duration::from_secs(5))
            .expect("idle");
        assert!(later > first, "an authenticated connection may idle longer");
        drop(d);
        drop(in_b);
        assert_eq!(pool.counts(), (2, 0));
    }
}
