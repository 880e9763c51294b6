//! edge-cache: the static content cache: objects on disk ([`store`]) and their mapped bodies
//! ([`mapped`]), the index of what is stored by key and Vary variant, freshness rules
//! ([`policy`], RFC 9111), eviction ([`eviction`]) and request coalescing ([`flight`]).
//!
//! Owns what is stored and for how long. HTTP framing, connections and origins live in
//! edge-http, which is built on this crate; this one must not serve, connect, or read the
//! config file (edge-http hands it the sizes and rules; of edge-config it names only the
//! schema type `RequestDirectives`).

pub mod eviction;
pub mod fields;
pub mod flight;
pub mod key;
pub mod mapped;
pub mod policy;
pub mod store;

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use http::{HeaderMap, request};
use tracing::{info, warn};

use self::{
    eviction::Lru,
    flight::{Flights, Publish},
    key::{CacheKey, ObjectId},
    policy::{Reuse, Rules},
    store::{Meta, Object, Sealed, Store, Writer},
};

/// What the cache holds for a request.
pub enum Lookup {
    Fresh(Arc<Object>),
    /// Stored but stale: `revalidation` is the request to send to the origin.
    Stale(Arc<Object>, Box<request::Parts>),
    Miss,
}

#[derive(Debug)]
pub struct Cache {
    store: Store,
    index: Mutex<Index>,
    pub flights: Flights,
    pub rules: Rules,
    /// Larger bodies are not stored.
    pub max_object_size: u64,
    pub counters: Counters,
}

/// What the cache counts, for the admin endpoint's `/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Stale responses served because the origin failed (RFC 9111 §4.2.4).
    pub stale_on_error: AtomicU64,
    /// Objects removed to make room (least recently used first), not by purge or replacement.
    pub evictions: AtomicU64,
}

#[derive(Debug)]
struct Index {
    objects: HashMap<ObjectId, Arc<Object>>,
    /// The Vary variants stored for a key.
    variants: HashMap<CacheKey, Vec<ObjectId>>,
    lru: Lru,
}

impl Publish for Cache {
    fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    fn publish(&self, sealed: Sealed) -> io::Result<Arc<Object>> {
        Cache::publish(self, sealed)
    }
}

impl Cache {
    /// Opens the cache directory and rebuilds the index from the objects in it, so that a
    /// restarted PoP starts warm. Objects that go stale soonest are the first to be evicted
    /// until they are used again.
    pub fn open(dir: &Path, capacity: u64, max_object_size: u64, rules: Rules) -> io::Result<Self> {
        let (store, mut objects) = Store::open(dir)?;
        objects.sort_by_key(|object| object.meta.fresh_until);
        let cache = Self {
            store,
            index: Mutex::new(Index {
                objects: HashMap::new(),
                variants: HashMap::new(),
                lru: Lru::new(capacity),
            }),
            flights: Flights::default(),
            rules,
            max_object_size,
            counters: Counters::default(),
        };
        let count = objects.len();
        {
            let mut index = cache.index();
            for object in objects {
                for old in index.lru.insert(object.id, object.size) {
                    if let Some(old) = index.forget(&old) {
                        cache.store.remove(&old);
                        cache.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                index.add(object);
            }
        }
        info!(dir = %dir.display(), objects = count, bytes = cache.used(), "cache opened");
        Ok(cache)
    }

    /// The object for a fresh hit found by its clock alone, without the request view and RFC 9111
    /// evaluation of [`Self::lookup`]: `request` (the client's headers) carries no cache
    /// directives and the key has a single stored variant that does not vary. `None` does not
    /// mean a miss, only that [`Self::lookup`] must decide.
    pub fn fresh_hit(
        &self,
        key: &CacheKey,
        request: &HeaderMap,
        now: SystemTime,
    ) -> Option<Arc<Object>> {
        if !self.rules.plain_request(request) {
            return None;
        }
        let mut index = self.index();
        let [id] = index.variants.get(key)?.as_slice() else {
            return None;
        };
        let object = index.objects.get(id)?.clone();
        if object.fresh_for_plain_request(now) != Some(true) {
            return None;
        }
        index.lru.touch(&object.id);
        Some(object)
    }

    pub fn lookup(&self, key: &CacheKey, view: &request::Parts, now: SystemTime) -> Lookup {
        // Only the variants are read under the index lock; judging them by RFC 9111 (which
        // builds request and response views) happens outside it, so hits do not queue on it.
        let variants: Vec<Arc<Object>> = {
            let index = self.index();
            let Some(ids) = index.variants.get(key) else {
                return Lookup::Miss;
            };
            ids.iter()
                .filter_map(|id| index.objects.get(id).cloned())
                .collect()
        };
        let found = variants.into_iter().find_map(|object| {
            match policy::reuse(&object.meta.policy, view, now) {
                Reuse::Fresh => Some(Lookup::Fresh(object)),
                Reuse::Stale { revalidation } => Some(Lookup::Stale(object, revalidation)),
                Reuse::Mismatch => None,
            }
        });
        match found {
            Some(lookup) => {
                if let Lookup::Fresh(object) | Lookup::Stale(object, _) = &lookup {
                    let mut index = self.index();
                    index.lru.touch(&object.id);
                }
                lookup
            }
            None => Lookup::Miss,
        }
    }

    /// Makes room for `sealed`, then publishes it (replacing the object with its id), so that
    /// the directory never holds more than the capacity.
    pub fn publish(&self, sealed: Sealed) -> io::Result<Arc<Object>> {
        let mut index = self.index();
        let id = sealed.id();
        let evicted = index.lru.insert(id, sealed.size());
        // Evicting `id` itself (alone larger than the capacity) removes its previous version.
        for old in &evicted {
            if let Some(old) = index.forget(old) {
                self.store.remove(&old);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if evicted.contains(&id) {
            return Err(io::Error::other("larger than the cache capacity"));
        }
        match sealed.publish() {
            Ok(object) => Ok(index.add(object)),
            Err(error) => {
                index.lru.remove(&id);
                index.forget(&id);
                Err(error)
            }
        }
    }

    /// Removes `object` (one whose file has gone) unless a newer one has replaced it.
    pub fn remove(&self, object: &Arc<Object>) {
        let mut index = self.index();
        let current = index.objects.get(&object.id);
        if !current.is_some_and(|current| Arc::ptr_eq(current, object)) {
            return;
        }
        if let Some(old) = index.forget(&object.id) {
            index.lru.remove(&old.id);
            self.store.remove(&old);
        }
    }

    /// Removes every variant stored for `key`; returns how many there were.
    pub fn purge(&self, key: &CacheKey) -> usize {
        let mut index = self.index();
        let ids = index.variants.get(key).cloned().unwrap_or_default();
        for id in &ids {
            if let Some(old) = index.forget(id) {
                index.lru.remove(id);
                self.store.remove(&old);
            }
        }
        ids.len()
    }

    /// Starts writing a new object.
    pub fn writer(&self, id: ObjectId) -> io::Result<Writer> {
        self.store.writer(id)
    }

    /// Gives `object` new metadata (after a 304) without writing its body again, and indexes
    /// the result in its place. An object purged or replaced meanwhile is not indexed again;
    /// the refreshed object still answers the request that revalidated it.
    pub async fn refresh(
        self: &Arc<Self>,
        object: Arc<Object>,
        meta: Meta,
    ) -> io::Result<Arc<Object>> {
        let cache = self.clone();
        let old = object.clone();
        let refreshed = tokio::task::spawn_blocking(move || cache.store.refresh(&old, meta))
            .await
            .map_err(io::Error::other)??;
        let mut index = self.index();
        let current = index.objects.get(&object.id);
        if !current.is_some_and(|current| Arc::ptr_eq(current, &object)) {
            return Ok(Arc::new(refreshed));
        }
        let evicted = index.lru.insert(object.id, refreshed.size);
        for old in &evicted {
            if let Some(old) = index.forget(old) {
                self.store.remove(&old);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if evicted.contains(&object.id) {
            return Ok(Arc::new(refreshed));
        }
        Ok(index.add(refreshed))
    }

    /// The index, locked. A panic while it was held (a bug) leaves it poisoned; serving then
    /// goes on with it as the panic left it, rather than every later request panicking too:
    /// each of its operations leaves it usable (at worst an object is counted but not found, or
    /// found but not counted, until it is replaced or evicted).
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|poisoned| {
            warn!("a panic happened while the cache index was locked; going on with the index as it was left");
            self.index.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Objects stored (each Vary variant counts).
    pub fn objects(&self) -> usize {
        self.index().objects.len()
    }

    /// Bytes stored.
    pub fn used(&self) -> u64 {
        self.index().lru.used()
    }
}

impl Index {
    /// Adds an object that is on disk and counted in the LRU order.
    fn add(&mut self, object: Object) -> Arc<Object> {
        let object = Arc::new(object);
        let ids = self.variants.entry(object.meta.key.clone()).or_default();
        if !ids.contains(&object.id) {
            ids.push(object.id);
        }
        // A new version replaces a file (the rename unlinked the old one): its mapping goes.
        if let Some(old) = self.objects.insert(object.id, object.clone())
            && !old.same_file(&object)
        {
            old.release();
        }
        object
    }

    /// Drops `id` from the maps (not from the LRU order) and returns its object.
    fn forget(&mut self, id: &ObjectId) -> Option<Arc<Object>> {
        let object = self.objects.remove(id)?;
        if let Some(ids) = self.variants.get_mut(&object.meta.key) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.variants.remove(&object.meta.key);
            }
        }
        Some(object)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, num::NonZeroUsize, time::Duration};

    use bytes::Bytes;
    use http::HeaderMap;

    use super::*;
    use crate::{
        policy::RequestDirectives,
        store::tests::{meta, tempdir},
    };

    fn open(dir: &Path) -> Arc<Cache> {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Ignore);
        Arc::new(Cache::open(dir, 1 << 30, 1 << 30, rules).unwrap())
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::from_request(Some("h.example"), &path.parse().unwrap()).unwrap()
    }

    async fn store(cache: &Cache, path: &str, body: Bytes) -> Arc<Object> {
        let key = key(path);
        let writer = cache.writer(key.object_id([], &HeaderMap::new())).unwrap();
        let sealed = writer.finish_whole(body, meta(&key)).await.unwrap();
        cache.publish(sealed).unwrap()
    }

    /// Mappings of files under `dir` in this process, as the kernel counts them.
    fn mappings_under(dir: &Path) -> usize {
        let dir = dir.to_str().unwrap();
        fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|line| line.contains(dir))
            .count()
    }

    /// More large objects than the mapping budget: every one is served, and no more than the
    /// budget stay mapped (before, each stayed mapped for its object's life, and a cache of
    /// 65 k of them took the process past `vm.max_map_count`).
    #[tokio::test]
    async fn large_bodies_stay_mapped_within_the_budget() {
        let dir = tempdir("mapping-budget");
        let cache = open(&dir);
        mapped::set_budget(NonZeroUsize::new(8).unwrap());
        let body = |n: usize| Bytes::from(vec![b'a' + (n % 26) as u8; 70_000 + n]);
        let mut objects = Vec::new();
        for n in 0..40 {
            objects.push(store(&cache, &format!("/large/{n}"), body(n)).await);
        }
        for round in 0..2 {
            for (n, object) in objects.iter().enumerate() {
                let served = object.body().unwrap();
                assert_eq!(served, body(n), "object {n}, round {round}");
            }
            let mapped = mappings_under(&dir);
            assert!(mapped <= 8, "{mapped} bodies mapped, budget 8");
        }
        // A body in use stays mapped while pushed out; it goes when its last holder does.
        let held = objects[0].body().unwrap();
        for object in &objects[1..] {
            object.body().unwrap();
        }
        assert_eq!(held, body(0));
        assert!(mappings_under(&dir) <= 9);
        drop(held);
        assert!(mappings_under(&dir) <= 8);
        // A version stored over one that is not mapped: the old object never maps the new
        // file's body (its responses fetch again).
        let old = objects.pop().unwrap();
        old.release();
        let newer = store(&cache, "/large/39", body(1)).await;
        assert!(old.body().is_err());
        assert_eq!(newer.body().unwrap(), body(1));
        // Removed objects are unmapped at once, so their disk space is freed.
        for n in 0..40 {
            assert_eq!(cache.purge(&key(&format!("/large/{n}"))), 1);
        }
        assert_eq!(mappings_under(&dir), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A panic while the index is locked does not take every later request down with it.
    #[tokio::test]
    async fn a_panic_holding_the_index_lock_does_not_stop_the_cache() {
        let dir = tempdir("poisoned");
        let cache = open(&dir);
        let before = store(&cache, "/before", Bytes::from_static(b"one")).await;
        let holder = cache.clone();
        let panicked = std::thread::spawn(move || {
            let _index = holder.index.lock().unwrap();
            panic!("a bug while the index is locked");
        })
        .join();
        assert!(panicked.is_err());
        assert!(cache.index.is_poisoned());

        let view = cache.rules.view(
            key("/before").uri(),
            key("/before").host(),
            &HeaderMap::new(),
        );
        let now = SystemTime::now();
        assert!(matches!(
            cache.lookup(&key("/before"), &view, now),
            Lookup::Fresh(_)
        ));
        cache.fresh_hit(&key("/before"), &HeaderMap::new(), now);
        let after = store(&cache, "/after", Bytes::from_static(b"two")).await;
        assert_eq!(&after.body().unwrap()[..], b"two");
        assert_eq!(cache.used(), before.size + after.size);
        assert!(!cache.index.is_poisoned());
        assert_eq!(cache.purge(&key("/before")), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
