//! Content-addressed blob storage for component bytes: the [`BlobStore`] trait (so an
//! S3-compatible object store can replace it) and [`FsBlobStore`], its local-disk form.
//!
//! Layout: `<root>/sha256/ab/<hex>`. A blob is written to a temporary file, synced, renamed
//! into place and its directory synced; reads verify the digest, so a damaged file is an error,
//! never wrong code.

use crate::durable::{sync_dir, write_atomic};
use crate::model::Digest;
use std::fs;
use std::io;
use std::path::PathBuf;

/// Where component bytes live, by digest.
pub trait BlobStore: Send + Sync {
    /// Store `bytes` under `digest` (which must be their sha256). Idempotent.
    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()>;
    /// The bytes of `digest`, verified, or `None` when absent.
    fn get(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>>;
    /// Remove `digest`; absent is not an error.
    fn delete(&self, digest: &Digest) -> io::Result<()>;
    /// Every digest stored, and remove leftovers of interrupted writes.
    fn sweep(&self) -> io::Result<Vec<Digest>>;
    /// Every digest stored, touching nothing (writes may be under way).
    fn digests(&self) -> io::Result<Vec<Digest>>;
    /// Whether the store answers (`/readyz`).
    fn check(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Blobs in a local directory.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into().join("sha256");
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if Digest::of(bytes) != *digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes do not match digest",
            ));
        }
        let path = self.path(digest);
        if fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(());
        }
        fs::create_dir_all(path.parent().expect("blob paths have a parent"))?;
        write_atomic(&path, bytes, 0o600)
    }

    fn get(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(digest)) {
            Ok(bytes) if Digest::of(&bytes) == *digest => Ok(Some(bytes)),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {digest} is damaged: its bytes no longer match the digest"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, digest: &Digest) -> io::Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("blob paths have a parent")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sweep(&self) -> io::Result<Vec<Digest>> {
        self.scan(true)
    }

    fn digests(&self) -> io::Result<Vec<Digest>> {
        self.scan(false)
    }

    fn check(&self) -> io::Result<()> {
        fs::metadata(&self.root).map(drop)
    }
}

impl FsBlobStore {
    /// The digests stored; with `sweep`, also remove the leftovers of interrupted writes.
    fn scan(&self, sweep: bool) -> io::Result<Vec<Digest>> {
        let mut found = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                match format!("sha256:{name}").parse::<Digest>() {
                    Ok(digest) => found.push(digest),
                    // Leftover of an interrupted write.
                    Err(_) if sweep && name.ends_with(".tmp") => fs::remove_file(&path)?,
                    Err(_) => {}
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        assert_eq!(store.get(&d).unwrap(), None);
        store.put(&d, b"hello").unwrap();
        store.put(&d, b"hello").unwrap();
        assert_eq!(store.get(&d).unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(store.put(&d, b"other").is_err(), "digest must match");

        let shard = store.path(&d).parent().unwrap().to_path_buf();
        fs::write(shard.join(".leftover.tmp"), b"x").unwrap();
        assert_eq!(store.sweep().unwrap(), vec![d]);
        assert!(!shard.join(".leftover.tmp").exists());

        fs::write(store.path(&d), b"hellO").unwrap();
        assert!(store.get(&d).is_err(), "damage is detected");
        store.delete(&d).unwrap();
        store.delete(&d).unwrap();
        assert_eq!(store.get(&d).unwrap(), None);
    }
}
