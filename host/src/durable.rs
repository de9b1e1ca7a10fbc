//! Files that survive a crash and that only this process's user can touch: [`write_atomic`]
//! (temporary file → fsync → rename → fsync of the directory, so a crash leaves the old file
//! or the new one, never half of one), [`private_dir`] (0700, refusing one that others may
//! write), [`tighten`] (taking away what others may read), and [`key_file`] (a secret key
//! read, or created once, 0600); and [`off_executor`], for running such work from async code.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replace `path` with `bytes` atomically and durably, created with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a file needs a name"))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(
        ".{}.{}.{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Make a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` (and its parents) if needed, the last one with mode 0700. A directory that
/// another user owns or that group or others may write is refused: anyone who could write it
/// may have replaced what Gantry keeps there.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    check_private(dir, 0o022, 0o700)
}

/// Take away group and other permissions from `path` if it has any (mode `mode`), saying so.
pub fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = fs::metadata(path)?.permissions().mode() & 0o777;
        if current & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            tracing::warn!(path = %path.display(), from = format!("{current:o}"),
                to = format!("{mode:o}"), "tightened permissions: others could read it");
        }
    }
    Ok(())
}

/// Read the `len`-byte key in `path`, or create it (mode 0600) if there is none. Refuses a key
/// of the wrong length, or one another user owns or that group or others may read or write.
pub fn key_file(path: &Path, len: usize) -> io::Result<(Vec<u8>, bool)> {
    let (key, created) = match fs::read(path) {
        Ok(key) => (key, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut key = vec![0u8; len];
            getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
            write_atomic(path, &key, 0o600)?;
            (key, true)
        }
        Err(e) => return Err(e),
    };
    if key.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} must hold {len} bytes", path.display()),
        ));
    }
    check_private(path, 0o077, 0o600)?;
    Ok((key, created))
}

/// `path` must belong to this process's user, with none of the `loose` permission bits set
/// (the error suggests `mode`).
#[cfg(unix)]
fn check_private(path: &Path, loose: u32, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {}); Gantry runs as uid {me}",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & loose != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:o}: others may {} it; `chmod {:o}` it",
                path.display(),
                meta.mode() & 0o777,
                if loose & 0o044 != 0 {
                    "read or change"
                } else {
                    "change"
                },
                mode,
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _loose: u32, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Run blocking work (file I/O, fsyncs) from async code without holding up the executor: on a
/// multi-threaded runtime the worker first hands its other tasks to another thread
/// (`block_in_place`); elsewhere it runs inline.
pub fn off_executor<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn keys_are_created_once_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (key, created) = key_file(&path, 32).unwrap();
        assert!(created);
        assert_eq!(key_file(&path, 32).unwrap(), (key, false));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = key_file(&path, 32).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::write(&path, b"short").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(key_file(&path, 32).is_err(), "a key of the wrong length");
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        tighten(&dir, 0o700).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700,
            "one others may read is tightened"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
}
