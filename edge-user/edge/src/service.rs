//! What the service manager is told (sd_notify(3)): ready once serving, reloading while a
//! SIGHUP is applied, stopping, and a watchdog ping from the daemon loop, so that a loop that
//! hangs gets the daemon restarted (`Type=notify` and `WatchdogSec=` in
//! contrib/systemd/edge.service). Without `NOTIFY_SOCKET` (not started by systemd) each call
//! does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        debug!(%error, "sd_notify");
    }
}

/// Serving: startup is over.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// A reload begins; [`ready`] ends it. The timestamp is what `Type=notify-reload` needs.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half its timeout, if the service manager set one for us.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2)
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
