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
    let response = http::get(address, crate::agent::LOAD_PATH, timeout).await?;
    anyhow::ensure!(response.status.is_success(), "status {}", response.status);
    Ok(serde_json::from_slice(&response.body)?)
}
