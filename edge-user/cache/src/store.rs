//! Objects on disk. One file per object, `objects/<2 hex>/<id>`: the body from offset 0 (so
//! that a mapping of the file is the body, page-aligned), then the metadata as JSON, then a
//! fixed trailer (metadata length, body length, digest of the metadata, magic). A body is
//! written to `tmp/` and renamed into place only once complete, so a crash of the process at
//! any moment leaves either the whole object or none: what it wrote is in the page cache,
//! which outlives it. It is not synced (a sync per object was most of a stored miss's cost):
//! after a crash of the machine, a file cut short or not yet written back has a trailer that
//! does not match its length, and is never loaded. A revalidation (304) rewrites only the metadata and trailer, in place after the body,
//! which it never touches: an update cut short leaves a digest that does not match, and the
//! object is discarded at start rather than loaded with a mix of old and new headers.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use super::{
    key::{CacheKey, ObjectId},
    mapped,
    policy::Clock,
};

/// Version 2: the trailer has the metadata's digest. Files of version 1 are discarded at start.
const MAGIC: &[u8; 8] = b"EDGEOBJ2";
const TRAILER_LEN: u64 = 32;
/// Metadata larger than this is not ours.
const MAX_META_LEN: u64 = 1 << 20;
/// Bodies shorter than this are read into memory on their first use instead of mapped: every
/// mapping counts against the kernel's per-process limit (`vm.max_map_count`, 65,530 by
/// default), past which every mmap fails, the allocator's too, and a cache of small objects
/// reached it (edge aborted at about 65 k stored objects). Small bodies are written from memory
/// anyway; sendfile is for the large ones, whose mappings [`mapped`] bounds.
const MAPPED_MIN: u64 = 64 * 1024;

/// What travels with a body: the key, the response head as it will be served, and its policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Hex of the object id, checked against the file name on load.
    pub id: String,
    pub key: CacheKey,
    #[serde(with = "http_serde::status_code")]
    pub status: StatusCode,
    /// End-to-end headers of the origin's response, without Age.
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    /// When the response stops being fresh (for stale-while-revalidate and stale-if-error).
    pub fresh_until: SystemTime,
}

/// A complete stored object.
#[derive(Debug)]
pub struct Object {
    pub id: ObjectId,
    pub meta: Meta,
    pub body_len: u64,
    /// Bytes on disk, metadata included: what counts against the capacity.
    pub size: u64,
    path: PathBuf,
    /// Device and inode of the file: a metadata update writes only to this very file, never to
    /// one published over the path since.
    file: (u64, u64),
    /// A small body, read once on the first hit; every hit after shares it. Large ones are
    /// mapped, and the mappings kept by [`mapped`].
    body: OnceLock<Bytes>,
    /// Age and freshness from the time the object was loaded or stored, without parsing.
    clock: Option<Clock>,
    /// The response head of a plain hit, without Age: built once, cloned per hit.
    hit_head: OnceLock<HeaderMap>,
}

impl Object {
    fn new(
        id: ObjectId,
        meta: Meta,
        body_len: u64,
        size: u64,
        path: PathBuf,
        file: (u64, u64),
    ) -> Self {
        let clock = Clock::new(&meta.policy, SystemTime::now());
        Self {
            id,
            meta,
            body_len,
            size,
            path,
            file,
            body: OnceLock::new(),
            clock,
            hit_head: OnceLock::new(),
        }
    }

    /// This object under new metadata of `size` bytes in all, sharing the mapped body.
    fn with_meta(&self, meta: Meta, size: u64) -> Self {
        let object = Self::new(
            self.id,
            meta,
            self.body_len,
            size,
            self.path.clone(),
            self.file,
        );
        if let Some(body) = self.body.get() {
            let _ = object.body.set(body.clone());
        }
        object
    }

    /// The Age at `now` (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.clock
            .and_then(|clock| clock.age(now))
            .unwrap_or_else(|| self.meta.policy.age(now))
    }

    /// Whether the object is fresh at `now` for every request whose cache directives do not count
    /// ([`super::policy::Rules::plain_request`]), or `None` when that takes the full RFC 9111
    /// evaluation: the response varies, or the clock cannot tell.
    pub fn fresh_for_plain_request(&self, now: SystemTime) -> Option<bool> {
        if self.meta.headers.contains_key(header::VARY) {
            return None;
        }
        self.clock?.is_fresh(now)
    }

    /// The response head of a plain hit without Age, made by `build` on the first call.
    pub fn hit_head(&self, build: impl FnOnce(&Self) -> HeaderMap) -> &HeaderMap {
        self.hit_head.get_or_init(|| build(self))
    }

    /// The body as bytes: a large one over a read-only mapping of the file, so that serving it
    /// copies nothing into userspace buffers (the mapping outlives an eviction or purge that
    /// unlinks the file); a small one read once (see [`MAPPED_MIN`]).
    pub fn body(&self) -> io::Result<Bytes> {
        if self.body_len >= MAPPED_MIN {
            return mapped::body(&self.path, self.file, self.body_len);
        }
        if let Some(body) = self.body.get() {
            return Ok(body.clone());
        }
        let mut body = vec![0; self.body_len as usize];
        if self.body_len > 0 {
            File::open(&self.path)?.read_exact_at(&mut body, 0)?;
        }
        Ok(self.body.get_or_init(|| Bytes::from(body)).clone())
    }

    /// Whether `other` is stored in the same file.
    pub(crate) fn same_file(&self, other: &Self) -> bool {
        self.file == other.file
    }

    /// Stops keeping the body mapped: the file is gone, or going.
    pub(crate) fn release(&self) {
        if self.body_len >= MAPPED_MIN {
            mapped::forget(self.file);
        }
    }
}

/// The cache directory.
#[derive(Debug)]
pub struct Store {
    objects: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
}

impl Store {
    /// Opens (creating) `root`, discards unfinished writes and returns every valid object.
    pub fn open(root: &Path) -> io::Result<(Self, Vec<Object>)> {
        let store = Self {
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            next_tmp: AtomicU64::new(0),
        };
        if store.tmp.exists() {
            fs::remove_dir_all(&store.tmp)?;
        }
        fs::create_dir_all(&store.tmp)?;
        // Every shard up front: publishing an object is then one rename.
        for shard in 0..=255u8 {
            fs::create_dir_all(store.objects.join(format!("{shard:02x}")))?;
        }
        let mut objects = Vec::new();
        for shard in fs::read_dir(&store.objects)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                fs::remove_file(&shard)?;
                continue;
            }
            for entry in fs::read_dir(&shard)? {
                let path = entry?.path();
                match load(&path) {
                    Ok(object) => objects.push(object),
                    Err(error) => {
                        warn!(path = %path.display(), %error, "discarding invalid cache object");
                        fs::remove_file(&path)?;
                    }
                }
            }
        }
        Ok((store, objects))
    }

    /// A new object being written for `id`.
    pub fn writer(&self, id: ObjectId) -> io::Result<Writer> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}.{n}", id.to_hex()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(Writer {
            file: Arc::new(file),
            tmp: Some(tmp),
            path: self.path(id),
            id,
            written: 0,
        })
    }

    /// Gives `object` new metadata (after a revalidation): the metadata and trailer after its
    /// body are rewritten in place and synced; the body is neither copied nor written, and its
    /// mapping stays valid. Blocking.
    pub fn refresh(&self, object: &Object, mut meta: Meta) -> io::Result<Object> {
        let file = File::options().write(true).open(&object.path)?;
        let metadata = file.metadata()?;
        if (metadata.dev(), metadata.ino()) != object.file {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "replaced since it was stored",
            ));
        }
        meta.id = object.id.to_hex();
        let tail = tail(&meta, object.body_len)?;
        file.write_all_at(&tail, object.body_len)?;
        let size = object.body_len + tail.len() as u64;
        file.set_len(size)?;
        file.sync_data()?;
        Ok(object.with_meta(meta, size))
    }

    /// Unlinks a stored object; readers holding its mapping keep it.
    pub fn remove(&self, object: &Object) {
        object.release();
        if let Err(error) = fs::remove_file(&object.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %object.path.display(), %error, "removing cache object");
        }
    }

    fn path(&self, id: ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.objects.join(&hex[..2]).join(hex)
    }
}

/// A body being written to `tmp/`. Dropped before it is published, it removes its file.
#[derive(Debug)]
pub struct Writer {
    file: Arc<File>,
    tmp: Option<PathBuf>,
    path: PathBuf,
    id: ObjectId,
    written: u64,
}

impl Writer {
    /// The file being written, for readers that stream it while it grows.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn append(&mut self, chunk: Bytes) -> io::Result<()> {
        let file = self.file.clone();
        let offset = self.written;
        let len = chunk.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&chunk, offset))
            .await
            .map_err(io::Error::other)??;
        self.written += len;
        Ok(())
    }

    /// Appends the metadata: the object is complete but not yet visible.
    pub async fn finish(self, meta: Meta) -> io::Result<Sealed> {
        tokio::task::spawn_blocking(move || self.finish_blocking(meta))
            .await
            .map_err(io::Error::other)?
    }

    /// Writes a whole (small) body and its metadata at once, in one trip to a blocking thread
    /// where [`Self::append`] and [`Self::finish`] take one each.
    pub async fn finish_whole(mut self, body: Bytes, meta: Meta) -> io::Result<Sealed> {
        tokio::task::spawn_blocking(move || {
            self.file.write_all_at(&body, self.written)?;
            self.written += body.len() as u64;
            self.finish_blocking(meta)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn finish_blocking(self, mut meta: Meta) -> io::Result<Sealed> {
        meta.id = self.id.to_hex();
        let tail = tail(&meta, self.written)?;
        self.file.write_all_at(&tail, self.written)?;
        let metadata = self.file.metadata()?;
        let object = Object::new(
            self.id,
            meta,
            self.written,
            self.written + tail.len() as u64,
            self.path.clone(),
            (metadata.dev(), metadata.ino()),
        );
        Ok(Sealed {
            writer: self,
            object,
        })
    }
}

/// A complete object in `tmp/`, made visible by [`Sealed::publish`]; dropped, it is removed.
#[derive(Debug)]
pub struct Sealed {
    writer: Writer,
    object: Object,
}

impl Sealed {
    pub fn id(&self) -> ObjectId {
        self.object.id
    }

    /// Bytes it will take in the cache directory.
    pub fn size(&self) -> u64 {
        self.object.size
    }

    /// Renames the file into place: from now on the object is found, whole, after any restart
    /// of the process.
    pub fn publish(mut self) -> io::Result<Object> {
        let tmp = self.writer.tmp.as_ref().expect("a sealed object is in tmp");
        if let Err(error) = fs::rename(tmp, &self.object.path) {
            // Its shard was removed while running: made again, once.
            let parent = self.object.path.parent();
            if error.kind() != io::ErrorKind::NotFound || parent.is_none_or(Path::exists) {
                return Err(error);
            }
            fs::create_dir_all(parent.expect("checked"))?;
            fs::rename(tmp, &self.object.path)?;
        }
        self.writer.tmp = None;
        Ok(self.object)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// What follows a body of `body_len` bytes: the metadata as JSON, then the trailer.
fn tail(meta: &Meta, body_len: u64) -> io::Result<Vec<u8>> {
    let mut tail = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let digest = digest(&tail);
    tail.extend_from_slice(&(tail.len() as u64).to_le_bytes());
    tail.extend_from_slice(&body_len.to_le_bytes());
    tail.extend_from_slice(&digest);
    tail.extend_from_slice(MAGIC);
    Ok(tail)
}

/// The first 8 bytes of the metadata's SHA-256: tells a torn metadata update from a whole one.
fn digest(json: &[u8]) -> [u8; 8] {
    Sha256::digest(json)[..8].try_into().expect("8 of 32 bytes")
}

/// Reads and checks one object file.
fn load(path: &Path) -> io::Result<Object> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let id = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(ObjectId::from_hex)
        .ok_or_else(|| invalid("not an object file name"))?;
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    let size = metadata.len();
    if size < TRAILER_LEN {
        return Err(invalid("too short"));
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, size - TRAILER_LEN)?;
    let meta_len = u64::from_le_bytes(trailer[..8].try_into().unwrap());
    let body_len = u64::from_le_bytes(trailer[8..16].try_into().unwrap());
    if &trailer[24..] != MAGIC
        || meta_len > MAX_META_LEN
        || body_len.checked_add(meta_len + TRAILER_LEN) != Some(size)
    {
        return Err(invalid("trailer does not match the file"));
    }
    let mut json = vec![0; meta_len as usize];
    file.read_exact_at(&mut json, body_len)?;
    if digest(&json) != trailer[16..24] {
        return Err(invalid("metadata does not match its digest"));
    }
    let meta: Meta = serde_json::from_slice(&json).map_err(|error| invalid(&error.to_string()))?;
    if meta.id != id.to_hex() {
        return Err(invalid("metadata belongs to another object"));
    }
    Ok(Object::new(
        id,
        meta,
        body_len,
        size,
        path.to_path_buf(),
        (metadata.dev(), metadata.ino()),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::policy::{RequestDirectives, Rules};

    pub(crate) fn meta(key: &CacheKey) -> Meta {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Ignore);
        let request = rules.view(key.uri(), key.host(), &HeaderMap::new());
        let (mut response, ()) = http::Response::new(()).into_parts();
        response
            .headers
            .insert("cache-control", HeaderValue::from_static("max-age=60"));
        // A fixed time: the stored metadata's length must not depend on the clock's digits.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let policy = rules.storable(&request, &response, at).unwrap();
        Meta {
            id: String::new(),
            key: key.clone(),
            status: StatusCode::OK,
            headers: response.headers,
            policy,
            fresh_until: at,
        }
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::from_request(Some("h.example"), &path.parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn objects_survive_reopening_and_bad_files_do_not() {
        let dir = tempdir("reopen");
        let (store, objects) = Store::open(&dir).unwrap();
        assert!(objects.is_empty());
        let key = key("/a");
        let id = key.object_id([], &HeaderMap::new());
        let mut writer = store.writer(id).unwrap();
        writer.append(Bytes::from_static(b"hello ")).await.unwrap();
        writer.append(Bytes::from_static(b"world")).await.unwrap();
        let object = writer.finish(meta(&key)).await.unwrap().publish().unwrap();
        assert_eq!(&object.body().unwrap()[..], b"hello world");

        // An unfinished write, a truncated object and a stray file are all discarded.
        let mut unfinished = store
            .writer(key.object_id(["x"], &HeaderMap::new()))
            .unwrap();
        unfinished
            .append(Bytes::from_static(b"partial"))
            .await
            .unwrap();
        std::mem::forget(unfinished);
        let truncated = store.path(ObjectId::from_hex(&"ab".repeat(32)).unwrap());
        fs::create_dir_all(truncated.parent().unwrap()).unwrap();
        fs::copy(&object.path, &truncated).unwrap();
        let len = fs::metadata(&truncated).unwrap().len();
        File::options()
            .write(true)
            .open(&truncated)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        fs::write(dir.join("objects/ab/stray"), b"x").unwrap();

        let (_, objects) = Store::open(&dir).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].id, id);
        assert_eq!(objects[0].meta.key, key);
        assert_eq!(&objects[0].body().unwrap()[..], b"hello world");
        assert!(!truncated.exists());
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn dropped_writer_leaves_nothing_and_refresh_touches_only_the_metadata() {
        let dir = tempdir("refresh");
        let (store, _) = Store::open(&dir).unwrap();
        let key = key("/b");
        let id = key.object_id([], &HeaderMap::new());
        let mut writer = store.writer(id).unwrap();
        writer.append(Bytes::from_static(b"abc")).await.unwrap();
        drop(writer);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(!store.path(id).exists());

        let mut writer = store.writer(id).unwrap();
        writer.append(Bytes::from_static(b"body")).await.unwrap();
        let object = writer.finish(meta(&key)).await.unwrap().publish().unwrap();
        let mapped = object.body().unwrap();
        let inode = fs::metadata(&object.path).unwrap().ino();
        let mut longer = meta(&key);
        let long = HeaderValue::try_from("n".repeat(5000)).unwrap();
        longer.headers.insert("x-new", long);
        let refreshed = store.refresh(&object, longer).unwrap();
        assert_eq!(&refreshed.body().unwrap()[..], b"body");
        assert_eq!(&mapped[..], b"body", "the mapping stays valid");
        assert_eq!(
            fs::metadata(&object.path).unwrap().ino(),
            inode,
            "same file"
        );
        assert!(refreshed.size > object.size + 5000);
        let (_, objects) = Store::open(&dir).unwrap();
        assert!(objects[0].meta.headers.contains_key("x-new"));
        // Shorter metadata: the file shrinks to it, and still loads.
        let shorter = store.refresh(&refreshed, meta(&key)).unwrap();
        assert_eq!(fs::metadata(&object.path).unwrap().len(), shorter.size);
        assert_eq!(shorter.size, object.size);
        let (_, objects) = Store::open(&dir).unwrap();
        assert_eq!(objects.len(), 1);
        assert!(!objects[0].meta.headers.contains_key("x-new"));
        assert_eq!(&objects[0].body().unwrap()[..], b"body");

        // A file published over the path since is not updated with the old object's metadata.
        let mut writer = store.writer(id).unwrap();
        writer.append(Bytes::from_static(b"newer")).await.unwrap();
        let newer = writer.finish(meta(&key)).await.unwrap().publish().unwrap();
        assert!(store.refresh(&shorter, meta(&key)).is_err());

        // An update cut short (metadata changed, trailer not) is never loaded, even when what
        // was written still parses.
        let bytes = fs::read(&newer.path).unwrap();
        let at = bytes.windows(10).position(|w| w == b"max-age=60").unwrap();
        let file = File::options().write(true).open(&newer.path).unwrap();
        file.write_all_at(b"max-age=99", at as u64).unwrap();
        let (_, objects) = Store::open(&dir).unwrap();
        assert!(objects.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    pub(crate) fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edge-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
