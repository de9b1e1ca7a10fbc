//! What may be deleted, and deleting it: superseded private revisions nothing pins, and blobs no
//! version references (a blob is written before the row that references it, so a crash in
//! between leaves an orphan, which opening the registry sweeps).

use super::rules::collectable;
use super::{Error, Registry, Result};
use crate::model::Digest;
use crate::store::Metadata;

impl Registry {
    /// Remove blobs that no version row references (left by a crash between blob write and
    /// commit).
    pub(super) fn sweep_orphans(&self) -> Result<()> {
        let _gate = self.blob_deletions();
        let stored = self.blobs.sweep()?;
        self.write(|m| {
            for digest in &stored {
                if self.delete_blob_if_unreferenced(m, digest)? {
                    tracing::warn!(%digest, "removed an orphan blob");
                }
            }
            Ok(())
        })
    }

    /// Delete the blob of `digest` unless a version row still references it; `true` if deleted.
    /// Call inside a write unit, so no publish commits a row for it meanwhile.
    fn delete_blob_if_unreferenced(&self, m: &mut dyn Metadata, digest: &Digest) -> Result<bool> {
        let referenced = m.digest_referenced(digest)?;
        if !referenced {
            self.blobs.delete(digest)?;
        }
        Ok(!referenced)
    }

    /// Delete the blobs of `digests` that no row references any more (after the rows' removal
    /// committed: a crash in between leaves orphans, which opening sweeps).
    pub(super) fn delete_unreferenced_blobs(&self, digests: &[Digest]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let _gate = self.blob_deletions();
        self.write(|m| {
            for digest in digests {
                self.delete_blob_if_unreferenced(m, digest)?;
            }
            Ok(())
        })
    }

    /// Delete the superseded revisions of package `org/name` nothing pins
    /// ([`collectable`]), and their blobs unless another row holds the same bytes.
    pub(crate) fn collect_garbage(&self, org: &str, name: &str) -> Result<()> {
        let doomed = self.write(|m| {
            let doomed = collectable(m, org, name)?;
            for key in &doomed {
                m.delete_revision(key)?;
            }
            Ok::<_, Error>(doomed.into_iter().map(|k| k.digest).collect::<Vec<_>>())
        })?;
        self.delete_unreferenced_blobs(&doomed)
    }
}
