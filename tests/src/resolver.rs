//! The DNS around a CDN, as real servers in namespaces: a customer's own authoritative server
//! (Knot DNS) for the zone that hands its names to the CDN by CNAME, and the client's recursive
//! resolver (unbound) with stub zones for the customer's zone and the CDN's.

use std::{fs, net::Ipv4Addr, path::Path};

use anyhow::{Result, bail};

use crate::{bench::peers::Daemon, topology::Host};

/// Knot DNS on `host` serving `apex` from the zone file text `zone`; config, zone and log go to
/// `dir`.
pub fn start_knot(host: &Host, dir: &Path, apex: &str, zone: &str) -> Result<Daemon> {
    fs::create_dir_all(dir)?;
    let file = dir.join(format!("{apex}.zone"));
    fs::write(&file, zone)?;
    let config = dir.join("knot.conf");
    fs::write(
        &config,
        format!(
            "server:\n    rundir: {dir}\n    listen: {ip}@53\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: {dir}\n\
             log:\n  - target: stderr\n    any: notice\n\
             zone:\n  - domain: {apex}\n    file: {file}\n    journal-content: none\n",
            dir = dir.display(),
            ip = host.v4,
            file = file.display(),
        ),
    )?;
    let mut command = host.netns.command("knotd");
    command.arg("-c").arg(&config);
    Daemon::spawn("knotd", command, &dir.join("knot.log"))
}

/// unbound on `host`: recursion for 198.18.0.0/24, a stub zone per entry of `stubs` (zone,
/// its authoritative servers), no DNSSEC validation (the zones are unsigned and have no trust
/// anchor). Config and log go to `dir`; the config is checked with unbound-checkconf first.
pub fn start_unbound(host: &Host, dir: &Path, stubs: &[(&str, Vec<Ipv4Addr>)]) -> Result<Daemon> {
    fs::create_dir_all(dir)?;
    let mut text = format!(
        "server:\n    interface: {ip}\n    port: 53\n    access-control: 198.18.0.0/24 allow\n    \
         username: \"\"\n    chroot: \"\"\n    directory: \"{dir}\"\n    pidfile: \"{dir}/unbound.pid\"\n    \
         do-daemonize: no\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    \
         num-threads: 1\n    do-ip6: no\n    module-config: \"iterator\"\n\
         remote-control:\n    control-enable: no\n",
        ip = host.v4,
        dir = dir.display(),
    );
    for (zone, servers) in stubs {
        text += &format!("stub-zone:\n    name: \"{zone}\"\n");
        for server in servers {
            text += &format!("    stub-addr: {server}\n");
        }
    }
    let config = dir.join("unbound.conf");
    fs::write(&config, text)?;
    let check = host
        .netns
        .command("unbound-checkconf")
        .arg(&config)
        .output()?;
    if !check.status.success() {
        bail!(
            "unbound-checkconf: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut command = host.netns.command("unbound");
    command.arg("-d").arg("-c").arg(&config);
    Daemon::spawn("unbound", command, &dir.join("unbound.log"))
}
