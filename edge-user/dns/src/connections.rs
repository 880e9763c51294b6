//! Who holds the DNS server's TCP slots. So that no one client can deny TCP to the others (names
//! whose UDP answers are truncated are only resolvable over TCP), a client address holds at most
//! `tcp_max_clients_per_source` connections; when every slot is taken, the connection idle the
//! longest gives way to the new one (Knot DNS's XDP TCP resets its least recently active
//! connections the same way); and while more than half the slots are taken, connections wait
//! only `tcp_busy_idle_timeout` for their next query (NSD gives new connections 200 ms then).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tracing::warn;

use edge_config::DnsConfig;

/// Refusals and take-overs are logged at most this often, with their counts since the last log.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of `[dns]` that apply to TCP clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub max_clients: usize,
    pub max_per_source: usize,
    pub idle_timeout: Duration,
    pub busy_idle_timeout: Duration,
    pub io_timeout: Duration,
}

impl TcpLimits {
    pub fn of(config: &DnsConfig) -> Self {
        Self {
            max_clients: config.tcp_max_clients,
            max_per_source: config.tcp_max_clients_per_source,
            idle_timeout: config.tcp_idle_timeout,
            busy_idle_timeout: config.tcp_busy_idle_timeout,
            io_timeout: config.tcp_io_timeout,
        }
    }
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds its share, every one of them busy with a query.
    SourceFull,
    /// Every slot is taken and busy with a query.
    Full,
}

/// The open TCP connections of the server, over all its addresses.
pub struct Connections {
    /// Changed by a reload: new connections and idle waits follow at once.
    limits: Mutex<TcpLimits>,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_source: HashMap<IpAddr, usize>,
    /// Connections closed at once, and taken over, since the last report.
    refused: u64,
    taken_over: u64,
    reported: Option<Instant>,
}

struct Open {
    source: IpAddr,
    /// Since when it waits for its next query; `None` while it reads or answers one.
    idle_since: Option<Instant>,
    /// Told when the connection has to give its slot up.
    evicted: Arc<Notify>,
}

impl Connections {
    pub fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits: Mutex::new(limits),
            table: Mutex::new(Table::default()),
        })
    }

    pub fn limits(&self) -> TcpLimits {
        *self.limits.lock().expect("not poisoned")
    }

    /// New limits, from a reload; connections open keep their I/O timeout.
    pub fn set_limits(&self, limits: TcpLimits) {
        *self.limits.lock().expect("not poisoned") = limits;
    }

    /// A slot for a connection from `peer`, taken from the longest-idle connection of the same
    /// source when that source holds its share, and from the longest-idle connection of all when
    /// every slot is taken.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let source = source_of(peer);
        let limits = self.limits();
        let mut table = self.table.lock().expect("not poisoned");
        let result = table.make_room(source, limits);
        if result != Ok(false) {
            table.report();
        }
        result?;
        let id = table.next_id;
        table.next_id += 1;
        let evicted = Arc::new(Notify::new());
        table.open.insert(
            id,
            Open {
                source,
                idle_since: Some(Instant::now()),
                evicted: evicted.clone(),
            },
        );
        *table.per_source.entry(source).or_default() += 1;
        Ok(Slot {
            connections: self.clone(),
            id,
            evicted,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.table.lock().expect("not poisoned").open.len()
    }
}

impl Table {
    /// Frees a slot for a connection from `source` if the limits call for it: whether one was
    /// taken over.
    fn make_room(&mut self, source: IpAddr, limits: TcpLimits) -> Result<bool, Refusal> {
        let mut taken_over = false;
        if self.per_source.get(&source).copied().unwrap_or(0) >= limits.max_per_source {
            let victim = self
                .longest_idle(|open| open.source == source)
                .ok_or(Refusal::SourceFull);
            self.evict_or_count(victim)?;
            taken_over = true;
        }
        if self.open.len() >= limits.max_clients {
            let victim = self.longest_idle(|_| true).ok_or(Refusal::Full);
            self.evict_or_count(victim)?;
            taken_over = true;
        }
        Ok(taken_over)
    }

    fn evict_or_count(&mut self, victim: Result<u64, Refusal>) -> Result<(), Refusal> {
        match victim {
            Ok(id) => {
                self.evict(id);
                self.taken_over += 1;
                Ok(())
            }
            Err(refusal) => {
                self.refused += 1;
                Err(refusal)
            }
        }
    }

    /// Logs the refusals and take-overs so far, unless the last log is recent.
    fn report(&mut self) {
        let now = Instant::now();
        if self
            .reported
            .is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL)
        {
            return;
        }
        warn!(
            refused = self.refused,
            taken_over = self.taken_over,
            open = self.open.len(),
            "tcp clients over their limits (counts since the last report)"
        );
        self.refused = 0;
        self.taken_over = 0;
        self.reported = Some(now);
    }

    /// The connection idle the longest among those `eligible`.
    fn longest_idle(&self, eligible: impl Fn(&Open) -> bool) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, open)| eligible(open))
            .filter_map(|(&id, open)| Some((open.idle_since?, id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Frees the slot of `id` and tells its connection to close.
    fn evict(&mut self, id: u64) {
        if let Some(open) = self.release(id) {
            open.evicted.notify_one();
        }
    }

    fn release(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&open.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&open.source);
            }
        }
        Some(open)
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64 (what one host
/// usually gets, so that it cannot take a new share per address).
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// One connection's slot; freed when dropped.
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Slot {
    /// Marks the connection as waiting for its next query, and says how long it may wait.
    pub fn idle(&self) -> Duration {
        let limits = self.connections.limits();
        let mut table = self.connections.table.lock().expect("not poisoned");
        if let Some(open) = table.open.get_mut(&self.id) {
            open.idle_since = Some(Instant::now());
        }
        if table.open.len() > limits.max_clients / 2 {
            limits.busy_idle_timeout
        } else {
            limits.idle_timeout
        }
    }

    /// Marks the connection as reading or answering a query: not to be taken over meanwhile.
    pub fn busy(&self) {
        let mut table = self.connections.table.lock().expect("not poisoned");
        if let Some(open) = table.open.get_mut(&self.id) {
            open.idle_since = None;
        }
    }

    /// Completes when another connection has taken this slot over.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.connections.table.lock().expect("not poisoned");
        table.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(max_clients: usize, max_per_source: usize) -> TcpLimits {
        TcpLimits {
            max_clients,
            max_per_source,
            idle_timeout: Duration::from_secs(10),
            busy_idle_timeout: Duration::from_millis(200),
            io_timeout: Duration::from_millis(500),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Whether `slot` has been told to close.
    async fn was_evicted(slot: &Slot) -> bool {
        tokio::time::timeout(Duration::ZERO, slot.evicted())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_at_its_share_takes_over_its_own_longest_idle_connection() {
        let connections = Connections::new(limits(100, 2));
        let first = connections.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let second = connections.admit(ip("192.0.2.1")).unwrap();
        let other = connections.admit(ip("192.0.2.2")).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let third = connections.admit(ip("192.0.2.1")).unwrap();
        assert!(was_evicted(&first).await);
        assert!(!was_evicted(&second).await);
        assert!(!was_evicted(&other).await);
        assert_eq!(connections.open(), 3);
        // Busy connections are not taken over: the source is refused.
        second.busy();
        third.busy();
        assert_eq!(
            connections.admit(ip("192.0.2.1")).err(),
            Some(Refusal::SourceFull)
        );
        // A slot taken over is not freed twice when its connection ends.
        drop(first);
        assert_eq!(connections.open(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_server_takes_over_the_longest_idle_connection_of_any_source() {
        let connections = Connections::new(limits(3, 3));
        let a = connections.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = connections.admit(ip("192.0.2.2")).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let c = connections.admit(ip("192.0.2.3")).unwrap();
        a.busy();
        let d = connections.admit(ip("2001:db8::1")).unwrap();
        assert!(!was_evicted(&a).await);
        assert!(was_evicted(&b).await);
        assert!(!was_evicted(&c).await);
        c.busy();
        d.busy();
        assert_eq!(
            connections.admit(ip("192.0.2.4")).err(),
            Some(Refusal::Full)
        );
        // Idle again, most recently: c is not the one to go while a idles longer.
        tokio::time::advance(Duration::from_millis(10)).await;
        a.idle();
        tokio::time::advance(Duration::from_millis(10)).await;
        c.idle();
        let _e = connections.admit(ip("192.0.2.4")).unwrap();
        assert!(was_evicted(&a).await);
        assert!(!was_evicted(&c).await);
    }

    #[tokio::test]
    async fn the_idle_timeout_shrinks_when_more_than_half_the_slots_are_taken() {
        let connections = Connections::new(limits(4, 4));
        let first = connections.admit(ip("192.0.2.1")).unwrap();
        let _second = connections.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(first.idle(), Duration::from_secs(10));
        let third = connections.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(first.idle(), Duration::from_millis(200));
        drop(third);
        assert_eq!(first.idle(), Duration::from_secs(10));
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_of(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
