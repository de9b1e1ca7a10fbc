//! Online backup: a consistent copy of the data directory — the metadata, every blob it
//! references and the secrets key — taken while calls and writes carry on. The copy *is* a
//! data directory: `gantry serve --data-dir COPY` restores it.

use super::rules::audit;
use super::tokens::PLATFORM_LOG;
use super::{Error, Registry, Result};
use crate::store::{BlobStore, FsBlobStore};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::PoisonError;
use std::time::Instant;

/// What a backup wrote.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backup {
    /// The directory written (a data directory).
    pub to: String,
    /// Blobs copied (components), and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    pub duration_ms: u64,
}

/// A backup step that failed, with its cause.
fn failed(what: &str, e: std::io::Error) -> Error {
    Error::storage_from(format!("backup: {what}"), e)
}

impl Registry {
    /// Copy the registry into `to`, a directory that does not exist yet (its parent must), as
    /// a data directory of its own. Calls and writes carry on meanwhile; only deleting blobs
    /// waits for the backup. Audited in the platform's log.
    pub fn backup(&self, actor: &str, to: &Path) -> Result<Backup> {
        let started = Instant::now();
        if self.meta.shared() {
            return Err(Error::InvalidInput(
                "this registry's metadata is in a database several nodes share: back it up \
                 with the database's own tools (pg_dump, base backups) and the bucket with its \
                 versioning or replication, with a copy of the secrets key"
                    .into(),
            ));
        }
        if !to.is_absolute() {
            return Err(Error::InvalidInput(format!(
                "the backup directory must be an absolute path, not {}",
                to.display()
            )));
        }
        if to.exists() {
            return Err(Error::InvalidInput(format!(
                "{} exists; a backup goes into a new directory",
                to.display()
            )));
        }
        crate::durable::private_dir(to).map_err(|e| failed("creating the directory", e))?;
        // Written in place, then checked; a failed backup removes what it wrote.
        let result = self.copy_into(to);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(to);
        }
        let (blobs, blob_bytes) = result?;
        let backup = Backup {
            to: to.display().to_string(),
            blobs,
            blob_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        self.write(|m| {
            let after = serde_json::json!(backup);
            audit(
                m,
                PLATFORM_LOG,
                actor,
                "backup",
                &backup.to,
                serde_json::Value::Null,
                after,
            )
        })?;
        Ok(backup)
    }

    fn copy_into(&self, to: &Path) -> Result<(usize, u64)> {
        // From the snapshot until its blobs are copied, no blob is deleted: every blob the
        // snapshot references is still there. Blobs published after the snapshot are copied
        // too; opening the copy sweeps them as orphans.
        let _gate = self.blob_deletions();
        self.meta.backup_to(&to.join("gantry.db"))?;
        let copy =
            FsBlobStore::open(to.join("blobs")).map_err(|e| failed("the blob directory", e))?;
        let (mut copied, mut bytes) = (0, 0);
        let digests = self
            .blobs
            .digests()
            .map_err(|e| failed("listing blobs", e))?;
        for digest in &digests {
            let Some(blob) = self
                .blobs
                .get(digest)
                .map_err(|e| failed("reading a blob", e))?
            else {
                continue; // written by a publish that had not committed: not in the snapshot
            };
            copy.put(digest, &blob)
                .map_err(|e| failed("writing a blob", e))?;
            copied += 1;
            bytes += blob.len() as u64;
        }
        let key =
            std::fs::read(&self.secrets_key).map_err(|e| failed("reading the secrets key", e))?;
        crate::durable::write_atomic(&to.join("secrets.key"), &key, 0o600)
            .map_err(|e| failed("writing the secrets key", e))?;
        crate::durable::sync_dir(to).map_err(|e| failed("syncing the directory", e))?;
        Ok((copied, bytes))
    }

    pub(super) fn blob_deletions(&self) -> std::sync::MutexGuard<'_, ()> {
        self.blob_deletions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
