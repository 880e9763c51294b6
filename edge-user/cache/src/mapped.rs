//! Object bodies mapped from their files, found again by address: a writer holding a slice of a
//! body can send it from the file with sendfile (the kernel references page-cache pages) instead
//! of copying it from the mapping into socket buffers.
//!
//! Mappings are kept for later hits in a least-recently-used set of at most [`set_budget`] bodies,
//! not for an object's life: every mapping counts against the kernel's per-process limit
//! (`vm.max_map_count`, 65,530 by default), past which every mmap fails, the allocator's too, and
//! the process aborts. A body pushed out is unmapped once the last response sending it is done.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    num::NonZeroUsize,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use bytes::Bytes;
use lru::LruCache;
use memmap2::{Mmap, MmapOptions};

/// How many bodies stay mapped between responses unless [`set_budget`] says otherwise: a quarter
/// of the default `vm.max_map_count`, leaving the rest to the allocator, thread stacks, libraries
/// and the mappings of responses in flight.
pub const DEFAULT_BUDGET: usize = 16_384;

/// Bodies kept mapped, by file (device, inode), least recently used first out.
type Kept = LruCache<(u64, u64), Bytes>;

/// The bodies kept mapped; made with the default budget on first use.
static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// Runs `f` on the kept bodies, under their lock. What it returns is dropped by the caller,
/// after the lock: unmapping a body pushed out does not hold it.
fn with_kept<T>(f: impl FnOnce(&mut Kept) -> T) -> T {
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    f(kept
        .get_or_insert_with(|| LruCache::new(NonZeroUsize::new(DEFAULT_BUDGET).expect("above 0"))))
}

/// Sets how many bodies stay mapped between responses; the least recently used beyond it are
/// unmapped now (or when the responses sending them finish).
pub fn set_budget(budget: NonZeroUsize) {
    // Those pushed out go with the vector, after the lock.
    let _pushed_out: Vec<Bytes> = with_kept(|kept| {
        let mut pushed_out = Vec::new();
        while kept.len() > budget.get() {
            pushed_out.extend(kept.pop_lru().map(|(_, body)| body));
        }
        kept.resize(budget);
        pushed_out
    });
}

/// Bodies mapped now: those kept, and those only responses in flight still hold.
pub fn count() -> usize {
    MAPPINGS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

/// The body of the file `file` (device, inode) at `path`: its kept mapping, or a new one that is
/// kept in place of the least recently used.
pub fn body(path: &Path, file: (u64, u64), len: u64) -> io::Result<Bytes> {
    if let Some(body) = with_kept(|kept| kept.get(&file).cloned()) {
        return Ok(body);
    }
    // Mapped without the lock held; two first hits at once may both map, and one mapping wins.
    let (body, mapped) = map(path, len)?;
    // A newer object published over the path since: not this object's body.
    if mapped != file {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "replaced since it was stored",
        ));
    }
    // The one pushed out is unmapped (if no response holds it) after the lock is released.
    let _pushed_out = with_kept(|kept| kept.push(file, body.clone()));
    Ok(body)
}

/// Stops keeping the mapping of `file` (device, inode), once its object is removed: its disk
/// space is freed when the responses still sending it finish.
pub fn forget(file: (u64, u64)) {
    let _forgotten = with_kept(|kept| kept.pop(&file));
}

/// Start address → length and file of every live mapping.
static MAPPINGS: RwLock<BTreeMap<usize, (usize, Arc<Source>)>> = RwLock::new(BTreeMap::new());

/// Where a mapping's bytes are on disk. The file is named, not held open, so that mapped
/// objects cost no file descriptors; a publish may have replaced the path since, so the inode
/// says whether it is still the same file.
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    device: u64,
    inode: u64,
}

impl Source {
    /// Opens the file, if the path still names the file that was mapped.
    pub fn open(&self) -> io::Result<File> {
        let file = File::open(&self.path)?;
        let metadata = file.metadata()?;
        if (metadata.dev(), metadata.ino()) != (self.device, self.inode) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "replaced since it was mapped",
            ));
        }
        Ok(file)
    }
}

/// A read-only mapping of a whole file, registered while it lives.
struct Mapping(Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        MAPPINGS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.0.as_ptr() as usize));
    }
}

/// Maps the first `len` bytes of the file at `path` (a body, never written again); returns them
/// with the file's device and inode.
fn map(path: &Path, len: u64) -> io::Result<(Bytes, (u64, u64))> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if metadata.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "object shrank",
        ));
    }
    // SAFETY: the file is ours, and its first `len` bytes (the body) are never written after
    // the rename that published it, nor truncated: a metadata update rewrites only what follows
    // them. Eviction unlinks the file, which leaves the mapping valid.
    let map = unsafe { MmapOptions::new().len(len as usize).map(&file)? };
    let source = Source {
        path: path.to_path_buf(),
        device: metadata.dev(),
        inode: metadata.ino(),
    };
    MAPPINGS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(map.as_ptr() as usize, (map.len(), Arc::new(source)));
    Ok((
        Bytes::from_owner(Mapping(map)),
        (metadata.dev(), metadata.ino()),
    ))
}

/// The file `bytes` were mapped from and their offset in it, if they lie within a mapped body.
pub fn source(bytes: &[u8]) -> Option<(Arc<Source>, u64)> {
    let start = bytes.as_ptr() as usize;
    let mappings = MAPPINGS.read().unwrap_or_else(PoisonError::into_inner);
    let (&base, (len, source)) = mappings.range(..=start).next_back()?;
    (start + bytes.len() <= base + len).then(|| (source.clone(), (start - base) as u64))
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::FileExt as _};

    use super::*;

    #[test]
    fn slices_of_a_mapped_body_name_their_file_and_offset() {
        let path = std::env::temp_dir().join(format!("edge-mapped-{}", std::process::id()));
        fs::write(&path, b"0123456789meta").unwrap();
        let (body, _) = map(&path, 10).unwrap();
        assert_eq!(&body[..], b"0123456789");
        let part = body.slice(3..7);
        let (source, offset) = source(&part).unwrap();
        assert_eq!(offset, 3);
        let mut read = [0; 4];
        source
            .open()
            .unwrap()
            .read_exact_at(&mut read, offset)
            .unwrap();
        assert_eq!(&read, b"3456");
        assert_eq!(super::source(b"elsewhere"), None);
        // A file published over the path since is not the mapped one.
        let newer = path.with_extension("new");
        fs::write(&newer, b"abcdefghijmeta").unwrap();
        fs::rename(&newer, &path).unwrap();
        assert!(source.open().is_err());
        fs::remove_file(&path).unwrap();
        let start = body.as_ptr() as usize;
        drop((body, part));
        assert!(
            MAPPINGS.read().unwrap().get(&start).is_none(),
            "unregistered when the last slice goes"
        );
    }
}
