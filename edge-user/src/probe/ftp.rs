//! The FTP response time of a PoP: connect, read the banner, log in anonymously and quit
//! (RFC 959 §5.4), with suppaftp.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use suppaftp::tokio::AsyncFtpStream;

/// Times one anonymous session with the server at `address`, bounded by `timeout`.
pub async fn login(address: SocketAddr, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    tokio::time::timeout(timeout, async {
        // `connect` reads the 220 banner.
        let mut ftp = AsyncFtpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        ftp.login("anonymous", "edge@")
            .await
            .context("anonymous login")?;
        ftp.quit().await.context("quit")?;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no session within {timeout:?}"))??;
    Ok(start.elapsed())
}
