//! The host side of `vm-test`: the Debian packages that run a VM and build a local box, and a
//! running libvirtd. Only `vm-test` installs these; `cargo xtask test` stays lean.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Result, bail};

use super::poll;
use crate::{exec, setup};

/// Vagrant with its libvirt provider, the daemon, and what its NAT network runs.
const VM_PACKAGES: &[&str] = &[
    "vagrant",
    "vagrant-libvirt",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "dnsmasq-base",
    "iptables",
    "rsync",
    "openssh-client",
    "qemu-utils",
];

/// QEMU itself: from the same release as the installed qemu-utils (see [`packages`]).
const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
];

/// What builds a local box: the root filesystem, the partition table, the boot loader, the
/// ext4 filesystem, and objcopy to strip the test binaries before they cross into the guest.
const BOX_BUILD_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "fdisk",
    "extlinux",
    "syslinux-common",
    "e2fsprogs",
    "binutils",
];

/// Installs what is missing. QEMU's packages must come from the release of the installed
/// qemu-utils: where that is bookworm-backports (as on our CI machines), bookworm's
/// qemu-system-x86 cannot be installed next to it, so backports are added for this one call.
pub fn packages(scratch: &Path) -> Result<()> {
    let backports = setup::installed_version("qemu-utils").is_some_and(|v| v.contains("~bpo12"));
    let mut packages: Vec<String> = [VM_PACKAGES, BOX_BUILD_PACKAGES]
        .concat()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut apt_options = Vec::new();
    if backports {
        std::fs::create_dir_all(scratch)?;
        let list = scratch.join("backports.list");
        let mut sources = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        sources.push_str("\ndeb http://deb.debian.org/debian bookworm-backports main\n");
        std::fs::write(&list, sources)?;
        apt_options.push(format!("-oDir::Etc::sourcelist={}", list.display()));
        packages.extend(
            QEMU_PACKAGES
                .iter()
                .map(|p| format!("{p}/bookworm-backports")),
        );
    } else {
        packages.extend(QEMU_PACKAGES.iter().map(|p| p.to_string()));
    }
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    setup::install_with(&packages, &apt_options)
}

/// libvirtd (and virtlogd, which it hands QEMU's output to), running. Daemons this started are
/// stopped on drop, so the machine is left as it was found.
pub struct Libvirt {
    started: Vec<u32>,
}

impl Libvirt {
    pub fn ensure() -> Result<Self> {
        let mut libvirt = Libvirt {
            started: Vec::new(),
        };
        if connects() {
            eprintln!("  libvirtd is running");
            return Ok(libvirt);
        }
        if Path::new("/run/systemd/system").exists() {
            exec(Command::new("systemctl").args(["start", "libvirtd.service"]))?;
        } else {
            // No systemd (a container, a microVM): the daemons fork themselves off and write
            // their pid files.
            for daemon in ["virtlogd", "libvirtd"] {
                let pidfile = format!("/run/{daemon}.pid");
                if let Some(pid) = read_pid(&pidfile)
                    && Path::new(&format!("/proc/{pid}")).exists()
                {
                    continue;
                }
                exec(Command::new(daemon).arg("-d"))?;
                let pid = poll(Duration::from_secs(10), || read_pid(&pidfile))
                    .ok_or_else(|| anyhow::anyhow!("{daemon} -d wrote no {pidfile}"))?;
                eprintln!("  started {daemon} (pid {pid})");
                libvirt.started.push(pid);
            }
        }
        if poll(Duration::from_secs(30), || connects().then_some(())).is_none() {
            bail!("libvirtd does not answer on qemu:///system");
        }
        Ok(libvirt)
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        for &pid in self.started.iter().rev() {
            eprintln!("xtask: stopping the libvirt daemon this run started (pid {pid})");
            // SAFETY: kill(2) on a pid this run started and recorded; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}

fn connects() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "uri"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn read_pid(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether this machine should run the VM without KVM: when /dev/kvm is missing, or when the
/// machine is itself a VM (the `hypervisor` CPU flag), where nested KVM often cannot boot a
/// kernel (ours: /dev/kvm exists, a stock kernel does not boot on it).
pub fn needs_tcg() -> bool {
    let nested = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == "hypervisor"))
    });
    nested || !Path::new("/dev/kvm").exists()
}
