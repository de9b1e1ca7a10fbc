//! Where used: for an install, or a version (and revision) of a connector, the instances under
//! it and the flow steps bound through it — within the asking organisation only (another
//! organisation's flows are none of its business, whoever published the connector).

use super::rules::{load_install_row, visible_version};
use super::{Registry, Result};
use crate::model::{Install, Instance, version_key};
use crate::store::Metadata;
use serde::{Deserialize, Serialize};

/// What uses an install, a version or a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// The installs it covers, each `org/name@version` with its revision.
    pub installs: Vec<UsedInstall>,
    pub instances: Vec<UsedInstance>,
    pub steps: Vec<UsedStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsedInstall {
    pub install: i64,
    pub connector: String,
    pub revision: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsedInstance {
    pub instance: i64,
    pub name: String,
    pub install: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsedStep {
    pub flow: i64,
    pub step: String,
    pub operation: String,
    pub instance: i64,
    /// `org/name@version` and revision the step is pinned to.
    pub connector: Option<String>,
    pub revision: Option<u32>,
}

impl Registry {
    /// What uses install `id` of `org`.
    pub fn install_usage(&self, org: &str, id: i64) -> Result<Usage> {
        self.read(|m| {
            let install = load_install_row(m, org, id)?;
            usage(m, org, vec![install])
        })
    }

    /// What in `org` uses `pkg_org/name@version` (only its revision `revision`, if given).
    pub fn version_usage(
        &self,
        org: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
        revision: Option<u32>,
    ) -> Result<Usage> {
        self.read(|m| {
            // Not found unless the version is one `org` may see.
            visible_version(m, org, pkg_org, name, version)?;
            let version = version_key(version);
            let installs = all_installs(m, org)?
                .into_iter()
                .filter(|i| i.package_org == pkg_org && i.name == name)
                .filter(|i| i.version.to_string() == version)
                .filter(|i| revision.is_none_or(|r| i.revision == r))
                .collect();
            usage(m, org, installs)
        })
    }
}

fn usage(m: &mut dyn Metadata, org: &str, installs: Vec<Install>) -> Result<Usage> {
    let ids: Vec<i64> = installs.iter().map(|i| i.id).collect();
    let instances: Vec<Instance> = all_instances(m, org)?
        .into_iter()
        .filter(|i| ids.contains(&i.install_id))
        .collect();
    let mut steps = Vec::new();
    for install in &installs {
        for step in m.steps_through_install(org, install.id)? {
            let pinned = super::rules::current(m.revisions_with(
                &install.package_org,
                &install.name,
                &step.digest,
            )?);
            steps.push(UsedStep {
                flow: step.flow,
                step: step.name,
                operation: step.operation,
                instance: step.instance,
                connector: pinned.as_ref().map(|v| v.reference()),
                revision: pinned.map(|v| v.revision),
            });
        }
    }
    Ok(Usage {
        installs: installs
            .iter()
            .map(|i| UsedInstall {
                install: i.id,
                connector: i.reference(),
                revision: i.revision,
            })
            .collect(),
        instances: instances
            .into_iter()
            .map(|i| UsedInstance {
                instance: i.id,
                name: i.name,
                install: i.install_id,
            })
            .collect(),
        steps,
    })
}

/// Every page of a list the store answers by id.
fn all_pages<T>(
    mut page: impl FnMut(i64) -> Result<Vec<T>>,
    id: impl Fn(&T) -> i64,
) -> Result<Vec<T>> {
    let mut all = Vec::new();
    loop {
        let items = page(all.last().map_or(0, &id))?;
        let full = items.len() == 1000;
        all.extend(items);
        if !full {
            return Ok(all);
        }
    }
}

fn all_installs(m: &mut dyn Metadata, org: &str) -> Result<Vec<Install>> {
    all_pages(|after| Ok(m.installs(org, after, 1000)?), |i| i.id)
}

pub(crate) fn all_instances(m: &mut dyn Metadata, org: &str) -> Result<Vec<Instance>> {
    all_pages(|after| Ok(m.instances(org, after, 1000)?), |i| i.id)
}
