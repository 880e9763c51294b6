//! One HTTP/1.1 GET on a fresh connection, timed: the connect (a round trip) apart from the
//! request (the server's response time).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The User-Agent of every probe, so that origins can tell probes from clients in their logs.
pub const USER_AGENT: &str = "edge-probe";

/// Bodies larger than this are not probes: the read stops with an error.
const MAX_BODY: usize = 1 << 20;

/// A timed response.
#[derive(Debug)]
pub struct Timed {
    pub status: StatusCode,
    pub body: Bytes,
    /// TCP connect time.
    pub connect: Duration,
    /// Request written to the end of the body.
    pub elapsed: Duration,
}

/// GETs `path` from `address` naming `host` (none: the address itself); the whole exchange
/// must finish within `timeout`.
pub async fn get(
    address: SocketAddr,
    host: Option<&str>,
    path: &str,
    timeout: Duration,
) -> Result<Timed> {
    tokio::time::timeout(timeout, exchange(address, host, path))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
}

async fn exchange(address: SocketAddr, host: Option<&str>, path: &str) -> Result<Timed> {
    let start = Instant::now();
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let connect = start.elapsed();
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake")?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(
            header::HOST,
            host.map_or_else(|| address.to_string(), str::to_string),
        )
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let sent = Instant::now();
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("reading the body: {error}"))?
        .to_bytes();
    let elapsed = sent.elapsed();
    driver.abort();
    Ok(Timed {
        status,
        body,
        connect,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        // Connections complete in the kernel's backlog, but nobody reads the request.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let error = get(address, None, "/", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no answer within"), "{error:#}");
        drop(listener);
        let error = get(address, None, "/", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("connecting"), "{error:#}");
    }
}
