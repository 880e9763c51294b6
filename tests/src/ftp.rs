//! A real FTP server (vsftpd) in a namespace, anonymous read-only: what a PoP host runs and the
//! steering FTP probe logs into.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{origin::connect, topology::Netns};

/// A running vsftpd; stopped on drop.
pub struct Vsftpd {
    child: Child,
}

impl Vsftpd {
    /// Serves an empty anonymous root from `dir` on `address` (IPv4) inside `netns`.
    pub fn start(netns: &Netns, address: SocketAddr, dir: &Path) -> Result<Self> {
        let root = dir.join("root");
        fs::create_dir_all(&root)?;
        let config = dir.join("vsftpd.conf");
        fs::write(
            &config,
            format!(
                "listen=YES\nlisten_ipv6=NO\nlisten_address={}\nlisten_port={}\n\
                 anonymous_enable=YES\nno_anon_password=YES\nlocal_enable=NO\nwrite_enable=NO\n\
                 anon_root={}\nftp_username=ftp\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
                 background=NO\nseccomp_sandbox=NO\nxferlog_enable=NO\n",
                address.ip(),
                address.port(),
                root.display()
            ),
        )?;
        fs::create_dir_all("/var/run/vsftpd/empty")?;
        let child = netns
            .command("vsftpd")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vsftpd (install it: cargo xtask setup)")?;
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(netns, address).is_err() {
            if Instant::now() > deadline {
                bail!("vsftpd did not listen on {address} within 10 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
