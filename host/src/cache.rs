//! The on-disk cache of precompiled components, keyed by (digest, engine compatibility hash).
//!
//! Layout: `<root>/<engine hash>/<digest hex>.cwasm`. Each file is `MAGIC`, the source digest,
//! the sha256 of the artifact, then the artifact. Files are written to a temporary name, synced,
//! renamed into place and the directory synced, so a crash leaves the old file or the new one,
//! never half of one. A file that fails verification is deleted and the component recompiled.

use crate::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"GANTRYC1";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// Precompiled artifacts for one engine configuration.
#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ArtifactCache {
    /// Open (creating it if needed) the cache under `root` for artifacts of `engine`.
    pub fn open(root: &Path, engine: &wasmtime::Engine) -> io::Result<Self> {
        let dir = root.join(engine_key(engine));
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    /// The verified artifact for `digest`, or `None` when there is none or it does not verify
    /// (in which case the file is removed).
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        let path = self.path(digest);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached artifact");
                return None;
            }
        };
        if verify(&bytes, digest) {
            bytes.drain(..HEADER);
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), "cached artifact failed verification; recompiling");
        let _ = fs::remove_file(&path);
        None
    }

    /// Store the artifact for `digest` atomically.
    pub fn put(&self, digest: &Digest, artifact: &[u8]) -> io::Result<()> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(format!(".{}.{}.{n}.tmp", digest.hex(), std::process::id()));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(digest.as_bytes())?;
            file.write_all(&Sha256::digest(artifact))?;
            file.write_all(artifact)?;
            file.sync_all()?;
            fs::rename(&temp, self.path(digest))?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// The directory holding this engine's artifacts.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn verify(bytes: &[u8], digest: &Digest) -> bool {
    bytes.len() > HEADER
        && &bytes[..8] == MAGIC
        && bytes[8..40] == digest.as_bytes()[..]
        && bytes[40..72] == Sha256::digest(&bytes[HEADER..])[..]
}

/// A stable hex name for everything that makes an artifact loadable by `engine`: wasmtime's
/// version and the compilation settings.
fn engine_key(engine: &wasmtime::Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let root = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        let digest = Digest::of(b"component");
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, b"artifact bytes").unwrap();
        assert_eq!(cache.get(&digest).as_deref(), Some(&b"artifact bytes"[..]));

        // Another digest's artifact under this name does not verify.
        let other = Digest::of(b"other");
        fs::copy(cache.path(&digest), cache.path(&other)).unwrap();
        assert_eq!(cache.get(&other), None);
        assert!(!cache.path(&other).exists(), "a bad file is removed");

        // A flipped byte in the artifact does not verify.
        let mut bytes = fs::read(cache.path(&digest)).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(cache.path(&digest), bytes).unwrap();
        assert_eq!(cache.get(&digest), None);

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(cache.dir()).unwrap().collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
