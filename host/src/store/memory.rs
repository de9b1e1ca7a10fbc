//! Stores that keep everything in memory: [`MemoryStore`] and [`MemoryBlobStore`]. Nothing
//! survives the process; they serve tests, embedding without a disk, and as the reference each
//! backend is checked against by the conformance suite (the simplest store that keeps the
//! contract).
//!
//! A write unit works on a copy of the state and swaps it in when the work succeeds, so a
//! failed unit leaves nothing; units are serialised by one mutex.

use super::{
    Access, BlobStore, BoundStep, Metadata, MetadataStore, Result, RevisionKey, StoreError,
};
use crate::model::{
    Audience, AuditEntry, Canary, Digest, Flow, IndexEntry, Install, Instance, ListedVersion,
    OrgInfo, Recording, Run, Search, Session, Step, Summary, TokenInfo, VersionInfo, VersionState,
};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Mutex, PoisonError};

/// The metadata, in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    orgs: BTreeMap<String, i64>,
    settings: BTreeMap<String, String>,
    versions: Vec<VersionInfo>,
    /// The world of each revision, by (org, name, version, revision).
    worlds: BTreeMap<(String, String, String, u32), Vec<String>>,
    installs: BTreeMap<i64, Install>,
    instances: BTreeMap<i64, (Instance, Vec<u8>)>,
    flows: BTreeMap<i64, Flow>,
    runs: BTreeMap<i64, (String, Run)>,
    recordings: BTreeMap<i64, (String, Recording)>,
    canaries: BTreeMap<(String, i64, String), Canary>,
    /// Tokens by id, and their ids by hash.
    tokens: BTreeMap<i64, TokenInfo>,
    token_hashes: BTreeMap<String, i64>,
    sessions: BTreeMap<String, Session>,
    audit: BTreeMap<i64, AuditEntry>,
    /// The last id given, by kind (ids are per kind, like rowids).
    ids: BTreeMap<&'static str, i64>,
}

impl State {
    fn next_id(&mut self, kind: &'static str) -> i64 {
        let id = self.ids.entry(kind).or_insert(0);
        *id += 1;
        *id
    }

    fn install_mut(&mut self, org: &str, id: i64) -> Option<&mut Install> {
        self.installs.get_mut(&id).filter(|i| i.org == org)
    }

    /// Steps with the install they are bound through.
    fn bound_steps(&self) -> impl Iterator<Item = (&Flow, BoundStep, i64)> {
        self.flows.values().flat_map(move |flow| {
            flow.steps.iter().filter_map(move |s| {
                let (instance, _) = self.instances.get(&s.instance)?;
                let install = self.installs.get(&instance.install_id)?;
                Some((
                    flow,
                    BoundStep {
                        flow: flow.id,
                        name: s.name.clone(),
                        operation: s.operation.clone(),
                        instance: s.instance,
                        digest: s.digest,
                        package_org: install.package_org.clone(),
                        package_name: install.name.clone(),
                    },
                    install.id,
                ))
            })
        })
    }
}

impl MetadataStore for MemoryStore {
    fn unit(
        &self,
        access: Access,
        work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
    ) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut draft = state.clone();
        work(&mut draft)?;
        if access != Access::Read {
            *state = draft;
        }
        Ok(())
    }
}

fn listed(v: &VersionInfo) -> ListedVersion {
    VersionInfo {
        description: Summary::from(&v.description),
        org: v.org.clone(),
        name: v.name.clone(),
        version: v.version.clone(),
        revision: v.revision,
        digest: v.digest,
        size: v.size,
        visibility: v.visibility,
        state: v.state,
        publisher: v.publisher.clone(),
        published_at: v.published_at,
        tags: v.tags.clone(),
    }
}

/// Items with ids above `after`, by id, at most `limit`.
fn page<T: Clone>(items: impl Iterator<Item = (i64, T)>, after: i64, limit: usize) -> Vec<T> {
    items
        .filter(|(id, _)| *id > after)
        .take(limit)
        .map(|(_, t)| t)
        .collect()
}

impl Metadata for State {
    fn create_org(&mut self, id: &str, at: i64) -> Result<()> {
        self.orgs.entry(id.to_string()).or_insert(at);
        Ok(())
    }

    fn org_exists(&mut self, id: &str) -> Result<bool> {
        Ok(self.orgs.contains_key(id))
    }

    fn orgs(&mut self, after: &str, limit: usize) -> Result<Vec<OrgInfo>> {
        use std::ops::Bound;
        Ok(self
            .orgs
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .map(|(id, at)| OrgInfo {
                id: id.clone(),
                created_at: *at,
            })
            .collect())
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>> {
        Ok(self.settings.get(name).cloned())
    }

    fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        self.settings.insert(name.to_string(), value.to_string());
        Ok(())
    }

    fn instance_count(&mut self) -> Result<u64> {
        Ok(self.instances.len() as u64)
    }

    fn insert_version(&mut self, version: &VersionInfo) -> Result<()> {
        let taken = self.versions.iter().any(|v| {
            (&v.org, &v.name, &v.version, v.revision)
                == (
                    &version.org,
                    &version.name,
                    &version.version,
                    version.revision,
                )
        });
        if taken {
            return Err(StoreError::failed(format!(
                "{} revision {} exists",
                version.reference(),
                version.revision
            )));
        }
        if !self.orgs.contains_key(&version.org) {
            return Err(StoreError::failed(format!(
                "no organisation {}",
                version.org
            )));
        }
        self.versions.push(version.clone());
        Ok(())
    }

    fn revisions(&mut self, org: &str, name: &str, version: &str) -> Result<Vec<VersionInfo>> {
        Ok(self
            .versions
            .iter()
            .filter(|v| v.org == org && v.name == name && v.version.to_string() == version)
            .cloned()
            .collect())
    }

    fn package_revisions(&mut self, org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        Ok(self
            .versions
            .iter()
            .filter(|v| v.org == org && v.name == name)
            .cloned()
            .collect())
    }

    fn revisions_with(
        &mut self,
        org: &str,
        name: &str,
        digest: &Digest,
    ) -> Result<Vec<VersionInfo>> {
        Ok(self
            .versions
            .iter()
            .filter(|v| v.org == org && v.name == name && v.digest == *digest)
            .cloned()
            .collect())
    }

    fn search(
        &mut self,
        viewer: &str,
        search: &Search,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        // No index: every connector's entries are made afresh from its versions.
        let mut packages: BTreeMap<(&str, &str), Vec<ListedVersion>> = BTreeMap::new();
        for v in &self.versions {
            packages
                .entry((v.org.as_str(), v.name.as_str()))
                .or_default()
                .push(listed(v));
        }
        Ok(packages
            .into_iter()
            .filter(|(key, _)| after.is_none_or(|after| *key > after))
            .flat_map(|(_, revisions)| IndexEntry::of_connector(revisions))
            .filter(|e| e.audience == Audience::of(viewer, &e.org) && e.matches(search))
            .map(|e| (e.org, e.name))
            .take(limit)
            .collect())
    }

    fn listed_revisions(
        &mut self,
        viewer: &str,
        org: &str,
        name: &str,
    ) -> Result<Vec<ListedVersion>> {
        let audience = Audience::of(viewer, org);
        Ok(self
            .versions
            .iter()
            .filter(|v| v.org == org && v.name == name && audience.sees(v.visibility))
            .map(listed)
            .collect())
    }

    fn revision_keys(&mut self, org: &str, name: &str) -> Result<Vec<RevisionKey>> {
        Ok(self
            .versions
            .iter()
            .filter(|v| v.org == org && v.name == name)
            .map(|v| RevisionKey {
                org: v.org.clone(),
                name: v.name.clone(),
                version: v.version.to_string(),
                revision: v.revision,
                digest: v.digest,
            })
            .collect())
    }

    fn set_version_state(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<()> {
        for v in &mut self.versions {
            if v.org == org && v.name == name && v.version.to_string() == version {
                v.state = state;
            }
        }
        Ok(())
    }

    fn delete_revision(&mut self, key: &RevisionKey) -> Result<()> {
        self.versions.retain(|v| {
            !(v.org == key.org
                && v.name == key.name
                && v.version.to_string() == key.version
                && v.revision == key.revision)
        });
        self.worlds.remove(&(
            key.org.clone(),
            key.name.clone(),
            key.version.clone(),
            key.revision,
        ));
        Ok(())
    }

    fn set_world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
        world: &[String],
    ) -> Result<()> {
        let key = (
            org.to_string(),
            name.to_string(),
            version.to_string(),
            revision,
        );
        if self
            .revisions(org, name, version)?
            .iter()
            .any(|v| v.revision == revision)
        {
            self.worlds.insert(key, world.to_vec());
        }
        Ok(())
    }

    fn world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
    ) -> Result<Option<Vec<String>>> {
        let exists = self
            .revisions(org, name, version)?
            .iter()
            .any(|v| v.revision == revision);
        let key = (
            org.to_string(),
            name.to_string(),
            version.to_string(),
            revision,
        );
        Ok(exists.then(|| self.worlds.get(&key).cloned().unwrap_or_default()))
    }

    fn digest_referenced(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.versions.iter().any(|v| v.digest == *digest))
    }

    fn insert_install(
        &mut self,
        org: &str,
        actor: &str,
        version: &VersionInfo,
        at: i64,
    ) -> Result<i64> {
        let id = self.next_id("install");
        self.installs.insert(
            id,
            Install {
                id,
                org: org.to_string(),
                package_org: version.org.clone(),
                name: version.name.clone(),
                version: version.version.clone(),
                revision: version.revision,
                customisations: BTreeMap::new(),
                modified_by: None,
                modified_at: None,
                created_by: actor.to_string(),
                created_at: at,
                outbound: Vec::new(),
                update_available: None,
                revision_available: None,
            },
        );
        Ok(id)
    }

    fn install(&mut self, org: &str, id: i64) -> Result<Option<Install>> {
        Ok(self.install_mut(org, id).map(|i| i.clone()))
    }

    fn installs(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Install>> {
        let mine = self.installs.values().filter(|i| i.org == org);
        Ok(page(mine.map(|i| (i.id, i.clone())), after, limit))
    }

    fn installs_of_package(&mut self, org: &str, name: &str) -> Result<Vec<Install>> {
        Ok(self
            .installs
            .values()
            .filter(|i| i.package_org == org && i.name == name)
            .cloned()
            .collect())
    }

    fn set_customisations(
        &mut self,
        org: &str,
        id: i64,
        customisations: &BTreeMap<String, String>,
        modified: Option<(&str, i64)>,
    ) -> Result<()> {
        if let Some(install) = self.install_mut(org, id) {
            install.customisations = customisations.clone();
            install.modified_by = modified.map(|(by, _)| by.to_string());
            install.modified_at = modified.map(|(_, at)| at);
        }
        Ok(())
    }

    fn set_outbound(&mut self, org: &str, id: i64, origins: &[String]) -> Result<()> {
        if let Some(install) = self.install_mut(org, id) {
            install.outbound = origins.to_vec();
        }
        Ok(())
    }

    fn set_install_version(
        &mut self,
        org: &str,
        id: i64,
        version: &semver::Version,
        revision: u32,
    ) -> Result<()> {
        if let Some(install) = self.install_mut(org, id) {
            install.version = version.clone();
            install.revision = revision;
        }
        Ok(())
    }

    fn insert_instance(&mut self, instance: &Instance) -> Result<i64> {
        if !self.installs.contains_key(&instance.install_id) {
            return Err(StoreError::failed(format!(
                "no install {}",
                instance.install_id
            )));
        }
        let id = self.next_id("instance");
        let instance = Instance {
            id,
            ..instance.clone()
        };
        self.instances.insert(id, (instance, Vec::new()));
        Ok(id)
    }

    fn set_sealed_secrets(
        &mut self,
        org: &str,
        id: i64,
        keys: &[String],
        sealed: &[u8],
    ) -> Result<()> {
        if let Some((instance, secrets)) = self.instances.get_mut(&id)
            && instance.org == org
        {
            instance.secret_keys = keys.to_vec();
            *secrets = sealed.to_vec();
        }
        Ok(())
    }

    fn sealed_secrets(&mut self, org: &str, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .instances
            .get(&id)
            .filter(|(i, _)| i.org == org)
            .map(|(_, s)| s.clone()))
    }

    fn instance(&mut self, org: &str, id: i64) -> Result<Option<Instance>> {
        Ok(self
            .instances
            .get(&id)
            .filter(|(i, _)| i.org == org)
            .map(|(i, _)| i.clone()))
    }

    fn instances(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Instance>> {
        let mine = self.instances.values().filter(|(i, _)| i.org == org);
        Ok(page(mine.map(|(i, _)| (i.id, i.clone())), after, limit))
    }

    fn flow_name_taken(&mut self, org: &str, name: &str) -> Result<bool> {
        Ok(self.flows.values().any(|f| f.org == org && f.name == name))
    }

    fn insert_flow(&mut self, org: &str, name: &str, actor: &str, at: i64) -> Result<i64> {
        if self.flow_name_taken(org, name)? {
            return Err(StoreError::failed(format!("a flow named `{name}` exists")));
        }
        let id = self.next_id("flow");
        self.flows.insert(
            id,
            Flow {
                id,
                org: org.to_string(),
                name: name.to_string(),
                steps: Vec::new(),
                record: false,
                created_by: actor.to_string(),
                created_at: at,
            },
        );
        Ok(id)
    }

    fn insert_step(&mut self, flow: i64, position: usize, step: &Step) -> Result<()> {
        let flow = self
            .flows
            .get_mut(&flow)
            .ok_or_else(|| StoreError::failed(format!("no flow {flow}")))?;
        flow.steps
            .insert(position.min(flow.steps.len()), step.clone());
        Ok(())
    }

    fn flow(&mut self, org: &str, id: i64) -> Result<Option<Flow>> {
        Ok(self.flows.get(&id).filter(|f| f.org == org).cloned())
    }

    fn flows(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Flow>> {
        let mine = self.flows.values().filter(|f| f.org == org);
        Ok(page(mine.map(|f| (f.id, f.clone())), after, limit))
    }

    fn steps_through_install(&mut self, org: &str, install: i64) -> Result<Vec<BoundStep>> {
        Ok(self
            .bound_steps()
            .filter(|(flow, _, through)| flow.org == org && *through == install)
            .map(|(_, step, _)| step)
            .collect())
    }

    fn steps_through_package(&mut self, org: &str, name: &str) -> Result<Vec<BoundStep>> {
        Ok(self
            .bound_steps()
            .filter(|(_, s, _)| s.package_org == org && s.package_name == name)
            .map(|(_, step, _)| step)
            .collect())
    }

    fn bind_step(&mut self, flow: i64, step: &str, instance: i64, digest: &Digest) -> Result<()> {
        if let Some(s) = self
            .flows
            .get_mut(&flow)
            .and_then(|f| f.steps.iter_mut().find(|s| s.name == step))
        {
            s.instance = instance;
            s.digest = *digest;
        }
        Ok(())
    }

    fn set_flow_record(&mut self, org: &str, flow: i64, record: bool) -> Result<()> {
        if let Some(f) = self.flows.get_mut(&flow).filter(|f| f.org == org) {
            f.record = record;
        }
        Ok(())
    }

    fn insert_recording(&mut self, org: &str, r: &Recording, keep: usize) -> Result<i64> {
        let (Some(flow), Some(step)) = (r.flow, r.step.clone()) else {
            return Err(StoreError::failed(
                "a flow's recording names its flow and step",
            ));
        };
        let id = self.next_id("recording");
        self.recordings
            .insert(id, (org.to_string(), Recording { id, ..r.clone() }));
        let of_step: Vec<i64> = self
            .recordings
            .iter()
            .rev()
            .filter(|(_, (o, r))| {
                o == org && r.flow == Some(flow) && r.step.as_ref() == Some(&step)
            })
            .map(|(id, _)| *id)
            .collect();
        for old in of_step.into_iter().skip(keep) {
            self.recordings.remove(&old);
        }
        Ok(id)
    }

    fn recordings(
        &mut self,
        org: &str,
        flow: i64,
        step: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Recording>> {
        Ok(self
            .recordings
            .range(..before)
            .rev()
            .filter(|(_, (o, r))| {
                o == org && r.flow == Some(flow) && r.step.as_deref() == Some(step)
            })
            .take(limit)
            .map(|(_, (_, r))| r.clone())
            .collect())
    }

    fn reserve_run_id(&mut self) -> Result<i64> {
        Ok(self.next_id("run"))
    }

    fn canary(&mut self, org: &str, flow: i64, step: &str) -> Result<Option<Canary>> {
        Ok(self
            .canaries
            .get(&(org.to_string(), flow, step.to_string()))
            .cloned())
    }

    fn flow_canaries(&mut self, org: &str, flow: i64) -> Result<Vec<Canary>> {
        Ok(self
            .canaries
            .iter()
            .filter(|((o, f, _), _)| o == org && *f == flow)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn put_canary(&mut self, org: &str, canary: &Canary) -> Result<()> {
        self.canaries.insert(
            (org.to_string(), canary.flow, canary.step.clone()),
            canary.clone(),
        );
        Ok(())
    }

    fn insert_run(&mut self, org: &str, run: &Run) -> Result<i64> {
        let id = match run.id {
            0 => self.next_id("run"),
            id => id,
        };
        let run = Run { id, ..run.clone() };
        self.runs.insert(id, (org.to_string(), run));
        Ok(id)
    }

    fn runs(&mut self, org: &str, flow: i64, before: i64, limit: usize) -> Result<Vec<Run>> {
        Ok(self
            .runs
            .range(..before)
            .rev()
            .filter(|(_, (o, run))| o == org && run.flow_id == flow)
            .take(limit)
            .map(|(_, (_, run))| run.clone())
            .collect())
    }

    fn insert_token(&mut self, token: &TokenInfo, hash: &str) -> Result<i64> {
        if self.token_hashes.contains_key(hash) {
            return Err(StoreError::failed("a token with this hash exists"));
        }
        if (token.role == crate::model::Role::Platform) != token.org.is_none() {
            return Err(StoreError::failed(
                "a platform token has no organisation, and only a platform token",
            ));
        }
        let id = self.next_id("token");
        let token = TokenInfo {
            id,
            last_used_at: None,
            ..token.clone()
        };
        self.tokens.insert(id, token);
        self.token_hashes.insert(hash.to_string(), id);
        Ok(id)
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenInfo>> {
        Ok(self
            .token_hashes
            .get(hash)
            .and_then(|id| self.tokens.get(id))
            .cloned())
    }

    fn token_by_id(&mut self, id: i64) -> Result<Option<TokenInfo>> {
        Ok(self.tokens.get(&id).cloned())
    }

    fn tokens(&mut self, org: Option<&str>, after: i64, limit: usize) -> Result<Vec<TokenInfo>> {
        Ok(self
            .tokens
            .range(after.saturating_add(1)..)
            .map(|(_, t)| t)
            .filter(|t| t.org.as_deref() == org)
            .take(limit)
            .cloned()
            .collect())
    }

    fn revoke_token(&mut self, id: i64, at: i64) -> Result<()> {
        if let Some(token) = self.tokens.get_mut(&id) {
            token.revoked_at.get_or_insert(at);
        }
        Ok(())
    }

    fn set_tokens_used(&mut self, used: &[(i64, i64)]) -> Result<()> {
        for (id, at) in used {
            if let Some(token) = self.tokens.get_mut(id)
                && token.last_used_at.is_none_or(|last| last < *at)
            {
                token.last_used_at = Some(*at);
            }
        }
        Ok(())
    }

    fn insert_session(&mut self, hash: &str, session: &Session, now: i64) -> Result<()> {
        self.sessions.retain(|_, s| s.expires_at > now);
        if self.sessions.contains_key(hash) {
            return Err(StoreError::failed("a session with that hash exists"));
        }
        self.sessions.insert(hash.to_string(), session.clone());
        Ok(())
    }

    fn session(&mut self, hash: &str) -> Result<Option<Session>> {
        Ok(self.sessions.get(hash).cloned())
    }

    fn delete_session(&mut self, hash: &str) -> Result<()> {
        self.sessions.remove(hash);
        Ok(())
    }

    fn append_audit(&mut self, entry: &AuditEntry) -> Result<()> {
        let id = self.next_id("audit");
        self.audit.insert(
            id,
            AuditEntry {
                id,
                ..entry.clone()
            },
        );
        Ok(())
    }

    fn audit_log(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mine = self.audit.values().filter(|e| e.org == org);
        Ok(page(mine.map(|e| (e.id, e.clone())), after, limit))
    }
}

/// Component bytes, in memory.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<BTreeMap<Digest, Vec<u8>>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl BlobStore for MemoryBlobStore {
    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if Digest::of(bytes) != *digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes do not match digest",
            ));
        }
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*digest)
            .or_insert_with(|| bytes.to_vec());
        Ok(())
    }

    fn get(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned())
    }

    fn delete(&self, digest: &Digest) -> io::Result<()> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
        Ok(())
    }

    fn sweep(&self) -> io::Result<Vec<Digest>> {
        self.digests()
    }

    fn digests(&self) -> io::Result<Vec<Digest>> {
        Ok(self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect())
    }
}
