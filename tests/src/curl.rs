//! curl, run inside a namespace, and the parts of its answer the tests read.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::{edge::scaled, topology::Netns};

/// One HTTP response as curl received it.
#[derive(Debug)]
pub struct Reply {
    /// The status line's protocol: `HTTP/1.1`, `HTTP/2`.
    pub version: String,
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The edge's `x-cache` status (hit, miss, stale, revalidated, pass).
    pub fn cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }

    pub fn age(&self) -> Option<u64> {
        self.header("age")?.parse().ok()
    }
}

/// How long one curl may take, times the slowdown (`EDGE_TEST_SLOWDOWN`): under `cargo xtask
/// vm-test`'s emulated CPU an 8 MiB miss over TLS took longer than 30 s.
const MAX_TIME: Duration = Duration::from_secs(30);

/// `curl -si <args…>` in `netns`: one request, its response parsed.
pub fn curl(netns: &Netns, args: &[&str]) -> Result<Reply> {
    let max_time = scaled(MAX_TIME).as_secs().to_string();
    let output = netns
        .command("curl")
        .args(["-s", "-i", "--max-time", &max_time])
        .args(args)
        .output()
        .context("running curl")?;
    if !output.status.success() {
        bail!(
            "curl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&output.stdout).with_context(|| {
        format!(
            "curl {args:?}: unparsable answer: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split_whitespace();
    let version = status_line.next()?.to_string();
    let status = status_line.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    Some(Reply {
        version,
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}
