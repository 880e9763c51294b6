//! Which objects leave when the directory would outgrow its capacity: the least recently used.

use lru::LruCache;

use super::key::ObjectId;

/// Recency order and sizes of the stored objects.
#[derive(Debug)]
pub struct Lru {
    order: LruCache<ObjectId, u64>,
    used: u64,
    capacity: u64,
}

impl Lru {
    pub fn new(capacity: u64) -> Self {
        Self {
            order: LruCache::unbounded(),
            used: 0,
            capacity,
        }
    }

    /// A hit: `id` becomes the most recently used.
    pub fn touch(&mut self, id: &ObjectId) {
        self.order.promote(id);
    }

    /// Records `id` of `size` bytes as the most recently used and returns what must go so that
    /// the total stays within the capacity, least recently used first. An object larger than the
    /// whole capacity evicts itself.
    pub fn insert(&mut self, id: ObjectId, size: u64) -> Vec<ObjectId> {
        self.remove(&id);
        self.order.put(id, size);
        self.used += size;
        let mut evicted = Vec::new();
        while self.used > self.capacity {
            let Some((old, old_size)) = self.order.pop_lru() else {
                break;
            };
            self.used -= old_size;
            evicted.push(old);
        }
        evicted
    }

    pub fn remove(&mut self, id: &ObjectId) {
        if let Some(size) = self.order.pop(id) {
            self.used -= size;
        }
    }

    /// Bytes of all objects recorded.
    pub fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::key::CacheKey;

    fn id(n: u8) -> ObjectId {
        CacheKey::from_request(Some("h.example"), &format!("/{n}").parse().unwrap())
            .unwrap()
            .object_id([], &HeaderMap::new())
    }

    #[test]
    fn evicts_least_recently_used_until_under_capacity() {
        let mut lru = Lru::new(100);
        assert!(lru.insert(id(1), 40).is_empty());
        assert!(lru.insert(id(2), 40).is_empty());
        lru.touch(&id(1));
        assert_eq!(lru.insert(id(3), 40), [id(2)]);
        assert_eq!(lru.used(), 80);
        assert_eq!(lru.insert(id(4), 90), [id(1), id(3)]);
        assert_eq!(lru.used(), 90);
        // Re-inserting replaces the old size instead of counting it twice.
        assert!(lru.insert(id(4), 50).is_empty());
        assert_eq!(lru.used(), 50);
        assert_eq!(lru.insert(id(5), 200), [id(4), id(5)]);
        assert_eq!(lru.used(), 0);
    }
}
