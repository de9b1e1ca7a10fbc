//! The lifecycle's rules, in one place: who may see a version, which one an install runs, which
//! may be bound anew, which config keys a version takes, and the audit trail every change leaves.

use super::{Error, Result, now_ms};
use crate::model::{
    AuditEntry, Flow, Install, Instance, Step, VersionInfo, VersionState, Visibility, current_each,
    version_key,
};
use crate::store::{BoundStep, Metadata, RevisionKey};
use serde_json::Value;

/// Whether `viewer` may see `version`: its own organisation's, or public.
pub(crate) fn visible<D>(version: &VersionInfo<D>, viewer: &str) -> bool {
    version.org == viewer || version.visibility == Visibility::Public
}

/// The current revision among revisions of one version: the newest.
pub(crate) fn current<D>(revisions: Vec<VersionInfo<D>>) -> Option<VersionInfo<D>> {
    revisions.into_iter().max_by_key(|v| v.revision)
}

/// Whether `step` pins the revision `key`: it is bound through an install of that revision's
/// package, to that revision's digest. (Another organisation's step pinned to the same bytes
/// of its own package pins its own package's revision, not this one.) The one definition of
/// "pinned": deleting a version and collecting superseded revisions both ask it.
pub(crate) fn pins(step: &BoundStep, key: &RevisionKey) -> bool {
    step.package_org == key.org && step.package_name == key.name && step.digest == key.digest
}

/// What pins version `org/name@version`: how many installs are on it, and how many steps are
/// bound to one of its revisions.
pub(crate) fn version_pins(
    m: &mut dyn Metadata,
    org: &str,
    name: &str,
    version: &str,
) -> Result<(u64, u64)> {
    let installs = m
        .installs_of_package(org, name)?
        .iter()
        .filter(|i| i.version.to_string() == version)
        .count() as u64;
    let revisions: Vec<RevisionKey> = m
        .revision_keys(org, name)?
        .into_iter()
        .filter(|k| k.version == version)
        .collect();
    let steps = m
        .steps_through_package(org, name)?
        .iter()
        .filter(|s| revisions.iter().any(|k| pins(s, k)))
        .count() as u64;
    Ok((installs, steps))
}

/// The revisions of package `org/name` that may go: superseded (not the newest of their
/// version) and pinned by no step and no install.
pub(crate) fn collectable(m: &mut dyn Metadata, org: &str, name: &str) -> Result<Vec<RevisionKey>> {
    let keys = m.revision_keys(org, name)?;
    let steps = m.steps_through_package(org, name)?;
    let installs = m.installs_of_package(org, name)?;
    let installed = |key: &RevisionKey| {
        installs
            .iter()
            .any(|i| i.version.to_string() == key.version && i.revision == key.revision)
    };
    let newest = |key: &RevisionKey| {
        keys.iter()
            .filter(|k| k.version == key.version)
            .all(|k| k.revision <= key.revision)
    };
    Ok(keys
        .iter()
        .filter(|k| !newest(k) && !installed(k) && !steps.iter().any(|s| pins(s, k)))
        .cloned()
        .collect())
}

/// The current revision of `pkg_org/name@version` if `viewer` may see it.
pub(crate) fn visible_version(
    m: &mut dyn Metadata,
    viewer: &str,
    pkg_org: &str,
    name: &str,
    version: &str,
) -> Result<VersionInfo> {
    let version = &version_key(version);
    match current(m.revisions(pkg_org, name, version)?) {
        Some(v) if visible(&v, viewer) => Ok(v),
        _ => Err(Error::NotFound(format!(
            "connector {pkg_org}/{name}@{version}"
        ))),
    }
}

/// The revision install `install` runs, if its organisation may still see it.
pub(crate) fn installed_version(m: &mut dyn Metadata, install: &Install) -> Result<VersionInfo> {
    m.revisions(
        &install.package_org,
        &install.name,
        &install.version.to_string(),
    )?
    .into_iter()
    .find(|v| v.revision == install.revision && visible(v, &install.org))
    .ok_or_else(|| {
        Error::NotFound(format!(
            "connector {} revision {}",
            install.reference(),
            install.revision
        ))
    })
}

/// Append an audit entry for `org`, now.
pub(crate) fn audit(
    m: &mut dyn Metadata,
    org: &str,
    actor: &str,
    action: &str,
    subject: &str,
    before: Value,
    after: Value,
) -> Result<()> {
    Ok(m.append_audit(&AuditEntry {
        id: 0,
        org: org.to_string(),
        actor: actor.to_string(),
        at: now_ms(),
        action: action.to_string(),
        subject: subject.to_string(),
        before,
        after,
    })?)
}

pub(crate) fn require_org(m: &mut dyn Metadata, org: &str) -> Result<()> {
    if m.org_exists(org)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("organisation {org}")))
    }
}

/// Install `id` of `org` with `update_available` worked out.
pub(crate) fn load_install(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Install> {
    let install = load_install_row(m, org, id)?;
    with_update_available(m, install)
}

pub(crate) fn with_update_available(m: &mut dyn Metadata, mut install: Install) -> Result<Install> {
    let current: Vec<VersionInfo> =
        current_each(m.package_revisions(&install.package_org, &install.name)?)
            .into_iter()
            .filter(|v| visible(v, &install.org) && v.state == VersionState::Active)
            .collect();
    install.update_available = current
        .iter()
        .filter(|v| v.version > install.version)
        .map(|v| v.version.clone())
        .max();
    install.revision_available = current
        .iter()
        .find(|v| v.version == install.version && v.revision > install.revision)
        .map(|v| v.revision);
    Ok(install)
}

/// An install without `update_available` (which reads every version of the connector): what
/// the call path needs.
pub(crate) fn load_install_row(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Install> {
    m.install(org, id)?
        .ok_or_else(|| Error::NotFound(format!("install {id}")))
}

pub(crate) fn load_instance(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Instance> {
    m.instance(org, id)?
        .ok_or_else(|| Error::NotFound(format!("instance {id}")))
}

/// A new binding to `version` is allowed only while it is active.
pub(crate) fn check_bindable(version: &VersionInfo) -> Result<()> {
    match version.state {
        VersionState::Active => Ok(()),
        VersionState::Deprecated => Err(Error::Deprecated(version.reference())),
        VersionState::Blocked => Err(Error::Blocked(version.reference())),
    }
}

/// `keys` must all be config keys `package` declares.
pub(crate) fn check_config_keys<'a>(
    package: &VersionInfo,
    mut keys: impl Iterator<Item = &'a String>,
) -> Result<()> {
    match keys.find(|k| !package.description.config.iter().any(|c| &c.name == *k)) {
        Some(key) => Err(Error::InvalidInput(format!(
            "`{key}` is not a config key of {}",
            package.reference()
        ))),
        None => Ok(()),
    }
}

pub(crate) fn load_flow(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Flow> {
    m.flow(org, id)?
        .ok_or_else(|| Error::NotFound(format!("flow {id}")))
}

/// `flow` with each step's pin described: the connector version and revision its digest is,
/// and whether it is out of date (its install has a newer version or revision available, or
/// runs a newer one than the step is pinned to).
pub(crate) fn describe_pins(m: &mut dyn Metadata, org: &str, mut flow: Flow) -> Result<Flow> {
    for step in &mut flow.steps {
        let Some(instance) = m.instance(org, step.instance)? else {
            continue;
        };
        let Some(install) = m.install(org, instance.install_id)? else {
            continue;
        };
        let pinned =
            current(m.revisions_with(&install.package_org, &install.name, &step.digest)?);
        describe_pin(m, step, install, pinned.as_ref())?;
    }
    Ok(flow)
}

/// Describe `step`, bound through `install`, as pinned to `pinned` (when that is found).
pub(crate) fn describe_pin(
    m: &mut dyn Metadata,
    step: &mut Step,
    install: Install,
    pinned: Option<&VersionInfo>,
) -> Result<()> {
    let install = with_update_available(m, install)?;
    let behind =
        pinned.is_some_and(|p| (&p.version, p.revision) < (&install.version, install.revision));
    step.out_of_date =
        behind || install.update_available.is_some() || install.revision_available.is_some();
    if let Some(pinned) = pinned {
        step.connector = Some(pinned.reference());
        step.revision = Some(pinned.revision);
    }
    Ok(())
}

/// Flow `id` of `org` with its pins described ([`describe_pins`]).
pub(crate) fn described_flow(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Flow> {
    let flow = load_flow(m, org, id)?;
    describe_pins(m, org, flow)
}
