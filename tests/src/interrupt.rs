//! Ctrl-C and SIGTERM in the demo and the benchmarks: a flag instead of the default exit, so
//! that the running step fails at its next poll and everything started so far is stopped and
//! removed on the way out (the namespaces, daemons and pins all go on drop). Tests never
//! install it; [`check`] then never fails.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on, SIGINT, SIGTERM and SIGHUP set the flag instead of ending the process.
pub fn catch() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; children
        // get the default disposition back when they exec.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Fails if a signal has arrived since [`catch`].
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping and removing everything started");
    }
    Ok(())
}
