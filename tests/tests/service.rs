//! The real `edge` binary as systemd runs it, without systemd (a container's PID 1 is not
//! systemd here): the test binds the notification socket itself and sets `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` and `WATCHDOG_PID` as systemd does for `Type=notify` with `WatchdogSec=`, and
//! reads what the daemon says (sd_notify(3)); logs as JSON (`--log-format json`).

use std::{
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use edge_tests::{
    edge::{EdgeProcess, START_TIMEOUT, binary},
    origin::Origin,
    topology::Topology,
};

const ORIGIN_PORT: u16 = 8080;

/// The notification socket, as the service manager holds it.
struct Manager(UnixDatagram);

impl Manager {
    /// The next message that contains `state`; earlier ones are returned with it.
    fn wait_for(&self, state: &str) -> Result<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut buffer = [0; 4096];
        while Instant::now() < deadline {
            let Ok(len) = self.0.recv(&mut buffer) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
            let found = message.lines().any(|line| line == state);
            seen.push(message);
            if found {
                return Ok(seen);
            }
        }
        bail!("no {state} within 10 s; got {seen:?}")
    }
}

#[test]
fn notifies_ready_reloading_watchdog_and_stopping_and_logs_json() -> Result<()> {
    let topology = Topology::client_and_pop("service")?;
    let _origin = Origin::start(
        &topology.client,
        SocketAddr::from((Topology::CLIENT_V4, ORIGIN_PORT)),
    )?;
    let text = format!(
        "[[pools]]\nname = \"origins\"\nkind = \"origin\"\n[[pools.members]]\nname = \"o1\"\n\
         address = \"{client}\"\nhttp_port = {ORIGIN_PORT}\n[http]\nlisten = \"{pop}:80\"\n\
         cache_dir = \"{cache}\"\ncache_capacity = \"1 MiB\"\n[[http.sites]]\n\
         host = \"static.example.com\"\npool = \"origins\"\n",
        client = Topology::CLIENT_V4,
        pop = Topology::POP_V4,
        cache = topology.work_dir().join("cache").display(),
    );
    let config = topology.write_file("edge.toml", &text)?;
    let socket_path = topology.work_dir().join("notify.sock");
    let manager = Manager(UnixDatagram::bind(&socket_path)?);
    manager
        .0
        .set_read_timeout(Some(Duration::from_millis(100)))?;
    // systemd names the main process in WATCHDOG_PID: the shell's pid, which `exec` hands on
    // to `ip netns exec` and that to edge.
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$@\"",
            "sh",
            "ip",
            "netns",
            "exec",
        ])
        .arg(&topology.pop.name)
        .arg(binary())
        .args(["--log-format", "json"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000");
    let mut edge = EdgeProcess::spawn(command, &config, &[], "daemon ready", START_TIMEOUT)?;
    let before_ready = manager.wait_for("READY=1")?;
    ensure!(
        before_ready.len() == 1,
        "READY=1 is the first message: {before_ready:?}"
    );
    // Pings every 100 ms: three within a few hundred milliseconds.
    let started = Instant::now();
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1")?;
    }
    ensure!(started.elapsed() < Duration::from_secs(2));

    let position = edge.signal(libc::SIGHUP)?;
    let reload = manager.wait_for("RELOADING=1")?;
    let reloading = reload.last().expect("the match");
    ensure!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 carries its timestamp: {reloading:?}"
    );
    manager.wait_for("READY=1")?;
    edge.wait_for_log(position, "reload applied", Duration::from_secs(10))?;

    let log = edge.log();
    for line in log.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .map_err(|error| anyhow::anyhow!("not JSON ({error}): {line}"))?;
        ensure!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
    ensure!(log.contains(r#""message":"daemon ready""#), "{log}");
    ensure!(edge.stop()?, "edge did not stop cleanly");
    manager.wait_for("STOPPING=1")?;
    Ok(())
}
