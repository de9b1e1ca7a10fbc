//! Organisations, publishing, version states and the marketplace.

use super::rules::{
    audit, current, current_each, require_org, version_pins, visible, visible_version,
};
use super::{Error, FaultPoint, Registry, Result, now_ms};
use crate::model::{
    ListedVersion, Listing, Page, PublishOutcome, PublishRequest, Search, VersionInfo,
    VersionState, VersionSummary, Visibility, parse_version, validate_name, version_key,
};
use crate::runtime::Connector;
use crate::store::Metadata;
use serde_json::Value;
use std::collections::BTreeMap;

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
        validate_name("connector name", &request.name)?;
        let version = parse_version(&request.version)?;
        for tag in &request.tags {
            validate_name("tag", tag)?;
        }
        self.off_executor(|| self.read(|m| require_org(m, org)))?;
        let connector = self.runtime.load(&request.bytes).await?;
        let described = connector.description();
        let mut described_version = described.version.clone();
        described_version.build = semver::BuildMetadata::EMPTY;
        if described.name != request.name || described_version != version {
            return Err(Error::DescribeMismatch {
                expected: format!("{}@{}", request.name, version),
                found: format!("{}@{}", described.name, described.version),
            });
        }
        if !self.accept_ungranted_imports && !connector.ungranted_imports().is_empty() {
            return Err(Error::UngrantedImports(
                connector.ungranted_imports().to_vec(),
            ));
        }
        // The bytes are stored (and synced) before the unit that references them, so no
        // writer waits behind this fsync; inside the unit `put` only checks they are still
        // there (a concurrent clean-up of the same bytes may have removed them).
        let digest = *connector.digest();
        let result = self.off_executor(|| {
            self.blobs.put(&digest, &request.bytes)?;
            self.fault(FaultPoint::AfterBlobWrite)?;
            self.change(|m| self.publish_in(m, org, actor, &request, &version, &connector))
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

    /// Every version of `pkg_org/name` that `viewer` may see, oldest first.
    pub fn versions(&self, viewer: &str, pkg_org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        let mut versions: Vec<VersionInfo> =
            current_each(self.read(|m| Ok(m.package_revisions(pkg_org, name)?))?)
                .into_iter()
                .filter(|v| visible(v, viewer))
                .collect();
        if versions.is_empty() {
            return Err(Error::NotFound(format!("connector {pkg_org}/{name}")));
        }
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(versions.into_iter().map(|v| v.seen_by(viewer)).collect())
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
    pub fn search(&self, viewer: &str, search: &Search, page: &Page) -> Result<Vec<Listing>> {
        let rows = self.read(|m| {
            let mut rows = m.org_catalogue(viewer)?;
            rows.extend(m.public_catalogue()?);
            Ok::<_, Error>(rows)
        })?;
        // What the viewer sees: the current revision of each version, its own or public.
        let rows = current_each(rows);
        let mut by_connector: BTreeMap<(String, String), Vec<ListedVersion>> = BTreeMap::new();
        for row in rows {
            by_connector
                .entry((row.org.clone(), row.name.clone()))
                .or_default()
                .push(row);
        }
        let words: Vec<String> = search
            .text
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let after = page.after.as_deref().unwrap_or_default();
        let mut listings = Vec::new();
        for ((org, name), mut versions) in by_connector {
            if listings.len() == page.limit() {
                break;
            }
            if !after.is_empty() && format!("{org}/{name}").as_str() <= after {
                continue;
            }
            versions.sort_by(|a, b| a.version.cmp(&b.version));
            let Some(latest) = versions
                .iter()
                .rev()
                .find(|v| v.state == VersionState::Active)
                .or_else(|| {
                    versions
                        .iter()
                        .rev()
                        .find(|v| v.state != VersionState::Blocked)
                })
                .or(versions.last())
                .cloned()
            else {
                continue;
            };
            let haystack = format!(
                "{} {} {}",
                latest.name,
                latest.description.description,
                latest
                    .description
                    .operations
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
            .to_lowercase();
            if !words.iter().all(|w| haystack.contains(w.as_str())) {
                continue;
            }
            if let Some(tag) = &search.tag
                && !versions.iter().any(|v| v.tags.contains(tag))
            {
                continue;
            }
            if let Some(publisher) = &search.publisher
                && latest.org != *publisher
            {
                continue;
            }
            listings.push(Listing {
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
                org,
                name,
                latest: latest.seen_by(viewer),
            });
        }
        Ok(listings)
    }
}
