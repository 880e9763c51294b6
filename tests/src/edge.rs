//! The real `edge` binary, run inside a namespace, stopped on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// How long `edge run` may take to attach and publish, times [`slowdown`].
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times slower than usual this machine runs the daemon: every wait for its log
/// ([`EdgeProcess::wait_for_log`], the start among them) is this many times longer. `cargo
/// xtask vm-test` sets it for a guest on an emulated CPU (TCG), where loading the XDP program
/// alone can take longer than [`START_TIMEOUT`], and a reload of a million names longer than
/// its 600 s.
pub const SLOWDOWN_VAR: &str = "EDGE_TEST_SLOWDOWN";
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `edge` binary under test: `$EDGE_BIN` if set, else this crate's build of the edge crate's
/// `main.rs` (`edge-under-test`), which cargo builds before it runs the integration tests. It
/// sits in the target directory, next to the `deps/` or `examples/` folder of the running test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir.join("edge-under-test")
}

/// The factor of [`SLOWDOWN_VAR`], 1 when unset.
pub fn slowdown() -> Result<u32> {
    match std::env::var(SLOWDOWN_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(1),
        Ok(value) => match value.parse::<u32>() {
            Ok(factor @ 1..=100) => Ok(factor),
            _ => bail!("{SLOWDOWN_VAR}={value}: want a whole number from 1 to 100"),
        },
        Err(error) => bail!("{SLOWDOWN_VAR}: {error}"),
    }
}

/// `time` times [`slowdown`]: a test's time bound or timing setting, as long on an emulated CPU
/// as `time` is here. For time only: a count scaled so would let a test pass that should fail.
/// Panics on a bad [`SLOWDOWN_VAR`] (the test cannot run as meant).
pub fn scaled(time: Duration) -> Duration {
    time * slowdown().unwrap_or_else(|error| panic!("{error:#}"))
}

/// A byte offset into a daemon's log: where it ended when an action happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition(usize);

impl LogPosition {
    /// The log's beginning, for what the daemon logs as it starts.
    pub const START: Self = Self(0);
}

/// A running `edge run`.
pub struct EdgeProcess {
    child: Child,
    log: PathBuf,
}

impl EdgeProcess {
    /// Starts `edge run --config <config> <extra…>` in `netns` and waits until it has published
    /// its answers. Its log goes to `<config>.log`.
    pub fn start(netns: &Netns, config: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_within(netns, config, extra, START_TIMEOUT)
    }

    /// As [`Self::start`], for a config that takes longer than usual to load (a million names).
    pub fn start_within(
        netns: &Netns,
        config: &Path,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<Self> {
        Self::spawn(
            netns.command(binary()),
            config,
            extra,
            "answers published",
            timeout,
        )
    }

    /// Starts `edge run` as `command` (`edge` run in a namespace, by [`Netns::command`] or
    /// [`Netns::exec_command`]) with `config` and `extra`, and waits until it logs `ready`.
    pub fn spawn(
        mut command: std::process::Command,
        config: &Path,
        extra: &[&str],
        ready: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let log = config.with_extension("log");
        let log_file = fs::File::create(&log)?;
        let child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary().display()))?;
        let mut process = Self { child, log };
        process.wait_for_log(LogPosition::START, ready, timeout)?;
        Ok(process)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        self.log_since(LogPosition::START)
    }

    /// What the process has logged from `position` on.
    pub fn log_since(&self, position: LogPosition) -> String {
        let bytes = fs::read(&self.log).unwrap_or_default();
        let from = position.0.min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    /// Where the log ends now: take it before an action, and wait from it for the action's
    /// effect, so that a line logged before the action cannot satisfy the wait.
    pub fn log_position(&self) -> LogPosition {
        LogPosition(fs::metadata(&self.log).map_or(0, |m| m.len() as usize))
    }

    /// Waits until the log from `since` on contains `needle`, for `timeout` times [`slowdown`];
    /// fails early if the process exits. Returns the position just past the match, for a wait on
    /// what follows it.
    pub fn wait_for_log(
        &mut self,
        since: LogPosition,
        needle: &str,
        timeout: Duration,
    ) -> Result<LogPosition> {
        let timeout = timeout * slowdown()?;
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read(&self.log).unwrap_or_default();
            let after = &log[since.0.min(log.len())..];
            if let Some(at) = after
                .windows(needle.len())
                .position(|window| window == needle.as_bytes())
            {
                return Ok(LogPosition(since.0 + at + needle.len()));
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "edge exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "edge did not log {needle:?} within {timeout:?} after byte {} of its log:\n{}",
                    since.0,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process; returns where its log ended just before, to wait from.
    pub fn signal(&self, signal: libc::c_int) -> Result<LogPosition> {
        let position = self.log_position();
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(position)
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn stop(mut self) -> Result<bool> {
        self.terminate()
    }

    /// SIGKILL: the daemon dies without cleaning up, as in a crash.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn terminate(&mut self) -> Result<bool> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status.success());
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("edge ignored SIGTERM for {STOP_TIMEOUT:?}:\n{}", self.log())
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The XDP counters of the data plane that `config` describes, read with `edge stats --json`.
pub fn counters(config: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    let output = std::process::Command::new(binary())
        .args(["stats", "--json", "--config"])
        .arg(config)
        .output()?;
    if !output.status.success() {
        bail!("edge stats: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The steering status of the daemon that `config` describes, read from its admin endpoint
/// (which listens on the namespace's loopback) by a thread inside `netns`, as `edge status
/// --json` reads it. In process, not by running `edge status`: tests poll this every few
/// milliseconds for several daemons, and on an emulated CPU (`cargo xtask vm-test`) starting
/// the debug binary each time took more of the guest than the daemons it watched.
pub fn status(netns: &crate::topology::Netns, config: &Path) -> Result<edge_steer::status::Status> {
    let listen = edge_config::Config::load_settings(config)?.admin.listen;
    netns.run_inside(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(edge::admin::status(listen))
    })?
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write as _, process::Command};

    use super::*;

    /// A stand-in for the daemon: a process that stays up while the test writes its log, as
    /// the daemon would.
    fn logging_process(name: &str) -> Result<EdgeProcess> {
        let log = std::env::temp_dir().join(format!("edge-log-{name}-{}.log", std::process::id()));
        fs::write(&log, "INFO reload refused: the first one\n")?;
        let child = Command::new("sleep").arg("60").spawn()?;
        Ok(EdgeProcess { child, log })
    }

    fn append(process: &EdgeProcess, line: &str) -> Result<()> {
        writeln!(
            OpenOptions::new().append(true).open(&process.log)?,
            "{line}"
        )?;
        Ok(())
    }

    #[test]
    fn a_wait_ignores_what_was_logged_before_its_position() -> Result<()> {
        let mut process = logging_process("position")?;
        let signalled = process.log_position();
        let wait = process.wait_for_log(signalled, "reload refused", Duration::from_millis(200));
        assert!(
            wait.is_err(),
            "the line from before the action satisfied the wait"
        );

        append(&process, "INFO reload refused: the second one")?;
        let after = process.wait_for_log(signalled, "reload refused", Duration::from_secs(5))?;
        assert!(process.log_since(signalled).contains("the second one"));
        assert!(!process.log_since(signalled).contains("the first one"));
        // The returned position is past the match: a wait from it needs a third line.
        assert!(
            process
                .wait_for_log(after, "reload refused", Duration::from_millis(200))
                .is_err()
        );
        assert!(
            process
                .wait_for_log(LogPosition::START, "the first one", Duration::from_secs(5))
                .is_ok()
        );
        let log = process.log.clone();
        drop(process);
        fs::remove_file(log)?;
        Ok(())
    }
}
