//! The userspace authoritative server: UDP and TCP on every `dns.listen` address, each query
//! answered by [`respond`]. It answers what the XDP program passes up, and everything when no
//! program is attached. A reload swaps the zones through a watch channel.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{Semaphore, watch},
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, info, warn};

use super::{Transport, respond};
use crate::{config::DnsConfig, zone::Zones};

/// The zones as of the last (re)load.
pub type ZonesWatch = watch::Receiver<Arc<Zones>>;

/// A TCP client idle this long is disconnected (RFC 7766 §6.2.3 suggests seconds).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once; more wait in the kernel's accept queue.
const MAX_TCP_CONNECTIONS: usize = 512;
/// Largest DNS message (RFC 1035 §4.2.2: a 16-bit length prefix).
const MAX_MESSAGE: usize = u16::MAX as usize;

/// The running server; its sockets close when it is dropped.
pub struct Server {
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds every address of `config` (UDP and TCP) and starts answering from `zones`.
    pub fn start(config: &DnsConfig, zones: &ZonesWatch) -> Result<Self> {
        let mut tasks = JoinSet::new();
        // One UDP socket per core on each address (SO_REUSEPORT): the kernel spreads queries.
        let sockets_per_address = std::thread::available_parallelism().map_or(1, usize::from);
        let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        for (i, &address) in config.listen.iter().enumerate() {
            let binding = || format!("binding dns.listen[{i}] = {address}");
            for _ in 0..sockets_per_address {
                let socket = UdpSocket::from_std(udp_socket(address).with_context(binding)?.into())
                    .with_context(binding)?;
                tasks.spawn(serve_udp(socket, zones.clone()));
            }
            let listener =
                TcpListener::from_std(tcp_listener(address).with_context(binding)?.into())
                    .with_context(binding)?;
            tasks.spawn(serve_tcp(listener, zones.clone(), connections.clone()));
        }
        info!(addresses = ?config.listen, "dns server listening (udp, tcp)");
        Ok(Self { tasks })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.tasks.abort_all();
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

async fn serve_udp(socket: UdpSocket, zones: ZonesWatch) {
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
        if let Some(response) = respond(&current, &buffer[..len], Transport::Udp)
            && let Err(error) = socket.send_to(&response, peer).await
        {
            debug!(%error, %peer, "udp send");
        }
    }
}

async fn serve_tcp(listener: TcpListener, zones: ZonesWatch, connections: Arc<Semaphore>) {
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let zones = zones.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(stream, &zones).await {
                        debug!(%error, %peer, "tcp connection");
                    }
                    drop(permit);
                });
            }
            Err(error) => warn!(%error, "tcp accept"),
        }
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) until the client closes, idles, or sends
/// something we do not answer.
async fn serve_connection(mut stream: TcpStream, zones: &ZonesWatch) -> io::Result<()> {
    let mut buffer = vec![0; MAX_MESSAGE];
    loop {
        let len = match timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(()),
        };
        let query = &mut buffer[..len];
        timeout(TCP_IDLE_TIMEOUT, stream.read_exact(query)).await??;
        let current = zones.borrow().clone();
        let Some(response) = respond(&current, query, Transport::Tcp) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response);
        timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await??;
    }
}
