//! The on-disk cache of precompiled components, keyed by (digest, engine compatibility hash).
//!
//! What is read from here is handed to `Component::deserialize_file`, which runs it as native
//! code, so nothing is trusted because of where it lies:
//! - every artifact carries a MAC — keyed BLAKE3, under a 32-byte key the host keeps in
//!   `<root>/key` (0600) — over the engine's compatibility hash, the source digest and the
//!   artifact; a file that does not verify — damaged, written by another host or forged — is
//!   deleted and the component recompiled. (A restart's first call waits on this check: keyed
//!   BLAKE3 hashes a 30 MiB artifact, what a Python connector compiles to, in ~7 ms on one core
//!   of a 2-core machine, where the HMAC-SHA256 it replaced took ~17; it is read from a mapping
//!   of the file and hashed on every core.)
//! - the cache directories are created 0700, and a cache or key that another user owns or may
//!   write is refused: nobody but the host can replace the key or plant files.
//!
//! Layout: `<root>/key`, `<root>/<engine hash>/<digest hex>.cwasm`. Each file is the artifact
//! followed by a trailer — `MAGIC`, the source digest, the MAC — written atomically
//! ([`durable::write_atomic`]). The artifact comes first, at offset 0, so that once verified
//! wasmtime maps the file itself (`Component::deserialize_file`): no copy of it is made, and
//! the memory images of its modules are mapped copy-on-write from the file rather than copied
//! into memory first (a 30 MiB Python artifact deserialises in ~3 ms instead of ~23).
//!
//! A verified artifact is then **sealed**, so that a restart need not hash it again: next to it,
//! `<digest hex>.seal` holds a keyed BLAKE3 MAC over the artifact file's identity — device,
//! inode, size and change time — and the connector's `describe()` answer, followed by that
//! answer. While the seal verifies, the file is the one that was hashed, unchanged since (any
//! write, rename over it or metadata change gives it another inode or change time, which no one
//! but root can set back), and the connector is loaded from it without hashing it or running
//! `describe()` again: a 30 MiB Python artifact's restart → first call drops by the ~5 ms of the
//! hash and the ~2 ms of `describe()`. Only files whose change time is at least
//! [`SETTLED`] old are sealed, so that a later change cannot fall within the same tick of the
//! file system's clock. A seal that does not verify is ignored (the artifact is hashed whole, as
//! without one) and replaced.
//!
//! The cache holds at most `max_bytes` of artifacts: past it, the least recently used are
//! removed (a use is a write or a verified read; across restarts, the modification time of a
//! file or of its seal stands for its last use — the artifact itself is never touched, which
//! would change its change time). Removing one only costs a compile when it is loaded again.

use crate::durable;
use crate::model::{Description, Digest};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 8] = b"GANTRYC4";
const TRAILER: usize = MAGIC.len() + 32 + 32;

/// How old a cached artifact's change time must be before it is sealed: older than any file
/// system's timestamp tick, so that a change after the seal gives the file another change
/// time. A compile's artifact is sealed this long after it is written.
pub const SETTLED: Duration = Duration::from_secs(2);

/// A verified artifact: its file, and how it was verified.
#[derive(Debug, PartialEq)]
pub(crate) struct Cached {
    pub path: PathBuf,
    pub verified: Verified,
}

/// How a cached artifact was verified.
#[derive(Debug, PartialEq)]
pub(crate) enum Verified {
    /// On its seal, which holds its `describe()` answer: nothing was hashed and `describe()`
    /// need not run again.
    Sealed(Description),
    /// Hashed whole: the file as it was hashed, for [`ArtifactCache::seal`] once described.
    Hashed(Identity),
}

/// A file as the file system knows it: the same identity means the same, unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    /// The change time, seconds and nanoseconds.
    changed: (i64, i64),
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the last change is at least `age` ago.
    fn settled(&self, age: Duration) -> bool {
        let changed = Duration::new(self.changed.0.max(0) as u64, self.changed.1 as u32);
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH + changed)
            .is_ok_and(|since| since >= age)
    }
}

/// Precompiled artifacts for one engine configuration.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine: String,
    key: [u8; 32],
    max_bytes: u64,
    /// How old a change time must be to be sealed ([`SETTLED`]; tests shorten it).
    settled: Duration,
    index: Mutex<Index>,
}

/// The files of the cache: size and last use of each, and their total size.
#[derive(Default)]
struct Index {
    files: HashMap<Digest, (u64, u64)>,
    bytes: u64,
    /// The clock of uses: larger is more recent.
    clock: u64,
}

impl Index {
    fn touch(&mut self, digest: Digest, size: u64) {
        self.clock += 1;
        if let Some((old, _)) = self.files.insert(digest, (size, self.clock)) {
            self.bytes -= old;
        }
        self.bytes += size;
    }

    fn forget(&mut self, digest: &Digest) {
        if let Some((size, _)) = self.files.remove(digest) {
            self.bytes -= size;
        }
    }

    /// The least recently used digest other than `keep`.
    fn oldest(&self, keep: &Digest) -> Option<Digest> {
        self.files
            .iter()
            .filter(|(digest, _)| *digest != keep)
            .min_by_key(|(_, (_, used))| *used)
            .map(|(digest, _)| *digest)
    }
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ArtifactCache {
    /// Open (creating it if needed) the cache under `root` for artifacts of `engine`, holding
    /// at most `max_bytes` (trimmed now if it holds more).
    pub fn open(root: &Path, engine: &wasmtime::Engine, max_bytes: u64) -> io::Result<Self> {
        durable::private_dir(root)?;
        let (key, _) = durable::key_file(&root.join("key"), 32)?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| io::Error::other("the cache key is not 32 bytes"))?;
        let engine = engine_key(engine);
        let dir = root.join(&engine);
        durable::private_dir(&dir)?;
        // What is there, oldest use first.
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".cwasm")) else {
                continue;
            };
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            let meta = entry.metadata()?;
            let modified = |meta: &fs::Metadata| meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let sealed = fs::metadata(dir.join(format!("{hex}.seal")));
            let used = sealed.map_or(modified(&meta), |seal| modified(&seal).max(modified(&meta)));
            found.push((used, digest, meta.len()));
        }
        found.sort();
        let mut index = Index::default();
        for (_, digest, size) in found {
            index.touch(digest, size);
        }
        let cache = Self {
            dir,
            engine,
            key,
            max_bytes,
            settled: SETTLED,
            index: Mutex::new(index),
        };
        cache.trim(None);
        Ok(cache)
    }

    /// Remove the least recently used artifacts (never `keep`) until the cache fits.
    fn trim(&self, keep: Option<&Digest>) {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let none = Digest::of(b"");
        while index.bytes > self.max_bytes {
            let Some(oldest) = index.oldest(keep.unwrap_or(&none)) else {
                break;
            };
            index.forget(&oldest);
            let _ = fs::remove_file(self.seal_path(&oldest));
            match fs::remove_file(self.path(&oldest)) {
                Ok(()) => {
                    tracing::info!(digest = %oldest, "artifact cache full: removed the least recently used")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(digest = %oldest, error = %e, "cannot remove a cached artifact")
                }
            }
        }
    }

    /// Bytes of artifacts held now.
    pub fn bytes(&self) -> u64 {
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    fn seal_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.seal", digest.hex()))
    }

    fn mac(&self, digest: &Digest, artifact: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(b"gantry artifact\0");
        mac.update(self.engine.as_bytes());
        mac.update(digest.as_bytes());
        // A restart's first call waits on this: every core takes a share (~2× on 2 cores for
        // a 30 MiB artifact; blake3 splits only inputs large enough to gain).
        mac.update_rayon(artifact);
        mac.finalize()
    }

    /// `digest`'s verified artifact — on its seal when that verifies, else hashed whole — or
    /// `None` when there is none or it does not verify (in which case the file is removed).
    /// wasmtime reads only the artifact in the file: the trailer follows the ELF image it
    /// parses.
    pub fn get(&self, digest: &Digest) -> Option<Cached> {
        let path = self.path(digest);
        let verified = match self.unseal(&path, digest) {
            Some((size, description)) => Ok(Some((size, Verified::Sealed(description)))),
            None => self
                .hash_whole(&path, digest)
                .map(|hashed| hashed.map(|identity| (identity.len, Verified::Hashed(identity)))),
        };
        let (size, verified) = match verified {
            Ok(Some(verified)) => verified,
            Ok(None) => {
                tracing::warn!(path = %path.display(),
                    "cached artifact failed verification (damaged, or not written by this host); recompiling");
                let _ = fs::remove_file(self.seal_path(digest));
                let _ = fs::remove_file(&path);
                self.index
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .forget(digest);
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached artifact");
                return None;
            }
        };
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(*digest, size);
        // The use survives a restart as the seal's modification time.
        if matches!(verified, Verified::Sealed(_))
            && let Ok(seal) = fs::File::options().write(true).open(self.seal_path(digest))
        {
            let _ = seal.set_modified(SystemTime::now());
        }
        Some(Cached { path, verified })
    }

    /// Seal `digest`'s artifact, `hashed` whole, with what its `describe()` answers: when the
    /// file is still the one hashed and its change time has settled (else it stays unsealed and
    /// is hashed on its next load). Failing to seal only costs that.
    pub fn seal(&self, digest: &Digest, hashed: &Identity, description: &Description) {
        let result = (|| {
            let now = Identity::of(&fs::metadata(self.path(digest))?);
            if now == *hashed && now.settled(self.settled) {
                let text = serde_json::to_vec(description)?;
                let mut seal = self.seal_mac(digest, &now, &text).as_bytes().to_vec();
                seal.extend_from_slice(&text);
                durable::write_atomic(&self.seal_path(digest), &seal, 0o600)?;
            }
            io::Result::Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(%digest, error = %e, "cannot seal a cached artifact");
        }
    }

    /// Hash `digest`'s artifact whole and seal it with `description`: what a compile's artifact
    /// gets once it has settled, so that even the first restart after it loads on a seal.
    pub fn verify_and_seal(&self, digest: &Digest, description: &Description) {
        match self.hash_whole(&self.path(digest), digest) {
            Ok(Some(hashed)) => self.seal(digest, &hashed, description),
            Ok(None) => tracing::warn!(%digest, "a cached artifact no longer verifies"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%digest, error = %e, "cannot read cached artifact"),
        }
    }

    /// The size of the file at `path` and the `describe()` answer its seal holds, when its
    /// seal verifies.
    fn unseal(&self, path: &Path, digest: &Digest) -> Option<(u64, Description)> {
        let seal = fs::read(self.seal_path(digest)).ok()?;
        let file = Identity::of(&fs::metadata(path).ok()?);
        let (mac, text) = seal.split_at_checked(32)?;
        let stored: [u8; 32] = mac.try_into().ok()?;
        if file.len <= TRAILER as u64 || self.seal_mac(digest, &file, text) != stored {
            return None;
        }
        serde_json::from_slice(text)
            .ok()
            .map(|description| (file.len, description))
    }

    /// The MAC of a seal: the artifact file's identity and the `describe()` answer (`text`).
    fn seal_mac(&self, digest: &Digest, file: &Identity, text: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(b"gantry seal\0");
        mac.update(self.engine.as_bytes());
        mac.update(digest.as_bytes());
        for n in [file.dev, file.ino, file.len] {
            mac.update(&n.to_le_bytes());
        }
        mac.update(&file.changed.0.to_le_bytes());
        mac.update(&file.changed.1.to_le_bytes());
        mac.update(text);
        mac.finalize()
    }

    /// The identity of the file at `path` when its artifact, hashed whole, verifies for
    /// `digest`.
    fn hash_whole(&self, path: &Path, digest: &Digest) -> io::Result<Option<Identity>> {
        let file = fs::File::open(path)?;
        // Of the very file mapped and hashed.
        let identity = Identity::of(&file.metadata()?);
        if identity.len <= TRAILER as u64 {
            return Ok(None);
        }
        // SAFETY: a private read-only mapping of a file that is only ever replaced whole (by
        // rename), never written in place, in a directory only this user may write: its bytes
        // do not change under the slice while it is read.
        // Populated at once: faulting 30 MiB in page by page costs more than hashing it.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        Ok(self.verify(&map, digest).then_some(identity))
    }

    /// Store the artifact for `digest` atomically.
    pub fn put(&self, digest: &Digest, artifact: &[u8]) -> io::Result<()> {
        let mut file = Vec::with_capacity(artifact.len() + TRAILER);
        file.extend_from_slice(artifact);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(digest.as_bytes());
        file.extend_from_slice(self.mac(digest, artifact).as_bytes());
        durable::write_atomic(&self.path(digest), &file, 0o600)?;
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(*digest, file.len() as u64);
        self.trim(Some(digest));
        Ok(())
    }

    fn verify(&self, bytes: &[u8], digest: &Digest) -> bool {
        let Some(split) = bytes.len().checked_sub(TRAILER).filter(|&n| n > 0) else {
            return false;
        };
        let (artifact, trailer) = bytes.split_at(split);
        if &trailer[..8] != MAGIC || trailer[8..40] != digest.as_bytes()[..] {
            return false;
        }
        let stored: [u8; 32] = trailer[40..72].try_into().expect("32 bytes");
        // `Hash`'s equality is constant-time.
        self.mac(digest, artifact) == stored
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
        let cache = ArtifactCache::open(root.path(), &engine, u64::MAX).unwrap();
        let digest = Digest::of(b"component");
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, b"artifact bytes").unwrap();
        let file = fs::read(cache.get(&digest).unwrap().path).unwrap();
        assert_eq!(file[..file.len() - TRAILER], b"artifact bytes"[..]);

        // Another digest's artifact under this name does not verify.
        let other = Digest::of(b"other");
        fs::copy(cache.path(&digest), cache.path(&other)).unwrap();
        assert_eq!(cache.get(&other), None);
        assert!(!cache.path(&other).exists(), "a bad file is removed");

        // A flipped byte in the artifact does not verify.
        let mut bytes = fs::read(cache.path(&digest)).unwrap();
        bytes[3] ^= 1;
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
        let cache = ArtifactCache::open(root.path(), &engine, u64::MAX).unwrap();
        let digest = Digest::of(b"component");
        // A forger who can write the file but not read the key: a well-formed file whose MAC
        // was made with another key (or with none, like the old unkeyed sha256).
        let forger = ArtifactCache {
            dir: cache.dir.clone(),
            engine: cache.engine.clone(),
            key: [7; 32],
            max_bytes: u64::MAX,
            settled: SETTLED,
            index: Default::default(),
        };
        forger.put(&digest, b"other native code").unwrap();
        assert_eq!(cache.get(&digest), None);
        let mut unkeyed = b"other native code".to_vec();
        unkeyed.extend_from_slice(MAGIC);
        unkeyed.extend_from_slice(digest.as_bytes());
        unkeyed.extend_from_slice(&Sha256::digest(b"other native code"));
        fs::write(cache.path(&digest), unkeyed).unwrap();
        assert_eq!(cache.get(&digest), None);
    }

    fn description() -> Description {
        Description {
            name: "echo".into(),
            version: semver::Version::new(1, 0, 0),
            description: "Echoes".into(),
            operations: Vec::new(),
            config: Vec::new(),
            secrets: Vec::new(),
            outbound_hosts: Vec::new(),
        }
    }

    #[test]
    fn a_seal_holds_for_its_own_file_and_key_only() {
        let root = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let mut cache = ArtifactCache::open(root.path(), &engine, u64::MAX).unwrap();
        let [a, b] = [b"a", b"b"].map(|n| Digest::of(n));
        cache.put(&a, b"artifact a").unwrap();
        cache.put(&b, b"artifact b").unwrap();
        // Just written: its change time has not settled, so it is not sealed.
        cache.verify_and_seal(&a, &description());
        assert!(!cache.seal_path(&a).exists());

        cache.settled = Duration::ZERO;
        let sealed = Verified::Sealed(description());
        let Verified::Hashed(hashed) = cache.get(&a).unwrap().verified else {
            panic!("not sealed yet")
        };
        cache.seal(&a, &hashed, &description());
        assert_eq!(cache.get(&a).unwrap().verified, sealed);
        // Not when the file changed since it was hashed.
        fs::remove_file(cache.seal_path(&a)).unwrap();
        let copy = cache.dir.join("copy");
        fs::copy(cache.path(&a), &copy).unwrap();
        fs::rename(&copy, cache.path(&a)).unwrap();
        cache.seal(&a, &hashed, &description());
        assert!(!cache.seal_path(&a).exists());
        cache.verify_and_seal(&a, &description());
        assert_eq!(cache.get(&a).unwrap().verified, sealed);
        // Another artifact's seal, or one made with another key, does not hold; the file is
        // then hashed whole (and still verifies).
        let hashed = |cached: Cached| matches!(cached.verified, Verified::Hashed(_));
        fs::copy(cache.seal_path(&a), cache.seal_path(&b)).unwrap();
        assert!(hashed(cache.get(&b).unwrap()));
        let forger = ArtifactCache {
            key: [7; 32],
            index: Default::default(),
            dir: cache.dir.clone(),
            engine: cache.engine.clone(),
            ..cache
        };
        let file = Identity::of(&fs::metadata(cache.path(&a)).unwrap());
        forger.seal(&a, &file, &description());
        assert!(forger.seal_path(&a).exists());
        let cache = ArtifactCache {
            key: cache.key,
            ..forger
        };
        assert!(hashed(cache.get(&a).unwrap()));
        // A damaged seal, likewise.
        cache.verify_and_seal(&a, &description());
        let mut seal = fs::read(cache.seal_path(&a)).unwrap();
        *seal.last_mut().unwrap() ^= 1;
        fs::write(cache.seal_path(&a), seal).unwrap();
        assert!(hashed(cache.get(&a).unwrap()));
    }

    #[test]
    fn the_least_recently_used_artifacts_go_when_the_cache_is_full() {
        let root = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let artifact = vec![1u8; 1000];
        let file = (artifact.len() + TRAILER) as u64;
        let cache = ArtifactCache::open(root.path(), &engine, 3 * file).unwrap();
        let [a, b, c, d] = [b"a", b"b", b"c", b"d"].map(|n| Digest::of(n));
        for digest in [&a, &b, &c] {
            cache.put(digest, &artifact).unwrap();
        }
        assert_eq!(cache.bytes(), 3 * file);
        assert!(
            cache.get(&a).is_some(),
            "a is used again: b is now the oldest"
        );
        cache.put(&d, &artifact).unwrap();
        assert_eq!(cache.bytes(), 3 * file, "still within its bound");
        assert!(!cache.path(&b).exists(), "the least recently used went");
        for digest in [&a, &c, &d] {
            assert!(cache.path(digest).exists());
        }
        // The last uses as a restart sees them (file times set apart: a file system's clock
        // may give files written within a few ms the same time).
        let now = SystemTime::now();
        for (digest, ago) in [(&c, 30), (&a, 20), (&d, 10)] {
            let file = fs::File::options()
                .write(true)
                .open(cache.path(digest))
                .unwrap();
            file.set_modified(now - std::time::Duration::from_secs(ago))
                .unwrap();
        }
        drop(cache);

        // Reopened with a smaller bound, it trims to fit, oldest first.
        let cache = ArtifactCache::open(root.path(), &engine, file).unwrap();
        assert_eq!(cache.bytes(), file);
        assert!(
            cache.path(&d).exists(),
            "the newest stays: {:?}",
            fs::read_dir(cache.dir()).unwrap().collect::<Vec<_>>()
        );
        // An artifact larger than the whole bound is kept until the next one comes.
        let big = vec![2u8; 3000];
        cache.put(&a, &big).unwrap();
        assert!(cache.path(&a).exists() && !cache.path(&d).exists());
    }
}
