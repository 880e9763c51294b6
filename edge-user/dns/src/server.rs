//! The userspace authoritative server: UDP and TCP on every `dns.listen` address, each query
//! answered by [`respond`]. It answers what the XDP program passes up, and everything when no
//! program is attached. A reload swaps the zones through a watch channel.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use edge_config::DnsConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::{
    connections::{Connections, Slot, TcpLimits},
    message::{Transport, respond},
    updates::{self, Requests},
    zone::Zones,
};

/// The zones as of the last (re)load.
pub type ZonesWatch = watch::Receiver<Arc<Zones>>;

/// A failed accept (out of file descriptors, say) pauses accepting this long, rather than
/// spinning on it.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Largest DNS message (RFC 1035 §4.2.2: a 16-bit length prefix).
const MAX_MESSAGE: usize = u16::MAX as usize;

/// The running server; its sockets close when it is dropped.
pub struct Server {
    /// The tasks serving each address (its UDP sockets and TCP listener).
    listening: Vec<(SocketAddr, JoinSet<()>)>,
    connections: Arc<Connections>,
    zones: ZonesWatch,
    queries: Arc<QueryCounts>,
    /// Where authenticated updates go; without it they are refused.
    updates: Option<Requests>,
}

/// The sockets of the addresses a reload adds, bound before anything changes, and the config
/// they come from: [`Server::apply`] swaps them in; dropped, they close.
pub struct Prepared {
    config: DnsConfig,
    bound: Vec<(SocketAddr, Vec<UdpSocket>, TcpListener)>,
}

/// Queries the server answered, by transport and the RCODE of the response header (the four
/// header bits: an extended RCODE shows as its low bits), and queries it left unanswered.
#[derive(Debug, Default)]
pub struct QueryCounts {
    udp: [AtomicU64; 16],
    tcp: [AtomicU64; 16],
    udp_unanswered: AtomicU64,
    tcp_unanswered: AtomicU64,
}

impl QueryCounts {
    fn count(&self, transport: Transport, response: Option<&[u8]>) {
        let (answered, unanswered) = match transport {
            Transport::Udp => (&self.udp, &self.udp_unanswered),
            Transport::Tcp => (&self.tcp, &self.tcp_unanswered),
        };
        let counter = match response.and_then(|response| response.get(3)) {
            Some(flags) => &answered[usize::from(flags & 0x0f)],
            None => unanswered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Queries answered over `transport`, by RCODE (index 0: NOERROR, 3: NXDOMAIN…).
    pub fn answered(&self, transport: Transport) -> [u64; 16] {
        let answered = match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
        };
        answered
            .each_ref()
            .map(|count| count.load(Ordering::Relaxed))
    }

    /// Queries over `transport` that got no response (not a query we answer).
    pub fn unanswered(&self, transport: Transport) -> u64 {
        match transport {
            Transport::Udp => &self.udp_unanswered,
            Transport::Tcp => &self.tcp_unanswered,
        }
        .load(Ordering::Relaxed)
    }
}

impl Server {
    /// Binds every address of `config` (UDP and TCP) and starts answering from `zones`,
    /// counting what it answers in `queries`, and handing authenticated updates to `updates`.
    pub fn start(
        config: &DnsConfig,
        zones: &ZonesWatch,
        queries: &Arc<QueryCounts>,
        updates: Option<Requests>,
    ) -> Result<Self> {
        let mut server = Self {
            listening: Vec::new(),
            connections: Connections::new(TcpLimits::of(config)),
            zones: zones.clone(),
            queries: queries.clone(),
            updates,
        };
        let prepared = server.prepare(config)?;
        server.apply(prepared);
        Ok(server)
    }

    /// Binds the addresses of `config` that are not served yet, without changing anything: an
    /// address that cannot be bound fails the whole reload, and the server goes on as it was.
    pub fn prepare(&self, config: &DnsConfig) -> Result<Prepared> {
        // One UDP socket per core on each address (SO_REUSEPORT): the kernel spreads queries.
        let sockets_per_address = std::thread::available_parallelism().map_or(1, usize::from);
        let mut bound = Vec::new();
        for (i, &address) in config.listen.iter().enumerate() {
            if self.listening.iter().any(|(served, _)| *served == address) {
                continue;
            }
            let binding = || format!("binding dns.listen[{i}] = {address}");
            let udp = (0..sockets_per_address)
                .map(|_| {
                    UdpSocket::from_std(udp_socket(address).with_context(binding)?.into())
                        .with_context(binding)
                })
                .collect::<Result<Vec<_>>>()?;
            let tcp = TcpListener::from_std(tcp_listener(address).with_context(binding)?.into())
                .with_context(binding)?;
            bound.push((address, udp, tcp));
        }
        Ok(Prepared {
            config: config.clone(),
            bound,
        })
    }

    /// Serves the prepared config: its new addresses start answering, the addresses it no
    /// longer lists close (connections open on them finish), and its TCP limits apply to every
    /// new connection.
    pub fn apply(&mut self, prepared: Prepared) {
        let Prepared { config, bound } = prepared;
        self.connections.set_limits(TcpLimits::of(&config));
        // Dropping a JoinSet aborts its tasks, which closes their sockets.
        self.listening
            .retain(|(address, _)| config.listen.contains(address));
        for (address, udp, tcp) in bound {
            let mut tasks = JoinSet::new();
            for socket in udp {
                tasks.spawn(serve_udp(
                    socket,
                    self.zones.clone(),
                    self.queries.clone(),
                    self.updates.clone(),
                ));
            }
            tasks.spawn(serve_tcp(
                tcp,
                self.zones.clone(),
                self.connections.clone(),
                self.queries.clone(),
                self.updates.clone(),
            ));
            self.listening.push((address, tasks));
        }
        info!(addresses = ?config.listen, "dns server listening (udp, tcp)");
    }
}

fn socket(address: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    if address.is_ipv6() {
        // So that `[::]:53` and `0.0.0.0:53` can both be listed.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn udp_socket(address: SocketAddr) -> io::Result<Socket> {
    let socket = socket(address, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

fn tcp_listener(address: SocketAddr) -> io::Result<Socket> {
    let socket = socket(address, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

async fn serve_udp(
    socket: UdpSocket,
    zones: ZonesWatch,
    queries: Arc<QueryCounts>,
    updates: Option<Requests>,
) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0; MAX_MESSAGE];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                debug!(%error, "udp receive");
                continue;
            }
        };
        let current = zones.borrow().clone();
        if updates::is_update(&buffer[..len]) {
            // Applied by the daemon, one at a time: queries on this socket go on meanwhile.
            let (socket, queries, updates) = (socket.clone(), queries.clone(), updates.clone());
            let request = buffer[..len].to_vec();
            tokio::spawn(async move {
                let response = updates::respond(&current, &request, updates.as_ref()).await;
                queries.count(Transport::Udp, response.as_deref());
                if let Some(response) = response
                    && let Err(error) = socket.send_to(&response, peer).await
                {
                    debug!(%error, %peer, "udp send");
                }
            });
            continue;
        }
        let response = respond(&current, &buffer[..len], Transport::Udp);
        queries.count(Transport::Udp, response.as_deref());
        if let Some(response) = response
            && let Err(error) = socket.send_to(&response, peer).await
        {
            debug!(%error, %peer, "udp send");
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    zones: ZonesWatch,
    connections: Arc<Connections>,
    queries: Arc<QueryCounts>,
    updates: Option<Requests>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "tcp accept");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        // Refused: closed at once, so the client learns it now rather than after a timeout.
        let slot = match connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                debug!(%peer, ?refusal, "tcp connection refused");
                continue;
            }
        };
        let zones = zones.clone();
        let limits = connections.limits();
        let queries = queries.clone();
        let updates = updates.clone();
        tokio::spawn(async move {
            let served =
                serve_connection(stream, &zones, &slot, limits, &queries, updates.as_ref());
            if let Err(error) = served.await {
                debug!(%error, %peer, "tcp connection");
            }
        });
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) until the client closes, idles, sends
/// something we do not answer, or its slot is taken over while it idles. A query has
/// `limits.io_timeout` to arrive once its first byte has, and so has its response to be sent.
async fn serve_connection(
    mut stream: TcpStream,
    zones: &ZonesWatch,
    slot: &Slot,
    limits: TcpLimits,
    queries: &QueryCounts,
    updates: Option<&Requests>,
) -> io::Result<()> {
    let mut buffer = vec![0; MAX_MESSAGE];
    loop {
        let wait = slot.idle();
        let mut prefix = [0; 2];
        let read = tokio::select! {
            () = slot.evicted() => return Ok(()),
            read = timeout(wait, stream.read(&mut prefix)) => read,
        };
        let started = match read {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(started)) => started,
            Ok(Err(error)) => return Err(error),
        };
        slot.busy();
        if started == 1 {
            timeout(limits.io_timeout, stream.read_exact(&mut prefix[1..])).await??;
        }
        let query = &mut buffer[..usize::from(u16::from_be_bytes(prefix))];
        timeout(limits.io_timeout, stream.read_exact(query)).await??;
        let current = zones.borrow().clone();
        let response = if updates::is_update(query) {
            updates::respond(&current, query, updates).await
        } else {
            respond(&current, query, Transport::Tcp)
        };
        queries.count(Transport::Tcp, response.as_deref());
        let Some(response) = response else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response);
        timeout(limits.io_timeout, stream.write_all(&framed)).await??;
    }
}
