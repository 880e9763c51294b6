//! One timing-sensitive test at a time. Some tests hold the daemon to a clock: steering must
//! react within a probe interval's allowance and tell origins apart by tens of milliseconds, the
//! TCP-starvation tests need every query answered within 2 s while hundreds of connections load
//! the PoP, the HTTP tests count cache ages and send timeouts in seconds. On a machine of two
//! cores, two such tests side by side steal each other's CPU and fail on time, not on behaviour.
//! `cargo test` runs one binary's tests on parallel threads and nextest runs every test in a
//! process of its own, so the lock is a file lock (flock(2)): it holds across threads and
//! processes alike, and the kernel releases it when its holder exits, even on a panic.

use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

/// Held for a timing-sensitive test's whole run; dropping it lets the next one start.
#[must_use = "the lock is released when this is dropped"]
pub struct TimingLock {
    _file: File,
}

/// The lock file, shared by every test binary on the machine.
fn path() -> PathBuf {
    std::env::temp_dir().join("edge-tests-timing.lock")
}

/// Waits until no other timing-sensitive test runs, then holds the lock.
pub fn timing_sensitive() -> TimingLock {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path())
        .expect("opening the timing lock file");
    loop {
        // SAFETY: flock(2) on a descriptor that `file` owns and keeps open while the lock is
        // held; it touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return TimingLock { _file: file };
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "flock on the timing lock: {error}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, thread, time::Duration};

    use super::timing_sensitive;

    #[test]
    fn holders_take_turns() {
        let first = timing_sensitive();
        let (started, second_started) = mpsc::channel();
        let second = thread::spawn(move || {
            let _lock = timing_sensitive();
            started.send(()).unwrap();
        });
        assert!(
            second_started
                .recv_timeout(Duration::from_millis(300))
                .is_err(),
            "a second holder got the lock while the first held it"
        );
        drop(first);
        second_started
            .recv_timeout(Duration::from_secs(10))
            .expect("the second holder gets the lock once the first lets go");
        second.join().unwrap();
    }
}
