//! A Vagrant box for libvirt built from Debian's packages alone, for machines that cannot
//! download one: mmdebstrap installs Debian 12 (its 6.1 kernel, OpenSSH, sudo, rsync, and the
//! packages the tests run) onto an ext4 partition of a raw disk, extlinux makes it boot, and
//! qemu-img turns it into the qcow2 image of a box. Boxes are cached by name: the name carries a
//! hash of the recipe, so a changed package list or hook builds a new box and an unchanged one
//! is never rebuilt.

use std::{
    fs,
    io::{Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::poll;
use crate::{interrupt, setup, step, workspace_root};

/// What the box needs besides the tests' packages: a kernel, an init, and what Vagrant uses
/// (SSH, sudo, rsync for the synced folders, D-Bus for `hostnamectl`).
const SYSTEM_PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "procps",
    "openssh-server",
    "sudo",
    "rsync",
];

const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// The hook that makes the root filesystem a Vagrant box (user, key, network, fstab).
const CUSTOMIZE: &str = include_str!("../../../vagrant/local-box/customize.sh");

/// The virtual size of the disk; only what is written takes room.
const DISK_GIB: u64 = 16;

/// The box's name: `edge/bookworm-<hash of the recipe>`.
pub fn name() -> String {
    let recipe = [
        SYSTEM_PACKAGES.join(" "),
        setup::RUNTIME_PACKAGES.join(" "),
        MIRRORS.join("\n"),
        CUSTOMIZE.to_string(),
        DISK_GIB.to_string(),
    ]
    .join("\n");
    format!("edge/bookworm-{:016x}", fnv1a(recipe.as_bytes()))
}

/// Builds and adds the box unless Vagrant has it already.
pub fn ensure(name: &str, scratch: &Path) -> Result<()> {
    if super::has_box(name)? {
        eprintln!("  {name}: already added");
        return Ok(());
    }
    let dir = scratch.join("local-box");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    build(&dir)?;
    interrupt::exec(
        Command::new("vagrant")
            .args(["box", "add", "--name", name])
            .arg(dir.join("edge.box")),
    )?;
    fs::remove_dir_all(&dir)?;
    Ok(())
}

fn build(dir: &Path) -> Result<()> {
    let raw = dir.join("disk.raw");
    fs::File::create(&raw)?.set_len(DISK_GIB << 30)?;
    // One bootable partition from 1 MiB, the rest of the disk.
    run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--label", "dos"])
            .arg(&raw),
        "start=2048, type=83, bootable\n",
    )?;
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_string();
    {
        let disk = Loop::attach(&raw)?;
        let partition = disk.partition()?;
        interrupt::exec(
            Command::new("mkfs.ext4")
                .args(["-q", "-L", "edge-root", "-U", &uuid])
                .arg(&partition),
        )?;
        let mount = Mount::new(&partition, &dir.join("root"))?;
        step("mmdebstrap: Debian 12 with the tests' packages", || {
            install_root(&mount.path, &uuid)
        })?;
        boot_loader(&mount.path, &uuid)?;
        // Blocks apt's downloads used stay in the raw file unless they are discarded.
        interrupt::exec(Command::new("fstrim").arg(&mount.path))?;
    }
    // extlinux's master boot record, which boots the partition marked bootable.
    let mbr = fs::read("/usr/lib/syslinux/mbr/mbr.bin").context("syslinux's mbr.bin")?;
    let mut disk = fs::OpenOptions::new().write(true).open(&raw)?;
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&mbr[..440.min(mbr.len())])?;
    drop(disk);

    step("qemu-img convert: the box's qcow2 image", || {
        interrupt::exec(
            Command::new("qemu-img")
                .args(["convert", "-c", "-O", "qcow2"])
                .arg(&raw)
                .arg(dir.join("box.img")),
        )
    })?;
    fs::remove_file(&raw)?;
    fs::write(
        dir.join("metadata.json"),
        format!(r#"{{"provider":"libvirt","format":"qcow2","virtual_size":{DISK_GIB}}}"#),
    )?;
    interrupt::exec(
        Command::new("tar")
            .arg("-cf")
            .arg(dir.join("edge.box"))
            .arg("-C")
            .arg(dir)
            .args(["metadata.json", "box.img"]),
    )?;
    fs::remove_file(dir.join("box.img"))?;
    Ok(())
}

fn install_root(root: &Path, uuid: &str) -> Result<()> {
    let packages = [SYSTEM_PACKAGES, setup::RUNTIME_PACKAGES]
        .concat()
        .join(",");
    let hook = workspace_root().join("vagrant/local-box/customize.sh");
    interrupt::exec(
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--components=main"])
            .arg(format!("--include={packages}"))
            .arg(format!(
                "--customize-hook=sh {} \"$1\" {uuid}",
                super::quote(&hook.to_string_lossy())
            ))
            .arg("bookworm")
            .arg(root)
            .args(MIRRORS),
    )
}

/// extlinux in the partition's /boot, booting the installed kernel on the serial console (so
/// `virsh console` and libvirt's log show the boot).
fn boot_loader(root: &Path, uuid: &str) -> Result<()> {
    let kernel = fs::read_dir(root.join("boot"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .find_map(|name| name.strip_prefix("vmlinuz-").map(str::to_string))
        .context("no kernel in /boot")?;
    let dir = root.join("boot/extlinux");
    fs::create_dir_all(&dir)?;
    interrupt::exec(Command::new("extlinux").arg("--install").arg(&dir))?;
    fs::write(
        dir.join("extlinux.conf"),
        format!(
            "DEFAULT debian\nTIMEOUT 0\nPROMPT 0\nLABEL debian\n  \
             LINUX /boot/vmlinuz-{kernel}\n  INITRD /boot/initrd.img-{kernel}\n  \
             APPEND root=UUID={uuid} ro console=ttyS0 net.ifnames=0\n"
        ),
    )?;
    Ok(())
}

/// A loop device over the raw disk, with its partitions; detached on drop.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(file: &Path) -> Result<Self> {
        let out = Command::new("losetup")
            .args(["--find", "--partscan", "--show"])
            .arg(file)
            .output()?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(Loop {
            device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }

    /// The first partition's device. The kernel's partition scan does not always create the
    /// node (no udev here); partx asks again.
    fn partition(&self) -> Result<PathBuf> {
        let partition = PathBuf::from(format!("{}p1", self.device));
        let _ = Command::new("partx")
            .args(["--add", &self.device])
            .stderr(Stdio::null())
            .status();
        poll(Duration::from_secs(10), || partition.exists().then_some(()))
            .with_context(|| format!("{} did not appear", partition.display()))?;
        Ok(partition)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .args(["--detach", &self.device])
            .status();
    }
}

/// A mounted filesystem; unmounted on drop.
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn new(device: &Path, path: &Path) -> Result<Self> {
        fs::create_dir_all(path)?;
        crate::exec(Command::new("mount").arg(device).arg(path))?;
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // mmdebstrap unmounts what it mounted inside, even when it fails.
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn run_with_input(command: &mut Command, input: &str) -> Result<()> {
    let mut child = command.stdin(Stdio::piped()).spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases, for the box's name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
