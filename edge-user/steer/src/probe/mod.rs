//! Active measurements of one pool member: a TCP connect and an HTTP GET of the health path
//! (health, round trip, response time), its agent's load report, and for PoPs an FTP login.
//! Every probe is bounded by the pool's timeout.

pub mod ftp;
pub mod http;

use std::{net::SocketAddr, time::Duration};

use edge_config::{MemberConfig, steering::ProbeConfig};

use crate::agent::LoadReport;

/// What one probe round saw of a member.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// The health GET answered below 400 within the timeout.
    pub healthy: bool,
    /// TCP connect time of the health GET: one round trip.
    pub rtt: Option<Duration>,
    /// Health GET, request sent to body read.
    pub http: Option<Duration>,
    /// FTP connect, banner, login, quit; the timeout when it failed.
    pub ftp: Option<Duration>,
    pub load: Option<LoadReport>,
    /// Why the health GET or another probe failed.
    pub error: Option<String>,
}

/// Probes `member` once, its probes at the same time.
pub async fn member(member: &MemberConfig, config: &ProbeConfig) -> Sample {
    let timeout = config.timeout;
    let health = http::get(
        SocketAddr::new(member.address, member.http_port),
        config.host.as_deref(),
        &config.health_path,
        timeout,
    );
    let agent = async {
        match member.agent_port {
            Some(port) => Some(agent(SocketAddr::new(member.address, port), timeout).await),
            None => None,
        }
    };
    let ftp = async {
        match member.ftp_port {
            Some(port) => Some(ftp::login(SocketAddr::new(member.address, port), timeout).await),
            None => None,
        }
    };
    let (health, agent, ftp) = tokio::join!(health, agent, ftp);
    let mut errors = Vec::new();
    let mut sample = Sample::default();
    match health {
        Ok(response) if response.status.as_u16() < 400 => {
            sample.healthy = true;
            sample.rtt = Some(response.connect);
            sample.http = Some(response.elapsed);
        }
        Ok(response) => {
            sample.rtt = Some(response.connect);
            errors.push(format!("health: status {}", response.status));
        }
        Err(error) => errors.push(format!("health: {error:#}")),
    }
    match agent {
        Some(Ok(report)) => sample.load = Some(report),
        Some(Err(error)) => errors.push(format!("agent: {error:#}")),
        None => {}
    }
    match ftp {
        Some(Ok(elapsed)) => sample.ftp = Some(elapsed),
        Some(Err(error)) => {
            sample.ftp = Some(timeout);
            errors.push(format!("ftp: {error:#}"));
        }
        None => {}
    }
    sample.error = (!errors.is_empty()).then(|| errors.join("; "));
    sample
}

/// The load report of the agent at `address`.
async fn agent(address: SocketAddr, timeout: Duration) -> anyhow::Result<LoadReport> {
    let response = http::get(address, None, crate::agent::LOAD_PATH, timeout).await?;
    anyhow::ensure!(response.status.is_success(), "status {}", response.status);
    Ok(serde_json::from_slice(&response.body)?)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server that answers as a PoP's HTTP server does: 200 for the hostname it serves, 421
    /// (misdirected) for any other Host, such as its bare address.
    async fn site_server(site: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buffer = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buffer[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let status = if head.contains(&format!("\r\nhost: {site}\r\n")) {
                    "200 OK"
                } else {
                    "421 Misdirected Request"
                };
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        address
    }

    fn member_at(address: SocketAddr) -> MemberConfig {
        MemberConfig {
            name: "pop2".into(),
            address: address.ip(),
            http_port: address.port(),
            agent_port: None,
            ftp_port: None,
            weight: 1.0,
        }
    }

    #[tokio::test]
    async fn the_health_get_names_the_configured_host() {
        let address = site_server("static.example.com").await;
        let member = member_at(address);
        let bare = member_sample(&member, None).await;
        assert!(!bare.healthy, "{bare:?}");
        assert!(bare.error.unwrap().contains("421"));
        let named = member_sample(&member, Some("static.example.com")).await;
        assert!(named.healthy, "{named:?}");
    }

    async fn member_sample(member: &MemberConfig, host: Option<&str>) -> Sample {
        let config = ProbeConfig {
            host: host.map(str::to_string),
            timeout: Duration::from_secs(2),
            interval: Duration::from_secs(3),
            ..ProbeConfig::default()
        };
        super::member(member, &config).await
    }
}
