//! Object bodies mapped from their files, found again by address: a writer holding a slice of a
//! body can send it from the file with sendfile (the kernel references page-cache pages) instead
//! of copying it from the mapping into socket buffers.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

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
            .expect("mappings lock")
            .remove(&(self.0.as_ptr() as usize));
    }
}

/// Maps the first `len` bytes of the file at `path` (a body, never written again).
pub fn map(path: &Path, len: u64) -> io::Result<Bytes> {
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
        .expect("mappings lock")
        .insert(map.as_ptr() as usize, (map.len(), Arc::new(source)));
    Ok(Bytes::from_owner(Mapping(map)))
}

/// The file `bytes` were mapped from and their offset in it, if they lie within a mapped body.
pub fn source(bytes: &[u8]) -> Option<(Arc<Source>, u64)> {
    let start = bytes.as_ptr() as usize;
    let mappings = MAPPINGS.read().expect("mappings lock");
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
        let body = map(&path, 10).unwrap();
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
