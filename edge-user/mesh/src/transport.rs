//! Authenticated gossip: a chitchat [`Transport`] that wraps chitchat's own UDP transport and
//! sends every datagram as
//!
//! ```text
//! version (1) | sent at, ms since the epoch (8) | sequence (8) | chitchat datagram | HMAC (32)
//! ```
//!
//! (numbers big endian; the sequence counts the sender's datagrams from a random start, so that
//! two identical chitchat messages sent in the same millisecond are not taken for a replay)
//!
//! the MAC keyed with the cluster's shared secret over everything before it. A datagram with a
//! bad MAC, sent more than [`REPLAY_WINDOW`] from now, already seen (same MAC within the window),
//! or carrying another cluster id is dropped before chitchat sees it, and counted
//! ([`Counters`]). There is no encryption: see docs/MESH.md for what an attacker on the path can
//! still do.
//!
//! chitchat keeps its wire encoding to itself, so the wrapper lets chitchat's
//! [`UdpSocket`](chitchat::transport::UdpSocket) encode and decode on a loopback socket pair
//! (`inner` ↔ `relay`), and does the network side itself: chitchat's datagram to a peer goes
//! inner → relay (here it is sealed) → the peer; a sealed datagram from a peer is opened here
//! and goes relay → inner, where chitchat decodes it.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use chitchat::{
    ChitchatMessage,
    transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp},
};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// The first byte of every sealed datagram.
const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8;
const TAG: usize = 32;
/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// How far a datagram's send time may be from the receiver's clock (both ways): the PoPs'
/// clocks must agree within it (NTP), and a captured datagram can be replayed only within it,
/// and only once.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10);

/// Why datagrams were dropped, and what went through; shown by `edge status`.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    bad_mac: AtomicU64,
    stale: AtomicU64,
    replayed: AtomicU64,
    wrong_cluster: AtomicU64,
    undecodable: AtomicU64,
    sent: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipCounters {
    /// Datagrams handed to chitchat.
    pub accepted: u64,
    /// Too short, unknown version, or a MAC that does not match the shared secret.
    pub bad_mac: u64,
    /// Sent more than [`REPLAY_WINDOW`] away from now.
    pub stale: u64,
    /// The same datagram again within the window.
    pub replayed: u64,
    /// Authenticated, but for another cluster id.
    pub wrong_cluster: u64,
    /// Authenticated, but chitchat could not decode it.
    pub undecodable: u64,
    pub sent: u64,
    pub bytes_sent: u64,
    /// Bytes of every datagram received, dropped ones included.
    pub bytes_received: u64,
}

impl Counters {
    pub fn snapshot(&self) -> GossipCounters {
        GossipCounters {
            accepted: self.accepted.load(Relaxed),
            bad_mac: self.bad_mac.load(Relaxed),
            stale: self.stale.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            wrong_cluster: self.wrong_cluster.load(Relaxed),
            undecodable: self.undecodable.load(Relaxed),
            sent: self.sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Seals and opens datagrams with the cluster's secret.
#[derive(Clone)]
pub struct Sealer {
    mac: Hmac<Sha256>,
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// `payload` sealed, stamped with `sent_at` (ms since the epoch) and `sequence`.
    pub fn seal(&self, payload: &[u8], sent_at: u64, sequence: u64) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(HEADER + payload.len() + TAG);
        datagram.push(VERSION);
        datagram.extend_from_slice(&sent_at.to_be_bytes());
        datagram.extend_from_slice(&sequence.to_be_bytes());
        datagram.extend_from_slice(payload);
        let mut mac = self.mac.clone();
        mac.update(&datagram);
        datagram.extend_from_slice(&mac.finalize().into_bytes());
        datagram
    }

    /// The send time and payload of an authentic `datagram`; `None` when it is not.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<(u64, &'a [u8], [u8; TAG])> {
        if datagram.len() < HEADER + TAG || datagram[0] != VERSION {
            return None;
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG);
        let mut mac = self.mac.clone();
        mac.update(signed);
        // Constant-time comparison.
        mac.verify_slice(tag).ok()?;
        let sent_at = u64::from_be_bytes(signed[1..9].try_into().expect("8 bytes"));
        Some((
            sent_at,
            &signed[HEADER..],
            tag.try_into().expect("32 bytes"),
        ))
    }
}

/// A random number from the standard library's per-process hash keys (not secret: it only
/// keeps sequences of restarted PoPs apart).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The MACs seen within the replay window, with their send times.
#[derive(Default)]
struct Seen {
    tags: HashMap<[u8; TAG], u64>,
    /// When the map was last swept of entries out of the window.
    swept: u64,
}

impl Seen {
    /// Whether `tag` is new (and remembers it).
    fn first(&mut self, tag: [u8; TAG], sent_at: u64, now: u64) -> bool {
        let window = REPLAY_WINDOW.as_millis() as u64;
        if now.saturating_sub(self.swept) > window {
            self.tags
                .retain(|_, sent| now.saturating_sub(*sent) <= window);
            self.swept = now;
        }
        self.tags.insert(tag, sent_at).is_none()
    }
}

/// The transport chitchat runs on: authenticated UDP for one cluster.
pub struct AuthTransport {
    sealer: Sealer,
    cluster_id: String,
    counters: Arc<Counters>,
}

impl AuthTransport {
    pub fn new(secret: &str, cluster_id: &str, counters: Arc<Counters>) -> Self {
        Self {
            sealer: Sealer::new(secret.as_bytes()),
            cluster_id: cluster_id.to_string(),
            counters,
        }
    }
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen: SocketAddr) -> Result<Box<dyn Socket>> {
        let network = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("binding mesh.listen = {listen} (UDP)"))?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let inner = ChitchatUdp::open(loopback)
            .await
            .context("opening chitchat's loopback socket (is lo up?)")?;
        let relay = UdpSocket::bind(loopback).await?;
        Ok(Box::new(AuthSocket {
            inner_addr: inner.local_addr()?,
            relay_addr: relay.local_addr()?,
            inner,
            relay,
            network,
            sealer: self.sealer.clone(),
            cluster_id: self.cluster_id.clone(),
            counters: self.counters.clone(),
            seen: Seen::default(),
            sequence: random_u64(),
            pending: None,
            buffer: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

/// How long chitchat may take to decode a datagram on the loopback pair before it counts as
/// undecodable.
const DECODE_WAIT: Duration = Duration::from_millis(100);

/// A datagram handed to chitchat: who sent it, its length, until when it may take.
#[derive(Clone, Copy)]
struct Pending {
    from: SocketAddr,
    length: usize,
    deadline: tokio::time::Instant,
}

struct AuthSocket {
    /// chitchat's own socket: encodes what it sends to the relay, decodes what it gets from it.
    inner: ChitchatUdp,
    inner_addr: SocketAddr,
    relay: UdpSocket,
    relay_addr: SocketAddr,
    /// Where the peers' datagrams come and go.
    network: UdpSocket,
    sealer: Sealer,
    cluster_id: String,
    counters: Arc<Counters>,
    seen: Seen,
    /// Of the next datagram sent.
    sequence: u64,
    /// The opened datagram handed to `inner` and not yet taken back from it. Kept across a
    /// cancelled `recv` (chitchat's loop cancels it at every gossip tick), so that a datagram
    /// is never paired with another sender, and so that the wait for it keeps its deadline
    /// instead of starting over: a fresh wait per call would never end for a datagram chitchat
    /// cannot decode, and nothing after it would be read.
    pending: Option<Pending>,
    buffer: Box<[u8]>,
}

#[async_trait]
impl Socket for AuthSocket {
    fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.network.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: chitchat::ChitchatEnvelope,
    ) -> Result<SendOutcome> {
        // Leftovers of a cancelled send must not be taken for this one.
        while self.relay.try_recv_from(&mut self.buffer).is_ok() {}
        self.inner.send(self.relay_addr, envelope).await?;
        let length = loop {
            let (length, from) = self.relay.recv_from(&mut self.buffer).await?;
            if from == self.inner_addr {
                break length;
            }
        };
        self.sequence = self.sequence.wrapping_add(1);
        let datagram = self
            .sealer
            .seal(&self.buffer[..length], now_ms(), self.sequence);
        if datagram.len() > MAX_DATAGRAM {
            warn!(to = %to, length = datagram.len(), "gossip datagram too large, not sent");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.network.send_to(&datagram, to).await {
            Ok(sent) => {
                count(&self.counters.sent);
                self.counters.bytes_sent.fetch_add(sent as u64, Relaxed);
                Ok(SendOutcome {
                    num_bytes_sent: sent,
                })
            }
            // A peer that is gone or unreachable is the failure detector's business; an error
            // here would stop chitchat.
            Err(error) => {
                debug!(%to, %error, "gossip send failed");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    async fn recv(&mut self) -> Result<RecvOutcome> {
        loop {
            if let Some(Pending {
                from,
                length,
                deadline,
            }) = self.pending
            {
                let outcome = self.take_decoded(deadline).await;
                self.pending = None;
                match outcome {
                    Some(mut outcome) if self.of_this_cluster(&outcome.envelope.message) => {
                        count(&self.counters.accepted);
                        outcome.from_addr = from;
                        outcome.num_bytes_received = length;
                        return Ok(outcome);
                    }
                    Some(_) => count(&self.counters.wrong_cluster),
                    None => count(&self.counters.undecodable),
                }
            }
            let (length, from) = match self.network.recv_from(&mut self.buffer).await {
                Ok(received) => received,
                Err(error) => {
                    debug!(%error, "gossip receive failed");
                    continue;
                }
            };
            self.counters
                .bytes_received
                .fetch_add(length as u64, Relaxed);
            let Some((sent_at, payload, tag)) = self.sealer.open(&self.buffer[..length]) else {
                count(&self.counters.bad_mac);
                continue;
            };
            let now = now_ms();
            if now.abs_diff(sent_at) > REPLAY_WINDOW.as_millis() as u64 {
                count(&self.counters.stale);
                continue;
            }
            if !self.seen.first(tag, sent_at, now) {
                count(&self.counters.replayed);
                continue;
            }
            // Not async: nothing can cancel between handing the datagram over and noting whose
            // it is.
            if self.relay.try_send_to(payload, self.inner_addr).is_ok() {
                self.pending = Some(Pending {
                    from,
                    length,
                    deadline: tokio::time::Instant::now() + DECODE_WAIT,
                });
            }
        }
    }
}

impl AuthSocket {
    /// The envelope chitchat decoded from the datagram the relay handed it; `None` if it could
    /// not by `deadline` (chitchat skips what it cannot decode and waits for the next).
    async fn take_decoded(&mut self, deadline: tokio::time::Instant) -> Option<RecvOutcome> {
        let relay = self.relay_addr;
        let inner = &mut self.inner;
        tokio::time::timeout_at(deadline, async {
            loop {
                match inner.recv().await {
                    Ok(outcome) if outcome.from_addr == relay => return Some(outcome),
                    // Not from the relay: another local process; ignored.
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether `message` may be from this cluster: only a Syn names its cluster; a BadCluster
    /// answer means the sender is in another.
    fn of_this_cluster(&self, message: &ChitchatMessage) -> bool {
        match message {
            ChitchatMessage::Syn { cluster_id, .. } => *cluster_id == self.cluster_id,
            ChitchatMessage::BadCluster => false,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let sealer = Sealer::new(b"0123456789abcdef");
        let datagram = sealer.seal(b"gossip", 42, 7);
        assert_eq!(datagram.len(), HEADER + 6 + TAG);
        let (sent_at, payload, _) = sealer.open(&datagram).unwrap();
        assert_eq!((sent_at, payload), (42, &b"gossip"[..]));
        // Any flipped bit, another key, a truncation: refused.
        for i in 0..datagram.len() {
            let mut tampered = datagram.clone();
            tampered[i] ^= 1;
            assert!(sealer.open(&tampered).is_none(), "bit flipped at {i}");
        }
        assert!(Sealer::new(b"another secret!!").open(&datagram).is_none());
        assert!(sealer.open(&datagram[..HEADER + TAG - 1]).is_none());
    }

    /// chitchat's loop cancels `recv` at every gossip tick (100 ms by default). A datagram it
    /// cannot decode is still counted, and what comes after it is still read, when every call
    /// is cancelled before the decode wait of a fresh call would end (CI saw the counters of
    /// an undecodable datagram and of its replay stay at 0 in the mesh metrics test).
    #[tokio::test]
    async fn an_undecodable_datagram_is_counted_although_every_receive_is_cancelled() {
        let counters = Arc::new(Counters::default());
        let transport = AuthTransport::new("a test secret", "test", counters.clone());
        let mut socket = transport
            .open(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let sealer = Sealer::new(b"a test secret");
        let undecodable = sealer.seal(b"not a chitchat message", now_ms(), 1);
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let target = socket.local_addr().unwrap();
        peer.send_to(&undecodable, target).await.unwrap();
        peer.send_to(&undecodable, target).await.unwrap();
        let cancel_after = DECODE_WAIT * 2 / 3;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let counted = counters.snapshot();
            if (counted.undecodable, counted.replayed) == (1, 1) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "counted: {counted:?}"
            );
            let received = tokio::time::timeout(cancel_after, socket.recv()).await;
            assert!(received.is_err(), "nothing decodable was sent");
        }
    }

    #[test]
    fn a_datagram_is_taken_once() {
        let mut seen = Seen::default();
        let now = 1_000_000;
        assert!(seen.first([1; TAG], now, now));
        assert!(!seen.first([1; TAG], now, now + 5));
        assert!(seen.first([2; TAG], now, now + 5));
        // Swept once out of the window (by then the send time refuses it anyway).
        let later = now + 2 * REPLAY_WINDOW.as_millis() as u64;
        assert!(seen.first([3; TAG], later, later));
        assert_eq!(seen.tags.len(), 1);
    }
}
