//! Organisations, publishing, version states and the marketplace.

use super::compat;
use super::rules::{audit, current, require_org, version_pins, visible, visible_version};
use super::{Error, FaultPoint, Registry, Result, now_ms};
use crate::model::{
    ListedVersion, Listing, Page, PublishOutcome, PublishRequest, PublishStage, Search,
    VersionInfo, VersionState, VersionSummary, Visibility, current_each, listed_latest,
    parse_version, validate_name, version_key, words,
};
use crate::runtime::Connector;
use crate::store::Metadata;
use serde_json::Value;
use std::sync::Arc;

impl Registry {
    // ----- organisations -------------------------------------------------------------------

    /// Create organisation `id` (idempotent).
    pub fn create_org(&self, id: &str) -> Result<()> {
        validate_name("organisation", id)?;
        self.change(|m| Ok(m.create_org(id, now_ms())?))
    }

    // ----- publishing ----------------------------------------------------------------------

    /// Publish `request.bytes` as `org/name@version`. The component must fit the world and its
    /// `describe()` must give the same name and version.
    pub async fn publish(
        &self,
        org: &str,
        actor: &str,
        request: PublishRequest,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        self.publish_watched(org, actor, request, &|_| {}).await
    }

    /// [`Self::publish`], telling `stage` where it has got to.
    pub async fn publish_watched(
        &self,
        org: &str,
        actor: &str,
        request: PublishRequest,
        stage: &(dyn Fn(PublishStage) + Sync),
    ) -> Result<(PublishOutcome, VersionInfo)> {
        validate_name("connector name", &request.name)?;
        let version = parse_version(&request.version)?;
        for tag in &request.tags {
            validate_name("tag", tag)?;
        }
        self.off_executor(|| self.read(|m| require_org(m, org)))?;
        stage(PublishStage::Compiling);
        let connector = self.runtime.load(&request.bytes).await?;
        self.publish_loaded(org, actor, request, &version, connector, stage)
            .await
    }

    /// Publish `bytes` under the name and version its own `describe()` gives (build metadata
    /// dropped): what a publisher who has not read them out first sends, compiled once, here.
    pub async fn publish_as_described(
        &self,
        org: &str,
        actor: &str,
        visibility: Visibility,
        tags: Vec<String>,
        bytes: Vec<u8>,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        self.publish_as_described_watched(org, actor, visibility, tags, bytes, &|_| {})
            .await
    }

    /// [`Self::publish_as_described`], telling `stage` where it has got to.
    pub async fn publish_as_described_watched(
        &self,
        org: &str,
        actor: &str,
        visibility: Visibility,
        tags: Vec<String>,
        bytes: Vec<u8>,
        stage: &(dyn Fn(PublishStage) + Sync),
    ) -> Result<(PublishOutcome, VersionInfo)> {
        for tag in &tags {
            validate_name("tag", tag)?;
        }
        self.off_executor(|| self.read(|m| require_org(m, org)))?;
        stage(PublishStage::Compiling);
        let connector = self.runtime.load(&bytes).await?;
        let described = connector.description();
        let mut version = described.version.clone();
        version.build = semver::BuildMetadata::EMPTY;
        let request = PublishRequest {
            name: described.name.clone(),
            version: version.to_string(),
            visibility,
            tags,
            bytes,
        };
        self.publish_loaded(org, actor, request, &version, connector, stage)
            .await
    }

    /// Publish `request` as `connector`, its bytes already loaded.
    async fn publish_loaded(
        &self,
        org: &str,
        actor: &str,
        request: PublishRequest,
        version: &semver::Version,
        connector: Arc<Connector>,
        stage: &(dyn Fn(PublishStage) + Sync),
    ) -> Result<(PublishOutcome, VersionInfo)> {
        let described = connector.description();
        let mut described_version = described.version.clone();
        described_version.build = semver::BuildMetadata::EMPTY;
        if described.name != request.name || described_version != *version {
            return Err(Error::DescribeMismatch {
                expected: format!("{}@{}", request.name, version),
                found: format!("{}@{}", described.name, described.version),
            });
        }
        if self.refuse_ungranted_imports && !connector.ungranted_imports().is_empty() {
            return Err(Error::UngrantedImports(
                connector.ungranted_imports().to_vec(),
            ));
        }
        // The bytes are stored (and synced) before the unit that references them, so no
        // writer waits behind this fsync; inside the unit `put` only checks they are still
        // there (a concurrent clean-up of the same bytes may have removed them).
        let digest = *connector.digest();
        stage(PublishStage::Storing);
        let result = self.off_executor(|| {
            self.blobs.put(&digest, &request.bytes)?;
            self.fault(FaultPoint::AfterBlobWrite)?;
            self.change(|m| self.publish_in(m, org, actor, &request, version, &connector))
        });
        if result.is_err() {
            // Nothing committed: remove the blob unless another row already uses it.
            let digest = connector.digest();
            if let Err(e) = self.off_executor(|| self.delete_unreferenced_blobs(&[*digest])) {
                tracing::error!(%digest, error = %e, "cannot remove blob of a failed publish");
            }
        }
        result
    }

    fn publish_in(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        actor: &str,
        request: &PublishRequest,
        version: &semver::Version,
        connector: &Connector,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        let digest = *connector.digest();
        breaks(m, org, &request.name, version, connector.description())?;
        let existing = current(m.revisions(org, &request.name, &version.to_string())?);
        let (outcome, revision) = match &existing {
            None => (PublishOutcome::Created, 1),
            Some(current) if current.digest == digest => {
                if current.visibility == Visibility::Public
                    || request.visibility == Visibility::Private
                {
                    return Ok((PublishOutcome::Unchanged, current.clone()));
                }
                // Same bytes, private → public: a new revision that is public.
                (PublishOutcome::NewRevision, current.revision + 1)
            }
            Some(current) if current.visibility == Visibility::Public => {
                return Err(Error::Immutable {
                    version: current.reference(),
                    digest: current.digest.to_string(),
                });
            }
            Some(current) => (PublishOutcome::NewRevision, current.revision + 1),
        };

        self.blobs.put(&digest, &request.bytes)?;

        let info = VersionInfo {
            org: org.to_string(),
            name: request.name.clone(),
            version: version.clone(),
            revision,
            digest,
            size: request.bytes.len() as u64,
            visibility: request.visibility,
            state: existing.as_ref().map_or(VersionState::Active, |e| e.state),
            publisher: actor.to_string(),
            published_at: now_ms(),
            tags: request.tags.clone(),
            description: connector.description().clone(),
        };
        m.insert_version(&info)?;
        m.set_world(
            org,
            &info.name,
            &info.version.to_string(),
            info.revision,
            connector.world(),
        )?;
        audit(
            m,
            org,
            actor,
            "publish",
            &info.reference(),
            existing.as_ref().map_or(Value::Null, |e| {
                serde_json::json!({"revision": e.revision, "digest": e.digest, "visibility": e.visibility})
            }),
            serde_json::json!({"revision": info.revision, "digest": info.digest, "visibility": info.visibility}),
        )?;
        self.fault(FaultPoint::BeforeCommit)?;
        Ok((outcome, info))
    }

    /// Set the state of every revision of `org/name@version` (the publisher's own only).
    pub fn set_state(
        &self,
        org: &str,
        actor: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<VersionInfo> {
        let version = &version_key(version);
        self.change(|m| {
            let current = current(m.revisions(org, name, version)?)
                .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
            if current.state == state {
                return Ok(current);
            }
            m.set_version_state(org, name, version, state)?;
            audit(
                m,
                org,
                actor,
                "set-state",
                &current.reference(),
                serde_json::json!({"state": current.state}),
                serde_json::json!({"state": state}),
            )?;
            Ok(VersionInfo { state, ..current })
        })
    }

    /// Delete every revision of a private `org/name@version` (the publisher's own only),
    /// refused while any install or flow step pins it. A public version is never deleted: its
    /// digest stays bound to it for good, so nobody can republish other bytes under its name
    /// (deprecate or block it instead).
    pub fn delete_version(&self, org: &str, actor: &str, name: &str, version: &str) -> Result<()> {
        let version = &version_key(version);
        let digests = self.change(|m| {
            let current = current(m.revisions(org, name, version)?)
                .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
            if current.visibility == Visibility::Public {
                return Err(Error::PublicPermanent(current.reference()));
            }
            let (installs, steps) = version_pins(m, org, name, version)?;
            if installs > 0 || steps > 0 {
                return Err(Error::Pinned {
                    version: current.reference(),
                    installs,
                    steps,
                });
            }
            let revisions: Vec<_> = m
                .revision_keys(org, name)?
                .into_iter()
                .filter(|k| k.version == *version)
                .collect();
            for revision in &revisions {
                m.delete_revision(revision)?;
            }
            let digests: Vec<_> = revisions.into_iter().map(|k| k.digest).collect();
            audit(
                m,
                org,
                actor,
                "delete-version",
                &current.reference(),
                serde_json::json!({"digests": digests}),
                Value::Null,
            )?;
            Ok(digests)
        })?;
        self.delete_unreferenced_blobs(&digests)
    }

    /// The versions of `pkg_org/name` that `viewer` may see, oldest first: one page of them
    /// (`after` a version).
    pub fn versions(
        &self,
        viewer: &str,
        pkg_org: &str,
        name: &str,
        page: &Page,
    ) -> Result<Vec<VersionInfo>> {
        let after = page.after_version()?;
        let mut versions: Vec<VersionInfo> =
            current_each(self.read(|m| Ok(m.package_revisions(pkg_org, name)?))?)
                .into_iter()
                .filter(|v| visible(v, viewer))
                .collect();
        if versions.is_empty() {
            return Err(Error::NotFound(format!("connector {pkg_org}/{name}")));
        }
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(versions
            .into_iter()
            .filter(|v| after.as_ref().is_none_or(|after| v.version > *after))
            .take(page.limit())
            .map(|v| v.seen_by(viewer))
            .collect())
    }

    /// One version as `viewer` may see it.
    pub fn version(
        &self,
        viewer: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
    ) -> Result<VersionInfo> {
        self.meta
            .read(|m| visible_version(m, viewer, pkg_org, name, version))
            .map(|v| v.seen_by(viewer))
    }

    /// The marketplace as `viewer` sees it: public connectors and its own private ones, each with
    /// its newest non-blocked version and all versions' states, by `org/name`, one page of them.
    /// Answered from the store's search index; a search takes at most 16 words.
    pub fn search(&self, viewer: &str, search: &Search, page: &Page) -> Result<Vec<Listing>> {
        let after = page.after_connector()?;
        if words(search.text.as_deref().unwrap_or_default()).len() > SEARCH_WORDS {
            return Err(Error::InvalidInput(format!(
                "a search takes at most {SEARCH_WORDS} words"
            )));
        }
        let connectors = self.read(|m| {
            m.search(viewer, search, after, page.limit())?
                .into_iter()
                .map(|(org, name)| Ok(m.listed_revisions(viewer, &org, &name)?))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(connectors
            .into_iter()
            .filter_map(|revisions| listing(viewer, revisions))
            .collect())
    }
}

/// Refuse `new`, to be published as `org/name@version`, if it breaks what uses the newest
/// lower version and `version` does not say so ([`compat::may_break`]).
fn breaks(
    m: &mut dyn Metadata,
    org: &str,
    name: &str,
    version: &semver::Version,
    new: &crate::model::Description,
) -> Result<()> {
    let lower = current_each(m.package_revisions(org, name)?)
        .into_iter()
        .filter(|v| v.version < *version)
        .max_by(|a, b| a.version.cmp(&b.version));
    let Some(lower) = lower else { return Ok(()) };
    if compat::may_break(&lower.version, version) {
        return Ok(());
    }
    let reasons: Vec<String> = compat::changes(&lower.description, new)
        .into_iter()
        .filter(|c| c.severity == compat::Severity::Breaking)
        .map(|c| format!("{}: {}", c.subject, c.reason))
        .collect();
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Error::Breaking {
        version: format!("{org}/{name}@{version}"),
        against: lower.version.to_string(),
        reasons,
    })
}

/// The most words a marketplace search takes.
pub const SEARCH_WORDS: usize = 16;

/// The listing of one connector from the revisions `viewer` sees of it.
fn listing(viewer: &str, revisions: Vec<ListedVersion>) -> Option<Listing> {
    let mut versions = current_each(revisions);
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    let latest = listed_latest(&versions)?.clone();
    Some(Listing {
        org: latest.org.clone(),
        name: latest.name.clone(),
        versions: versions
            .iter()
            .map(|v| VersionSummary {
                version: v.version.clone(),
                revision: v.revision,
                digest: v.digest,
                visibility: v.visibility,
                state: v.state,
                deprecated: v.state == VersionState::Deprecated,
            })
            .collect(),
        latest: latest.seen_by(viewer),
    })
}
