//! Open connections per source, so that one client cannot hold every socket and file the
//! process may open. An IPv6 source is its /64: one subscriber usually holds a whole /64.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// The connections open per source, up to a limit.
#[derive(Debug, Clone)]
pub struct Sources {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Changed by a reload; connections already open stay.
    limit: Arc<AtomicUsize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl Sources {
    pub fn new(limit: usize) -> Self {
        Self {
            open: Arc::default(),
            limit: Arc::new(AtomicUsize::new(limit)),
        }
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A place for a new connection from `peer`, or `None` when its source has `limit` open.
    pub fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let source = source(peer);
        let mut open = self.open.lock().expect("sources lock");
        let count = open.entry(source).or_default();
        if *count >= self.limit.load(Ordering::Relaxed) {
            return None;
        }
        *count += 1;
        Some(Admitted {
            open: self.open.clone(),
            source,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("sources lock");
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// The source `peer` counts against: its IPv4 address (also when mapped into IPv6), or its /64.
fn source(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_source_and_frees_on_drop() {
        let sources = Sources::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = sources.admit(a).unwrap();
        let _second = sources.admit("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert!(
            sources.admit(a).is_none(),
            "a mapped address is the same source"
        );
        assert!(sources.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(sources.admit(a).is_some());

        let _one = sources.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _two = sources.admit("2001:db8::ffff:1".parse().unwrap()).unwrap();
        assert!(
            sources.admit("2001:db8::2".parse().unwrap()).is_none(),
            "same /64"
        );
        assert!(sources.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
