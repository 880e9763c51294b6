//! Ctrl-C, SIGTERM and SIGHUP during `vm-test`: they set a flag instead of ending xtask, and
//! the running step kills its child and fails, so the VM's guard destroys the VM before xtask
//! exits.

use std::{
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
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

/// Waits for `child`, killing it if a signal arrives meanwhile.
pub fn wait(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            check()?;
            return Ok(status);
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            // The child may already have exited on the same Ctrl-C.
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` with inherited output; fails if it does or if a signal arrives.
pub fn exec(command: &mut Command) -> Result<()> {
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let status = wait(&mut child)?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
