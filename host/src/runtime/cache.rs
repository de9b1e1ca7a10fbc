//! The on-disk cache of precompiled components, keyed by (digest, engine compatibility hash).
//!
//! What is read from here is handed to `Component::deserialize`, which runs it as native code,
//! so nothing is trusted because of where it lies:
//! - every artifact carries an HMAC-SHA256 under a 32-byte key the host keeps in `<root>/key`
//!   (0600), over the engine's compatibility hash, the source digest and the artifact; a file
//!   that does not verify — damaged, written by another host or forged — is deleted and the
//!   component recompiled;
//! - the cache directories are created 0700, and a cache or key that another user owns or may
//!   write is refused: nobody but the host can replace the key or plant files.
//!
//! Layout: `<root>/key`, `<root>/<engine hash>/<digest hex>.cwasm`. Each file is `MAGIC`, the
//! source digest, the HMAC, then the artifact, written atomically ([`durable::write_atomic`]).

use crate::durable;
use crate::model::Digest;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"GANTRYC2";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// Precompiled artifacts for one engine configuration.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ArtifactCache {
    /// Open (creating it if needed) the cache under `root` for artifacts of `engine`.
    pub fn open(root: &Path, engine: &wasmtime::Engine) -> io::Result<Self> {
        durable::private_dir(root)?;
        let (key, _) = durable::key_file(&root.join("key"), 32)?;
        let engine = engine_key(engine);
        let dir = root.join(&engine);
        durable::private_dir(&dir)?;
        Ok(Self { dir, engine, key })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    fn mac(&self, digest: &Digest, artifact: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"gantry artifact\0");
        mac.update(self.engine.as_bytes());
        mac.update(digest.as_bytes());
        mac.update(artifact);
        mac.finalize().into_bytes().into()
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
        if self.verify(&bytes, digest) {
            bytes.drain(..HEADER);
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(),
            "cached artifact failed verification (damaged, or not written by this host); recompiling");
        let _ = fs::remove_file(&path);
        None
    }

    /// Store the artifact for `digest` atomically.
    pub fn put(&self, digest: &Digest, artifact: &[u8]) -> io::Result<()> {
        let mut file = Vec::with_capacity(HEADER + artifact.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(digest.as_bytes());
        file.extend_from_slice(&self.mac(digest, artifact));
        file.extend_from_slice(artifact);
        durable::write_atomic(&self.path(digest), &file, 0o600)
    }

    fn verify(&self, bytes: &[u8], digest: &Digest) -> bool {
        if bytes.len() <= HEADER || &bytes[..8] != MAGIC || bytes[8..40] != digest.as_bytes()[..] {
            return false;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"gantry artifact\0");
        mac.update(self.engine.as_bytes());
        mac.update(digest.as_bytes());
        mac.update(&bytes[HEADER..]);
        // Constant-time comparison.
        mac.verify_slice(&bytes[40..72]).is_ok()
    }

    /// The directory holding this engine's artifacts.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
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

    #[test]
    fn an_artifact_made_without_the_key_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        let digest = Digest::of(b"component");
        // A forger who can write the file but not read the key: a well-formed file whose MAC
        // was made with another key (or with none, like the old unkeyed sha256).
        let forger = ArtifactCache {
            dir: cache.dir.clone(),
            engine: cache.engine.clone(),
            key: vec![7; 32],
        };
        forger.put(&digest, b"other native code").unwrap();
        assert_eq!(cache.get(&digest), None);
        let mut unkeyed = MAGIC.to_vec();
        unkeyed.extend_from_slice(digest.as_bytes());
        unkeyed.extend_from_slice(&Sha256::digest(b"other native code"));
        unkeyed.extend_from_slice(b"other native code");
        fs::write(cache.path(&digest), unkeyed).unwrap();
        assert_eq!(cache.get(&digest), None);
    }
}
