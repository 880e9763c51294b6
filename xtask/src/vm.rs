//! `cargo xtask vm-test`: the test suite on Debian 12's kernel (6.1) in a Vagrant VM (libvirt),
//! the old end of the kernel matrix whose new end is `cargo xtask test` on the host.
//!
//! The tests are built on the host and only run in the guest: compiling in an emulated CPU
//! (TCG, where KVM cannot be used) would take hours. The guest gets the Debian packages the tests
//! run, the repository (the tests read its examples) and the binaries; the VM is destroyed at
//! the end, also on failure, Ctrl-C or SIGTERM.

mod host;
mod local_box;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::Message;
use clap::ValueEnum;

use crate::{Tally, interrupt, setup, step, workspace_root};

/// Open files each test executable may hold in the guest.
const GUEST_OPEN_FILES: u32 = 65_536;
/// The box where one can be downloaded.
const PUBLIC_BOX: &str = "debian/bookworm64";
/// Where the synced folder puts the test binaries in the guest.
const GUEST_BINARIES: &str = "/edge-bin";
/// Where the Vagrantfile syncs the repository in the guest.
const GUEST_REPOSITORY: &str = "/edge";
/// How long one test binary may run in the guest.
const TEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// A piece of the tests' work, timed on the host and in the guest to tell how much slower the
/// guest runs: process starts (the tests start kdig, curl and the daemon's CLI by the hundred)
/// and a CPU-bound hash (the daemon's own work). Timed inside the shell, so ssh's start-up is
/// not counted.
const REFERENCE_WORK: &str = "s=$(date +%s%N); for i in $(seq 200); do /bin/true; done; \
head -c 33554432 /dev/zero | sha256sum >/dev/null; echo $(( $(date +%s%N) - s ))";
/// The guest's slowdown is measured this many times on each side; the fastest run counts.
const REFERENCE_RUNS: usize = 3;
/// The least slowdown given to a guest on an emulated CPU: its timers and interrupts lag
/// more than its hashing does (at 6, every test of runs 5 and 6 passed its start-up waits).
const TCG_MIN_SLOWDOWN: u32 = 6;

#[derive(Clone, Copy, ValueEnum)]
pub enum BoxSource {
    /// debian/bookworm64 if Vagrant can get it, else a local box.
    Auto,
    /// debian/bookworm64 from Vagrant Cloud.
    Public,
    /// A box built here from Debian's packages (cached).
    Local,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Accel {
    /// TCG when /dev/kvm is missing or this machine is itself a VM, else KVM.
    Auto,
    Kvm,
    /// QEMU's emulated CPU: slow, but boots anywhere.
    Tcg,
}

/// What the run found: the guest's kernel and the tests' tally.
pub struct Outcome {
    pub kernel: String,
    pub tally: Tally,
    /// Test binaries that ended without a libtest summary (a crash, the timeout).
    pub broken: Vec<String>,
}

/// Runs the test executables of the targets in `only` (cargo's names: `mesh`, `edge_steer`),
/// or every one if it is empty.
pub fn run(source: BoxSource, accel: Accel, only: &[String]) -> Result<Outcome> {
    interrupt::catch();
    check_targets(only)?;
    let scratch = target_dir().join("vm-test");
    setup::run()?;
    step("vm-test: host packages for the VM", || {
        host::packages(&scratch)
    })?;
    let mut libvirt = None;
    step("vm-test: libvirtd", || {
        libvirt = Some(host::Libvirt::ensure()?);
        Ok(())
    })?;
    let mut tests = Vec::new();
    step("vm-test: build the tests on the host", || {
        tests = build_tests(&scratch.join("bin"))?;
        if !only.is_empty() {
            tests.retain(|test| only.contains(&test.target));
            let names: Vec<&str> = tests.iter().map(|test| test.name.as_str()).collect();
            eprintln!("  only {}: {}", only.join(", "), names.join(" "));
        }
        Ok(())
    })?;
    let mut box_name = String::new();
    step("vm-test: the box", || {
        box_name = choose_box(source, &scratch)?;
        Ok(())
    })?;
    let tcg = match accel {
        Accel::Auto => host::needs_tcg(),
        Accel::Kvm => false,
        Accel::Tcg => true,
    };
    let slowdown = Slowdown::on_host()?;
    let mut vm = Vm::new(&box_name, tcg, &scratch)?;
    // A VM a killed run left behind would be reused as it is.
    vm.destroy();
    interrupt::check()?;
    step(
        &format!(
            "vagrant up ({box_name}, {})",
            if tcg { "TCG" } else { "KVM" }
        ),
        || vm.up(),
    )?;
    let kernel = vm.output("uname -r && uname -v")?;
    let kernel = kernel.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("xtask: guest kernel: {kernel}");
    step("guest: packages, bpffs, the repository's host path", || {
        vm.prepare()
    })?;
    let (slowdown, how) = vm.set_slowdown(tcg, slowdown)?;
    eprintln!("xtask: EDGE_TEST_SLOWDOWN={slowdown} in the guest: {how}");
    let mut outcome = Outcome {
        kernel,
        tally: Tally::default(),
        broken: Vec::new(),
    };
    step("guest: the tests", || {
        for test in &tests {
            let (tally, finished) = vm.run_test(test)?;
            outcome.tally.passed += tally.passed;
            outcome.tally.failed += tally.failed;
            if !finished {
                outcome.broken.push(test.name.clone());
            }
        }
        Ok(())
    })?;
    drop(vm);
    drop(libvirt);
    Ok(outcome)
}

/// Refuses a name in `only` that is not a target `cargo test` runs, naming those that are.
fn check_targets(only: &[String]) -> Result<()> {
    if only.is_empty() {
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(workspace_root())
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let mut known: Vec<&str> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|package| package.name.as_str() != "edge-ebpf")
        .flat_map(|package| &package.targets)
        .filter(|target| target.test)
        .map(|target| target.name.as_str())
        .collect();
    known.sort_unstable();
    known.dedup();
    let unknown: Vec<&str> = only
        .iter()
        .map(String::as_str)
        .filter(|name| !known.contains(name))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "--only {}: no such test target; the test targets are: {}",
            unknown.join(","),
            known.join(", ")
        );
    }
    Ok(())
}

/// A test executable, the target cargo built it from, and the package directory cargo would
/// run it in.
struct TestBinary {
    name: String,
    target: String,
    package_dir: PathBuf,
}

/// Builds every test executable and the `edge` binary they run, and copies them without debug
/// info (a tenth of the size, for the crossing into the guest) to `staging`: executables under
/// `deps/`, `edge-under-test` beside it, where the tests look for it.
fn build_tests(staging: &Path) -> Result<Vec<TestBinary>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = interrupt::spawn(
        Command::new(cargo)
            .args([
                "test",
                "--workspace",
                "--exclude",
                "edge-ebpf",
                "--no-run",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(workspace_root())
            .stdout(Stdio::piped()),
    )?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    // Read in a thread, so that a signal finds this one waiting and can stop cargo.
    let reader = thread::spawn(move || Artifacts::read(stdout));
    let status = interrupt::wait(&mut child)?;
    let Artifacts { tests, edge } = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the cargo output reader panicked"))??;
    if !status.success() {
        bail!("cargo test --no-run failed: {status}");
    }
    let edge = edge.context("cargo built no edge-under-test")?;
    if staging.exists() {
        fs::remove_dir_all(staging)?;
    }
    fs::create_dir_all(staging.join("deps"))?;
    strip(&edge, &staging.join("edge-under-test"))?;
    let mut binaries = Vec::new();
    for (executable, target, package_dir) in tests {
        let name = executable
            .file_name()
            .context("an executable's name")?
            .to_string_lossy()
            .into_owned();
        strip(&executable, &staging.join("deps").join(&name))?;
        binaries.push(TestBinary {
            name,
            target,
            package_dir,
        });
    }
    binaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(binaries)
}

/// What `cargo test --no-run` built: each test executable with its target's name and its
/// package's directory, and `edge-under-test`.
struct Artifacts {
    tests: Vec<(PathBuf, String, PathBuf)>,
    edge: Option<PathBuf>,
}

impl Artifacts {
    fn read(stdout: impl std::io::Read) -> Result<Self> {
        let mut artifacts = Artifacts {
            tests: Vec::new(),
            edge: None,
        };
        for message in Message::parse_stream(BufReader::new(stdout)) {
            let Message::CompilerArtifact(artifact) = message? else {
                continue;
            };
            let Some(executable) = artifact.executable else {
                continue;
            };
            let package_dir = artifact
                .manifest_path
                .parent()
                .context("a manifest's directory")?
                .as_std_path()
                .to_path_buf();
            if artifact.profile.test {
                artifacts.tests.push((
                    executable.into_std_path_buf(),
                    artifact.target.name.clone(),
                    package_dir,
                ));
            } else if artifact.target.name == "edge-under-test" {
                artifacts.edge = Some(executable.into_std_path_buf());
            }
        }
        Ok(artifacts)
    }
}

fn strip(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(from)
        .arg(to)
        .output()?;
    if !out.status.success() {
        bail!(
            "objcopy --strip-debug {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn choose_box(source: BoxSource, scratch: &Path) -> Result<String> {
    let local = || -> Result<String> {
        let name = local_box::name();
        local_box::ensure(&name, scratch)?;
        Ok(name)
    };
    match source {
        BoxSource::Public => {
            public_box()?;
            Ok(PUBLIC_BOX.to_string())
        }
        BoxSource::Local => local(),
        BoxSource::Auto => match public_box() {
            Ok(()) => Ok(PUBLIC_BOX.to_string()),
            Err(error) => {
                interrupt::check()?;
                eprintln!(
                    "  {PUBLIC_BOX} cannot be had ({error:#}): a local box from Debian's packages"
                );
                local()
            }
        },
    }
}

fn public_box() -> Result<()> {
    if has_box(PUBLIC_BOX)? {
        eprintln!("  {PUBLIC_BOX}: already added");
        return Ok(());
    }
    interrupt::exec(Command::new("vagrant").args([
        "box",
        "add",
        PUBLIC_BOX,
        "--provider",
        "libvirt",
    ]))
}

/// Whether Vagrant has `name` for libvirt.
fn has_box(name: &str) -> Result<bool> {
    let out = Command::new("vagrant").args(["box", "list"]).output()?;
    let prefix = format!("{name} (libvirt,");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.starts_with(&prefix)))
}

/// The least time, in nanoseconds, of [`REFERENCE_RUNS`] runs of [`REFERENCE_WORK`] by `run`.
fn fastest(run: &mut dyn FnMut() -> Result<String>) -> Result<u64> {
    (0..REFERENCE_RUNS)
        .map(|_| {
            let out = run()?;
            out.trim()
                .parse::<u64>()
                .with_context(|| format!("reference work printed {out:?}"))
        })
        .try_fold(u64::MAX, |least, ns| Ok(least.min(ns?)))
}

/// Where the guest's `EDGE_TEST_SLOWDOWN` comes from, decided on the host before the VM starts
/// (so that the VM's own load does not make the host look slow).
enum Slowdown {
    /// `EDGE_TEST_SLOWDOWN` set on the host: passed on as it is.
    Given(u32),
    /// [`REFERENCE_WORK`]'s time on the host, in nanoseconds, to compare the guest's with.
    Measure { host_ns: u64 },
}

impl Slowdown {
    fn on_host() -> Result<Self> {
        if let Ok(value) = std::env::var("EDGE_TEST_SLOWDOWN") {
            let factor = value
                .parse()
                .with_context(|| format!("EDGE_TEST_SLOWDOWN={value}"))?;
            return Ok(Slowdown::Given(factor));
        }
        let host_ns = fastest(&mut || {
            let out = Command::new("sh").args(["-c", REFERENCE_WORK]).output()?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })?;
        Ok(Slowdown::Measure { host_ns })
    }
}

/// The VM of vagrant/, configured by the environment the Vagrantfile reads; destroyed on drop.
struct Vm {
    env: Vec<(&'static str, String)>,
    ssh_config: PathBuf,
    /// Environment of the tests in the guest, as `NAME=value ` words.
    test_env: String,
}

impl Vm {
    fn new(box_name: &str, tcg: bool, scratch: &Path) -> Result<Self> {
        let mut env = vec![
            ("VAGRANT_DEFAULT_PROVIDER", "libvirt".to_string()),
            ("EDGE_VM_BOX", box_name.to_string()),
            (
                "EDGE_VM_BINARIES",
                scratch.join("bin").to_string_lossy().into_owned(),
            ),
        ];
        if tcg {
            env.push(("EDGE_VM_ACCEL", "tcg".to_string()));
        }
        Ok(Vm {
            env,
            ssh_config: scratch.join("ssh-config"),
            test_env: String::new(),
        })
    }

    /// Sets the tests' `EDGE_TEST_SLOWDOWN` (tests/src/edge.rs): the host's if given, else how
    /// many times longer the guest takes for [`REFERENCE_WORK`] than the host, at least
    /// [`TCG_MIN_SLOWDOWN`] on an emulated CPU. Returns the factor and how it was found.
    fn set_slowdown(&mut self, tcg: bool, slowdown: Slowdown) -> Result<(u32, String)> {
        let (factor, how) = match slowdown {
            Slowdown::Given(factor) => (factor, "EDGE_TEST_SLOWDOWN on the host".to_string()),
            Slowdown::Measure { host_ns: host } => {
                let guest = fastest(&mut || self.output(REFERENCE_WORK))?;
                let ratio = guest.div_ceil(host.max(1));
                let least = if tcg { TCG_MIN_SLOWDOWN } else { 1 };
                (
                    u32::try_from(ratio).unwrap_or(u32::MAX).clamp(least, 100),
                    format!(
                        "the reference work took {:.2} s in the guest, {:.2} s on the host \
                         (ratio {ratio}, at least {least})",
                        guest as f64 / 1e9,
                        host as f64 / 1e9
                    ),
                )
            }
        };
        if factor > 1 {
            self.test_env = format!("EDGE_TEST_SLOWDOWN={factor} ");
        }
        Ok((factor, how))
    }

    fn vagrant(&self) -> Command {
        let mut command = Command::new("vagrant");
        command
            .current_dir(workspace_root().join("vagrant"))
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        command
    }

    fn up(&self) -> Result<()> {
        interrupt::exec(self.vagrant().args(["up", "--no-provision"]))?;
        let out = self.vagrant().arg("ssh-config").output()?;
        if !out.status.success() {
            bail!("vagrant ssh-config failed: {}", out.status);
        }
        fs::write(&self.ssh_config, out.stdout)?;
        Ok(())
    }

    /// `ssh` into the guest (`default` in Vagrant's ssh-config), without Vagrant's start-up cost
    /// on every command.
    fn ssh(&self, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "LogLevel=ERROR", "default"])
            .arg(command);
        ssh
    }

    fn output(&self, command: &str) -> Result<String> {
        let out = self.ssh(command).stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("in the guest: {command}: {}", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The packages the tests run (a local box has them; a public box gets them from its
    /// mirror, with the servers kept from starting, as `cargo xtask setup` does), bpffs, and the
    /// host path of the repository, which the tests were compiled with (`CARGO_MANIFEST_DIR`),
    /// pointing at the synced copy.
    fn prepare(&self) -> Result<()> {
        let root = workspace_root();
        let packages = setup::RUNTIME_PACKAGES.join(" ");
        let mut script = format!(
            "set -e
missing=
for p in {packages}; do
  dpkg-query -W -f='${{Status}}' \"$p\" 2>/dev/null | grep -q 'ok installed' || missing=\"$missing $p\"
done
if [ -n \"$missing\" ]; then
  echo \"installing:$missing\"
  printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  rm -f /usr/sbin/policy-rc.d
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"
        );
        if root != Path::new(GUEST_REPOSITORY) {
            let root = root.display();
            script.push_str(&format!(
                "mkdir -p \"$(dirname '{root}')\" && ln -sfn {GUEST_REPOSITORY} '{root}'\n"
            ));
        }
        interrupt::exec(&mut self.ssh(&format!("sudo sh -c {}", quote(&script))))
    }

    /// Runs one test executable as root in its package's directory, as `cargo test` would;
    /// returns its tally and whether it ended with libtest's summary.
    fn run_test(&self, test: &TestBinary) -> Result<(Tally, bool)> {
        eprintln!("xtask: guest: {}", test.name);
        // `ulimit -n`: a login's 1,024 files are too few for the TCP tests, which hold over a
        // thousand connections (the CI host allows 20,000).
        let command = format!(
            "ulimit -n {GUEST_OPEN_FILES} && cd {} && {}exec timeout {} {GUEST_BINARIES}/deps/{}",
            quote(&test.package_dir.to_string_lossy()),
            self.test_env,
            TEST_TIMEOUT.as_secs(),
            test.name
        );
        let started = Instant::now();
        let mut child = interrupt::spawn(
            self.ssh(&format!("sudo sh -c {}", quote(&command)))
                .stdout(Stdio::piped()),
        )?;
        let stdout = child.stdout.take().context("ssh stdout")?;
        let reader = thread::spawn(move || {
            let mut tally = Tally::default();
            let mut finished = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                finished |= line.starts_with("test result: ");
                tally.add(&line);
            }
            (tally, finished)
        });
        let status = interrupt::wait(&mut child)?;
        let (tally, finished) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the output reader panicked"))?;
        eprintln!(
            "xtask: guest: {}: {} ({:.1?})",
            test.name,
            status,
            started.elapsed()
        );
        Ok((tally, finished))
    }

    fn destroy(&self) {
        eprintln!("xtask: vagrant destroy -f");
        // In a process group of its own: a second Ctrl-C at the terminal must not cut the
        // cleanup short.
        match self
            .vagrant()
            .args(["destroy", "-f"])
            .process_group(0)
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("xtask: vagrant destroy -f failed: {status}"),
            Err(error) => eprintln!("xtask: vagrant destroy -f: {error}"),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// `value` as one single-quoted shell word.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Polls `probe` every 100 ms until it yields a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
