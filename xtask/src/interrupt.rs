//! Ctrl-C, SIGTERM and SIGHUP during `vm-test` and the demo: they set a flag instead of ending
//! xtask, and the running step stops its child and fails, so the VM's guard destroys the VM
//! (the demo removes its namespaces) before xtask exits.

use std::{
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on, the signals that end a run set the flag instead.
pub fn catch() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; children
        // get the default disposition back when they exec.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Fails if a signal has arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Starts `command` in a process group of its own: a Ctrl-C at the terminal reaches only xtask,
/// which then stops the whole group (cargo with its compilers, mmdebstrap with its chroot's
/// mounts) with SIGTERM, so each can clean up.
pub fn spawn(command: &mut Command) -> Result<Child> {
    command
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {command:?}"))
}

/// How long a stopped child may take to clean up before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Waits for `child` (started by [`spawn`]), stopping it if a signal arrives meanwhile.
pub fn wait(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            check()?;
            return Ok(status);
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            let group = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group of a child this started; no memory involved.
            unsafe {
                libc::kill(-group, libc::SIGTERM);
            }
            let deadline = Instant::now() + GRACE;
            while child.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            bail!("interrupted");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` with inherited output; fails if it does or if a signal arrives.
pub fn exec(command: &mut Command) -> Result<()> {
    let mut child = spawn(command)?;
    let status = wait(&mut child)?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
