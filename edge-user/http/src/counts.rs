//! Responses counted by their `x-cache` status, for the daemon's metrics: hits, misses, stale,
//! revalidated, passed, and those the cache had no part in (an unknown site, an origin error
//! answered without a cached copy).

use std::sync::atomic::{AtomicU64, Ordering};

use http::Response;

use crate::respond::CACHE_STATUS;

/// The `x-cache` values, and `none` for a response without one.
pub const STATUSES: [&str; 6] = ["hit", "miss", "stale", "revalidated", "pass", "none"];

/// Responses sent, by `x-cache` status (in the order of [`STATUSES`]).
#[derive(Debug, Default)]
pub struct Responses([AtomicU64; STATUSES.len()]);

impl Responses {
    /// Counts `response` under its `x-cache` status.
    pub fn count<B>(&self, response: &Response<B>) {
        let status = response
            .headers()
            .get(CACHE_STATUS)
            .and_then(|value| STATUSES.iter().position(|status| value == status))
            .unwrap_or(STATUSES.len() - 1);
        self.0[status].fetch_add(1, Ordering::Relaxed);
    }

    /// Every status with its count.
    pub fn read(&self) -> [(&'static str, u64); STATUSES.len()] {
        let mut counts = STATUSES.map(|status| (status, 0));
        for ((_, count), counter) in counts.iter_mut().zip(&self.0) {
            *count = counter.load(Ordering::Relaxed);
        }
        counts
    }
}

/// How origin requests (fills, revalidations, passes) ended: `response` when a response head
/// came, or the [`crate::origin::OriginError`] that ended it instead.
pub const ORIGIN_RESULTS: [&str; 4] = ["response", "unreachable", "timeout", "broken"];

/// Requests sent to origins, by result (in the order of [`ORIGIN_RESULTS`]).
#[derive(Debug, Default)]
pub struct OriginRequests([AtomicU64; ORIGIN_RESULTS.len()]);

impl OriginRequests {
    pub(crate) fn count(&self, result: usize) {
        self.0[result].fetch_add(1, Ordering::Relaxed);
    }

    /// Every result with its count.
    pub fn read(&self) -> [(&'static str, u64); ORIGIN_RESULTS.len()] {
        let mut counts = ORIGIN_RESULTS.map(|result| (result, 0));
        for ((_, count), counter) in counts.iter_mut().zip(&self.0) {
            *count = counter.load(Ordering::Relaxed);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_status() {
        let responses = Responses::default();
        let with = |status: &'static str| {
            Response::builder()
                .header(CACHE_STATUS, status)
                .body(())
                .unwrap()
        };
        responses.count(&with("hit"));
        responses.count(&with("hit"));
        responses.count(&with("miss"));
        responses.count(&Response::new(()));
        let read = responses.read();
        assert_eq!(read[0], ("hit", 2));
        assert_eq!(read[1], ("miss", 1));
        assert_eq!(read[5], ("none", 1));
    }
}
