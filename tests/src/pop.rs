//! A PoP for the HTTP tests: the real `edge` binary with `[http]` in its namespace, a client
//! namespace with curl, and a counting origin (tests/src/origin.rs) there; sites for the
//! origin, a black hole (connect timeouts) and a refusing port.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Result, ensure};

use crate::{
    curl::{Reply, curl},
    edge::{EdgeProcess, binary, slowdown},
    origin::Origin,
    topology::Topology,
};

pub const ORIGIN_PORT: u16 = 8080;
/// A listener whose accept queue is full, so connections to it hang: connect timeouts.
pub const BLACKHOLE_PORT: u16 = 8081;
/// Nothing listens: connections are refused.
pub const REFUSING_PORT: u16 = 8082;
/// The PoP's `origin_read_timeout`, times [`slowdown`]: where the CPU is emulated (`cargo
/// xtask vm-test`), the test origin took longer than 2 s to start a 3 MB body, and the PoP
/// answered 504. A test that outwaits it scales its delay likewise.
pub const ORIGIN_READ_TIMEOUT_SECS: u32 = 2;
/// The PoP's `origin_connect_timeout`, times [`slowdown`].
const ORIGIN_CONNECT_TIMEOUT_SECS: u32 = 1;

/// A client, a PoP running `edge` with `[http]`, and an origin.
pub struct Pop {
    pub topology: Topology,
    pub origin: Origin,
    pub config: PathBuf,
    pub edge: Option<EdgeProcess>,
}

impl Pop {
    /// `http` is added to the `[http]` table (it may set cache_capacity and client_timeout,
    /// else 64 MiB and 2 s).
    pub fn start(test: &str, http: &str) -> Result<Self> {
        let topology = Topology::client_and_pop(test)?;
        let origin = Origin::start(
            &topology.client,
            SocketAddr::from((Topology::CLIENT_V4, ORIGIN_PORT)),
        )?;
        let capacity = if http.contains("cache_capacity") {
            String::new()
        } else {
            "cache_capacity = \"64 MiB\"\n".into()
        };
        let client_timeout = if http.contains("client_timeout") {
            String::new()
        } else {
            "client_timeout = \"2s\"\n".into()
        };
        let slowdown = slowdown()?;
        let text = format!(
            r#"
[xdp]
interface = "{interface}"
pin_root = "{pin_root}"

[[pools]]
name = "origins"
kind = "origin"
[[pools.members]]
name = "o1"
address = "{client}"
http_port = {ORIGIN_PORT}

[[pools]]
name = "blackhole"
kind = "origin"
[[pools.members]]
name = "b1"
address = "{client}"
http_port = {BLACKHOLE_PORT}

[[pools]]
name = "refusing"
kind = "origin"
[[pools.members]]
name = "r1"
address = "{client}"
http_port = {REFUSING_PORT}

[http]
listen = "{pop}:80"
cache_dir = "{cache_dir}"
origin_connect_timeout = "{connect_timeout}s"
origin_read_timeout = "{read_timeout}s"
{client_timeout}{capacity}{http}

[[http.sites]]
host = "static.example.com"
pool = "origins"

[[http.sites]]
host = "www.example.com"
pool = "origins"
static_paths = ["/assets/", "*.css"]

[[http.sites]]
host = "blackhole.example.com"
pool = "blackhole"

[[http.sites]]
host = "refusing.example.com"
pool = "refusing"
"#,
            interface = Topology::INTERFACE,
            pin_root = topology.pin_root().display(),
            client = Topology::CLIENT_V4,
            pop = Topology::POP_V4,
            cache_dir = topology.work_dir().join("cache").display(),
            connect_timeout = ORIGIN_CONNECT_TIMEOUT_SECS * slowdown,
            read_timeout = ORIGIN_READ_TIMEOUT_SECS * slowdown,
        );
        let config = topology.write_file("edge.toml", &text)?;
        let edge = EdgeProcess::start(&topology.pop, &config, &[])?;
        Ok(Self {
            topology,
            origin,
            config,
            edge: Some(edge),
        })
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.topology.work_dir().join("cache")
    }

    /// curl for `path` on `host`, with extra curl arguments.
    pub fn request(&self, host: &str, path: &str, args: &[&str]) -> Result<Reply> {
        let resolve = format!("{host}:80:{}", Topology::POP_V4);
        let url = format!("http://{host}{path}");
        let mut all = vec!["--resolve", &resolve];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&self.topology.client, &all)
    }

    pub fn get(&self, path: &str) -> Result<Reply> {
        self.request("static.example.com", path, &[])
    }

    /// The cache's counters, from the admin server's `GET /stats` (inside the PoP namespace).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let reply = curl(&self.topology.pop, &["http://127.0.0.1:9081/stats"])?;
        ensure!(reply.status == 200, "stats: {}", reply.status);
        Ok(serde_json::from_slice(&reply.body)?)
    }

    pub fn restart(&mut self) -> Result<()> {
        if let Some(edge) = self.edge.take() {
            ensure!(edge.stop()?, "edge did not stop cleanly");
        }
        self.edge = Some(EdgeProcess::start(&self.topology.pop, &self.config, &[])?);
        Ok(())
    }

    pub fn kill(&mut self) -> Result<()> {
        if let Some(edge) = self.edge.take() {
            edge.kill()?;
        }
        Ok(())
    }

    pub fn purge(&self, url: &str) -> Result<String> {
        let output = self
            .topology
            .pop
            .command(binary())
            .args(["purge", "--config"])
            .arg(&self.config)
            .arg(url)
            .output()?;
        ensure!(
            output.status.success(),
            "edge purge: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }
}
