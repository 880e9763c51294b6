//! The servers edge is measured against, run in the PoP namespace from configs written here:
//! Knot DNS (sockets, or its XDP mode), NSD and gdnsd. Each serves the zone file of
//! [`super::zone::BenchZone`] with one worker, pinned to the server CPU.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::zone::APEX;
use crate::topology::Netns;

/// A daemon holding millions of names takes a while to stop on a loaded machine; one killed
/// instead may leave its pinned XDP program answering.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A server process started by the benchmark, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `command` with its output going to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Self> {
        let log_file = fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name} (cargo xtask setup installs it)"))?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id (nsenter and taskset exec what they run: the server's own).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log if the process has exited, or if the benchmark was interrupted
    /// ([`crate::interrupt`]): every wait on a server polls this.
    pub fn check_running(&mut self) -> Result<()> {
        crate::interrupt::check()?;
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log());
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("{} ignored SIGTERM for {STOP_TIMEOUT:?}", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("{error:#}");
        }
    }
}

/// Where a peer serves, and the files it keeps.
#[derive(Debug, Clone)]
pub struct PeerSetup<'a> {
    pub netns: &'a Netns,
    /// Config, run state and log go here.
    pub dir: &'a Path,
    pub zone_file: &'a Path,
    pub listen: Ipv4Addr,
    /// The CPU the server process is pinned to.
    pub cpu: usize,
}

/// `knot.conf`: one UDP worker on `listen`; with `xdp_interface`, Knot's XDP mode on that
/// interface (one XDP worker per queue; a veth has one).
pub fn knot_config(setup: &PeerSetup, xdp_interface: Option<&str>) -> String {
    let dir = setup.dir.display();
    let xdp = xdp_interface
        .map(|interface| format!("xdp:\n    listen: {interface}\n"))
        .unwrap_or_default();
    format!(
        "server:
    rundir: {dir}
    listen: {listen}@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
{xdp}database:
    storage: {dir}
log:
  - target: stderr
    any: notice
zone:
  - domain: {APEX}
    file: {zone}
    journal-content: none
",
        listen = setup.listen,
        zone = setup.zone_file.display(),
    )
}

/// Starts Knot DNS; `xdp_interface` as in [`knot_config`].
pub fn start_knot(setup: &PeerSetup, xdp_interface: Option<&str>) -> Result<Daemon> {
    let config = setup.dir.join("knot.conf");
    fs::create_dir_all(setup.dir)?;
    fs::write(&config, knot_config(setup, xdp_interface))?;
    let mut command = setup.netns.command("taskset");
    command
        .args(["-c", &setup.cpu.to_string(), "knotd", "-c"])
        .arg(&config);
    Daemon::spawn("knotd", command, &setup.dir.join("knot.log"))
}

/// `nsd.conf`: one server process on `listen`, every path inside `dir`, minimal responses
/// (as Knot and edge send).
pub fn nsd_config(setup: &PeerSetup) -> String {
    let dir = setup.dir.display();
    format!(
        "server:
    ip-address: {listen}
    port: 53
    server-count: 1
    username: \"\"
    chroot: \"\"
    database: \"\"
    zonelistfile: \"{dir}/zone.list\"
    xfrdfile: \"{dir}/xfrd.state\"
    pidfile: \"{dir}/nsd.pid\"
    logfile: \"{dir}/nsd.log\"
    minimal-responses: yes
remote-control:
    control-enable: no
zone:
    name: {APEX}
    zonefile: \"{zone}\"
",
        listen = setup.listen,
        zone = setup.zone_file.display(),
    )
}

/// Starts NSD in the foreground.
pub fn start_nsd(setup: &PeerSetup) -> Result<Daemon> {
    let config = setup.dir.join("nsd.conf");
    fs::create_dir_all(setup.dir)?;
    fs::write(&config, nsd_config(setup))?;
    let mut command = setup.netns.command("taskset");
    command
        .args(["-c", &setup.cpu.to_string(), "nsd", "-d", "-c"])
        .arg(&config);
    Daemon::spawn("nsd", command, &setup.dir.join("nsd.out"))
}

/// gdnsd's `config`: one UDP and one TCP thread on `listen`, run and state directories inside
/// `dir` (the zone file is linked into `dir/zones`).
pub fn gdnsd_config(setup: &PeerSetup) -> String {
    let dir = setup.dir.display();
    format!(
        "options => {{
  listen => [ {listen} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => {dir}/run
  state_dir => {dir}/state
}}
",
        listen = setup.listen,
    )
}

/// Starts gdnsd in the foreground (`gdnsd -c DIR start`).
pub fn start_gdnsd(setup: &PeerSetup) -> Result<Daemon> {
    let zones = setup.dir.join("zones");
    fs::create_dir_all(&zones)?;
    fs::create_dir_all(setup.dir.join("run"))?;
    fs::create_dir_all(setup.dir.join("state"))?;
    let zone = zones.join(APEX);
    let _ = fs::remove_file(&zone);
    std::os::unix::fs::symlink(setup.zone_file, &zone)?;
    fs::write(setup.dir.join("config"), gdnsd_config(setup))?;
    let mut command = setup.netns.command("taskset");
    command
        .args(["-c", &setup.cpu.to_string(), "gdnsd", "-c"])
        .arg(setup.dir)
        .arg("start");
    Daemon::spawn("gdnsd", command, &setup.dir.join("gdnsd.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `contents` to `name` in a fresh directory and runs `checker`, its `{}` argument
    /// replaced by the file's path.
    fn check(name: &str, contents: impl Fn(&PeerSetup) -> String, checker: &[&str]) {
        let dir = std::env::temp_dir().join(format!("edge-bench-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let netns = Netns {
            name: "unused".into(),
        };
        let zone_file = dir.join("bench.example.zone");
        fs::write(&zone_file, "").unwrap();
        let setup = PeerSetup {
            netns: &netns,
            dir: &dir,
            zone_file: &zone_file,
            listen: Ipv4Addr::new(198, 18, 0, 2),
            cpu: 1,
        };
        let path = dir.join(name);
        fs::write(&path, contents(&setup)).unwrap();
        let output = Command::new(checker[0])
            .args(checker[1..].iter().map(|arg| match *arg {
                "{}" => path.as_os_str(),
                arg => arg.as_ref(),
            }))
            .output()
            .unwrap_or_else(|error| panic!("{} (cargo xtask setup): {error}", checker[0]));
        let _ = fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn knot_accepts_its_socket_config() {
        check(
            "knot.conf",
            |setup| knot_config(setup, None),
            &["knotc", "-c", "{}", "conf-check"],
        );
    }

    #[test]
    fn knot_accepts_its_xdp_config() {
        check(
            "knot-xdp.conf",
            |setup| {
                let text = knot_config(setup, Some("eth0"));
                assert!(text.contains("xdp:\n    listen: eth0\n"));
                text
            },
            &["knotc", "-c", "{}", "conf-check"],
        );
    }

    #[test]
    fn gdnsd_accepts_its_config() {
        let dir = std::env::temp_dir().join(format!("edge-bench-gdnsd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let zone_file = dir.join("bench.example.zone");
        fs::write(
            &zone_file,
            super::super::zone::BenchZone::new(10).zone_file(Ipv4Addr::new(198, 18, 0, 2)),
        )
        .unwrap();
        let netns = Netns {
            name: "unused".into(),
        };
        let setup = PeerSetup {
            netns: &netns,
            dir: &dir.join("gdnsd"),
            zone_file: &zone_file,
            listen: Ipv4Addr::new(198, 18, 0, 2),
            cpu: 1,
        };
        fs::create_dir_all(setup.dir.join("zones")).unwrap();
        std::os::unix::fs::symlink(&zone_file, setup.dir.join("zones").join(APEX)).unwrap();
        fs::write(setup.dir.join("config"), gdnsd_config(&setup)).unwrap();
        let output = Command::new("gdnsd")
            .arg("-c")
            .arg(setup.dir)
            .arg("checkconf")
            .output()
            .expect("gdnsd (cargo xtask setup)");
        let _ = fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn nsd_accepts_its_config() {
        check("nsd.conf", nsd_config, &["nsd-checkconf", "{}"]);
    }
}
