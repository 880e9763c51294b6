//! Hosts as network namespaces joined by veth pairs. One helper owns setup and teardown for every
//! test: names are unique per test, leftovers of a crashed earlier run are cleared first, and
//! everything is removed on drop, panics included.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    programs::{Xdp, XdpMode, links::FdLink},
};
use edge_common::{map_name, program_name};

/// Where every test's pins live: `<root>/<topology name>/`.
const PIN_PARENT: &str = "/sys/fs/bpf";

/// A network namespace, entered with `nsenter --net` so that the caller's mounts (bpffs above
/// all) stay visible; `ip netns exec` would remount /sys and hide /sys/fs/bpf.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// A command that runs `program` inside this namespace as an operator would, with
    /// `ip netns exec`: it remounts /sys, so /sys/fs/bpf is not mounted there.
    pub fn exec_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program args…` inside this namespace and returns its output, failing if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !output.status.success() {
            bail!(
                "{program} {args:?} in {} failed: {}{}",
                self.name,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// The MAC address of `interface` in this namespace.
    pub fn mac(&self, interface: &str) -> Result<String> {
        // Not /sys/class/net: under nsenter, /sys still shows the caller's namespace.
        let link = self.run("ip", &["-o", "link", "show", "dev", interface])?;
        let link = String::from_utf8_lossy(&link.stdout);
        let from_ip = link
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC address for {interface} in {}", self.name))?;
        Ok(from_ip)
    }

    /// The MAC address of `interface` as bytes, for frames built by hand.
    pub fn mac_octets(&self, interface: &str) -> Result<[u8; 6]> {
        let text = self.mac(interface)?;
        let bytes: Vec<u8> = text
            .split(':')
            .map(|part| u8::from_str_radix(part, 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("MAC address {text}"))?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("MAC address {text}"))
    }

    /// `ip …` inside this namespace.
    fn ip(&self, args: &[&str]) -> Result<()> {
        ip(&[&["-n", &self.name], args].concat())
    }

    /// Writes `value` to `/sys/class/net/<interface>/<attribute>` of this namespace. Through
    /// `ip netns exec`, whose private /sys shows this namespace's devices.
    pub fn set_device_attribute(
        &self,
        interface: &str,
        attribute: &str,
        value: &str,
    ) -> Result<()> {
        let path = format!("/sys/class/net/{interface}/{attribute}");
        ip(&[
            "netns",
            "exec",
            &self.name,
            "sh",
            "-c",
            &format!("echo {value} > {path}"),
        ])
        .with_context(|| format!("setting {path} to {value} in {}", self.name))
    }

    /// Moves the calling thread into this namespace: sockets it opens and interfaces it names
    /// are then this namespace's. Meant for a thread of its own.
    pub fn enter_on_this_thread(&self) -> Result<()> {
        let file = fs::File::open(self.path())
            .with_context(|| format!("opening namespace {}", self.name))?;
        // SAFETY: setns on the calling thread only, with a valid namespace fd.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a short-lived thread inside this namespace.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<T> {
                    self.enter_on_this_thread()?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }

    /// Attaches `program` (a name from [`program_name`]) of edge's XDP object to `interface` in
    /// driver mode. The program stays attached until the returned link is dropped.
    pub fn attach_xdp(&self, interface: &str, program: &str) -> Result<FdLink> {
        // Attaching by interface name resolves it in the caller's namespace.
        self.run_inside(|| -> Result<FdLink> {
            let mut ebpf = EbpfLoader::new()
                .map_max_entries(map_name::NAMES, 1)
                .load(edge_dataplane::EBPF_OBJECT)?;
            let xdp: &mut Xdp = ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the object"))?
                .try_into()?;
            xdp.load()?;
            let id = xdp.attach(interface, XdpMode::Driver)?;
            Ok(FdLink::try_from(xdp.take_link(id)?)?)
        })?
        .with_context(|| format!("attaching {program} to {interface} in {}", self.name))
    }

    /// Detaches whatever XDP program another tool attached to `interface` through netlink and
    /// left behind (Knot DNS's XDP mode does).
    pub fn detach_xdp(&self, interface: &str) -> Result<()> {
        self.ip(&["link", "set", "dev", interface, "xdp", "off"])
    }
}

/// What the client end of the veth pair runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientXdp {
    /// The XDP_PASS program, so that the PoP's XDP_TX replies arrive: what tests want.
    Pass,
    /// Nothing: for a benchmark that attaches its own program there (the reply sink).
    None,
}

/// A client and a PoP, each in its own namespace, joined by one veth pair whose ends are both
/// called `eth0`. The client end runs an XDP_PASS program so that the PoP's XDP_TX replies arrive,
/// unless built with [`ClientXdp::None`].
pub struct Topology {
    pub name: String,
    pub client: Netns,
    pub pop: Netns,
    pin_root: PathBuf,
    work_dir: PathBuf,
}

impl Topology {
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const POP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    pub const POP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    /// The interface name on both hosts.
    pub const INTERFACE: &str = "eth0";

    /// Builds the two hosts for the test called `test` (unique per test binary), the XDP_PASS
    /// program on the client end. Names carry the process id, so that two test runs at once (two
    /// checkouts, say) never share a namespace; what a dead run left behind is removed first.
    pub fn client_and_pop(test: &str) -> Result<Self> {
        Self::client_and_pop_with(test, ClientXdp::Pass)
    }

    /// As [`Self::client_and_pop`], with `client_xdp` on the client end.
    pub fn client_and_pop_with(test: &str, client_xdp: ClientXdp) -> Result<Self> {
        remove_leftovers();
        let name = format!("edge-{test}-{}", std::process::id());
        let topology = Self {
            client: Netns {
                name: format!("{name}-client"),
            },
            pop: Netns {
                name: format!("{name}-pop"),
            },
            pin_root: Path::new(PIN_PARENT).join(&name),
            work_dir: std::env::temp_dir().join(&name),
            name,
        };
        topology.teardown();
        topology.build(client_xdp)?;
        Ok(topology)
    }

    /// The pin root the PoP's `edge` should use: private to this topology.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// A scratch directory for configs and logs, removed with the topology.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Writes `contents` to `name` in the work directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.work_dir.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Attaches the XDP_PASS program to the client end of a topology built with
    /// [`ClientXdp::None`], until the returned link is dropped.
    pub fn attach_client_pass(&self) -> Result<FdLink> {
        self.client.attach_xdp(Self::INTERFACE, program_name::PASS)
    }

    fn build(&self, client_xdp: ClientXdp) -> Result<()> {
        fs::create_dir_all(&self.work_dir)?;
        for netns in [&self.client, &self.pop] {
            ip(&["netns", "add", &netns.name])?;
            netns.ip(&["link", "set", "lo", "up"])?;
        }
        // Created from inside the client's namespace: kernels before 6.15 (ec061546c6cf) look the
        // new name up in the asking namespace, so asking from one with an eth0 fails (EEXIST).
        self.client.ip(&[
            "link",
            "add",
            "name",
            Self::INTERFACE,
            "type",
            "veth",
            "peer",
            "name",
            Self::INTERFACE,
            "netns",
            &self.pop.name,
        ])?;
        for (netns, v4, v6) in [
            (&self.client, Self::CLIENT_V4, Self::CLIENT_V6),
            (&self.pop, Self::POP_V4, Self::POP_V6),
        ] {
            netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", Self::INTERFACE])?;
            netns.ip(&[
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                Self::INTERFACE,
                "nodad",
            ])?;
            netns.ip(&["link", "set", Self::INTERFACE, "up"])?;
        }
        // Static neighbours: no ARP or NDP racing the first query (IPv6 neighbour discovery right
        // after link-up sometimes takes longer than a client's timeout).
        for (netns, peer, v4, v6) in [
            (&self.client, &self.pop, Self::POP_V4, Self::POP_V6),
            (&self.pop, &self.client, Self::CLIENT_V4, Self::CLIENT_V6),
        ] {
            let mac = peer.mac(Self::INTERFACE)?;
            for address in [v4.to_string(), v6.to_string()] {
                netns.ip(&[
                    "neigh",
                    "replace",
                    &address,
                    "lladdr",
                    &mac,
                    "dev",
                    Self::INTERFACE,
                    "nud",
                    "permanent",
                ])?;
            }
        }
        fs::create_dir_all(&self.pin_root)
            .with_context(|| format!("creating {}", self.pin_root.display()))?;
        if client_xdp == ClientXdp::Pass {
            let pin = self.pin_root.join("client-pass");
            self.attach_client_pass()?.pin(&pin)?;
        }
        Ok(())
    }

    /// Removes whatever this topology (or a crashed run of the same test) left behind.
    fn teardown(&self) {
        for netns in [&self.client, &self.pop] {
            if netns.path().exists() {
                // Deleting the namespace deletes its veth end and detaches its XDP programs.
                let _ = ip(&["netns", "del", &netns.name]);
            }
        }
        remove_pins(&self.pin_root);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// One host of a [`Lan`]: its namespace and addresses on the shared segment.
#[derive(Debug, Clone)]
pub struct Host {
    pub role: String,
    pub netns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// Hosts on one Ethernet segment: a bridge in a namespace of its own, one veth pair per host
/// (`eth0` in the host, `hN` on the bridge), host N (from 1, in the order given) at 198.18.0.N/24
/// and 2001:db8::N/64, static neighbours everywhere, and an XDP_PASS program on every bridge-side
/// end so that a host's XDP_TX replies are received.
pub struct Lan {
    pub name: String,
    pub hosts: Vec<Host>,
    bridge: Netns,
    pin_root: PathBuf,
    work_dir: PathBuf,
}

impl Lan {
    /// Builds the hosts `roles` for the test called `test` (unique per test binary).
    pub fn new(test: &str, roles: &[&str]) -> Result<Self> {
        assert!(roles.len() < 250, "one /24");
        remove_leftovers();
        let name = format!("edge-{test}-{}", std::process::id());
        let hosts = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let n = i as u8 + 1;
                Host {
                    role: role.to_string(),
                    netns: Netns {
                        name: format!("{name}-{role}"),
                    },
                    v4: Ipv4Addr::new(198, 18, 0, n),
                    v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)),
                }
            })
            .collect();
        let lan = Self {
            bridge: Netns {
                name: format!("{name}-bridge"),
            },
            hosts,
            pin_root: Path::new(PIN_PARENT).join(&name),
            work_dir: std::env::temp_dir().join(&name),
            name,
        };
        lan.teardown();
        lan.build()?;
        Ok(lan)
    }

    /// The host called `role`.
    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.role == role)
            .unwrap_or_else(|| panic!("no host {role} in {}", self.name))
    }

    /// The pin root a host's `edge` should use: private to this LAN.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// A scratch directory for configs and logs, removed with the LAN.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Writes `contents` to `name` in the work directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.work_dir.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn build(&self) -> Result<()> {
        fs::create_dir_all(&self.work_dir)?;
        fs::create_dir_all(&self.pin_root)
            .with_context(|| format!("creating {}", self.pin_root.display()))?;
        ip(&["netns", "add", &self.bridge.name])?;
        self.bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.bridge.ip(&["link", "set", "br0", "up"])?;
        for (i, host) in self.hosts.iter().enumerate() {
            let port = format!("h{}", i + 1);
            ip(&["netns", "add", &host.netns.name])?;
            host.netns.ip(&["link", "set", "lo", "up"])?;
            // From inside the host's namespace, as in `Topology::build`.
            host.netns.ip(&[
                "link",
                "add",
                "name",
                Topology::INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &self.bridge.name,
            ])?;
            self.bridge.ip(&["link", "set", &port, "master", "br0"])?;
            self.bridge.ip(&["link", "set", &port, "up"])?;
            host.netns.ip(&[
                "addr",
                "add",
                &format!("{}/24", host.v4),
                "dev",
                Topology::INTERFACE,
            ])?;
            host.netns.ip(&[
                "addr",
                "add",
                &format!("{}/64", host.v6),
                "dev",
                Topology::INTERFACE,
                "nodad",
            ])?;
            host.netns.ip(&["link", "set", Topology::INTERFACE, "up"])?;
            self.bridge
                .attach_xdp(&port, program_name::PASS)?
                .pin(self.pin_root.join(format!("pass-{port}")))?;
        }
        let macs: Vec<String> = self
            .hosts
            .iter()
            .map(|host| host.netns.mac(Topology::INTERFACE))
            .collect::<Result<_>>()?;
        for host in &self.hosts {
            for (peer, mac) in self.hosts.iter().zip(&macs) {
                if peer.role == host.role {
                    continue;
                }
                for address in [peer.v4.to_string(), peer.v6.to_string()] {
                    host.netns.ip(&[
                        "neigh",
                        "replace",
                        &address,
                        "lladdr",
                        mac,
                        "dev",
                        Topology::INTERFACE,
                        "nud",
                        "permanent",
                    ])?;
                }
            }
        }
        Ok(())
    }

    fn teardown(&self) {
        for netns in self
            .hosts
            .iter()
            .map(|host| &host.netns)
            .chain([&self.bridge])
        {
            if netns.path().exists() {
                let _ = ip(&["netns", "del", &netns.name]);
            }
        }
        remove_pins(&self.pin_root);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes namespaces, pins and work directories of test runs whose process is gone.
fn remove_leftovers() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("edge-") else {
            return false;
        };
        // `edge-<test>-<pid>` (pins, work directories) or `edge-<test>-<pid>-<role>` (hosts).
        let mut parts = rest.rsplit('-');
        let last = parts.next().map(str::parse::<u32>);
        let pid = match last {
            Some(Ok(pid)) => Some(pid),
            _ => parts.next().and_then(|part| part.parse::<u32>().ok()),
        };
        pid.is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
    };
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| dead(name))
                    .collect()
            })
            .unwrap_or_default()
    };
    for netns in names(Path::new("/run/netns")) {
        let _ = ip(&["netns", "del", &netns]);
    }
    for pins in names(Path::new(PIN_PARENT)) {
        remove_pins(&Path::new(PIN_PARENT).join(pins));
    }
    for dir in names(&std::env::temp_dir()) {
        let _ = fs::remove_dir_all(std::env::temp_dir().join(dir));
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2: cargo xtask setup)")?;
    if !output.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Removes a pin directory tree (bpffs allows unlink and rmdir, not recursive removal at once).
pub fn remove_pins(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_pins(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
    let _ = fs::remove_dir(dir);
}
