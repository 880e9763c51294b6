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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_is_not_ftp_fails() {
        // Refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        assert!(login(address, Duration::from_millis(200)).await.is_err());
        // Accepts but never sends a banner.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = login(silent.local_addr().unwrap(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no session within"), "{error:#}");
    }
}
