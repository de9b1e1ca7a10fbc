//! The update plan: what moving an install to another version would do, worked out before
//! anything changes — the customisations an overwrite drops, the flow steps it moves (and which
//! of them would lose their operation), what the new version changes ([`compat::changes`]), the
//! instances that lack a config key or secret it newly requires, the outbound hosts it would
//! call, and the risks that follow from these, by name.

use super::compat::{self, Change, Severity};
use super::rules::{installed_version, load_install_row, visible_version};
use super::{Registry, Result};
use crate::model::{Description, Risk};
use crate::store::Metadata;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What updating an install to another version would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdatePlan {
    pub install: i64,
    /// `org/name@version` the install runs now, and the one the plan is for, each with its
    /// revision (a private republish is an update of the same version to a newer revision).
    pub from: String,
    pub from_revision: u32,
    pub to: String,
    pub to_revision: u32,
    /// The customisations an overwrite drops, with who last set them and when (ms).
    pub customisations_lost: BTreeMap<String, String>,
    pub customised_by: Option<String>,
    pub customised_at: Option<i64>,
    /// The flow steps bound through the install's instances: an overwrite moves each of them.
    pub steps: Vec<PlannedStep>,
    /// What the new version changes against the installed one, breaking changes first.
    pub changes: Vec<Change>,
    /// Instances of the install that lack a config key or secret the new version requires.
    pub instances_lacking: Vec<InstanceLack>,
    /// Outbound hosts the new version declares that the installed one did not.
    pub new_outbound_hosts: Vec<String>,
    /// The WIT world of each version: the interfaces it exports and imports (empty for a
    /// version published before Gantry recorded it).
    pub from_world: Vec<String>,
    pub to_world: Vec<String>,
    /// What the update puts at risk; each must be acknowledged to go ahead.
    pub risks: Vec<Risk>,
}

/// A flow step an overwrite would move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedStep {
    pub flow: i64,
    pub step: String,
    pub operation: String,
    pub instance: i64,
    /// The new version has no such operation: the step would fail, so an overwrite is refused.
    pub operation_removed: bool,
}

/// An instance that lacks what the new version requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceLack {
    pub instance: i64,
    pub name: String,
    /// Config keys (`config greeting`) and secrets (`secret token`) it has no value for.
    pub missing: Vec<String>,
}

impl Registry {
    /// What updating install `id` of `org` to `version` would do; nothing changes.
    pub fn update_plan(&self, org: &str, id: i64, version: &str) -> Result<UpdatePlan> {
        self.read(|m| plan(m, org, id, version))
    }
}

/// The plan of updating install `id` of `org` to `version`, as the store has it in unit `m`.
pub(crate) fn plan(m: &mut dyn Metadata, org: &str, id: i64, version: &str) -> Result<UpdatePlan> {
    let install = load_install_row(m, org, id)?;
    let from = installed_version(m, &install)?;
    let to = visible_version(m, org, &install.package_org, &install.name, version)?;
    let steps: Vec<PlannedStep> = m
        .steps_through_install(org, id)?
        .into_iter()
        .map(|s| PlannedStep {
            operation_removed: !to
                .description
                .operations
                .iter()
                .any(|o| o.name == s.operation),
            flow: s.flow,
            step: s.name,
            operation: s.operation,
            instance: s.instance,
        })
        .collect();
    let instances_lacking: Vec<InstanceLack> = super::usage::all_instances(m, org)?
        .into_iter()
        .filter(|i| i.install_id == id)
        .filter_map(|i| {
            let missing = lacking(&to.description, &i.config, &i.secret_keys);
            (!missing.is_empty()).then_some(InstanceLack {
                instance: i.id,
                name: i.name,
                missing,
            })
        })
        .collect();
    let changes = compat::changes(&from.description, &to.description);
    let mut world = |v: &crate::model::VersionInfo| -> Result<Vec<String>> {
        Ok(
            m.world(&v.org, &v.name, &v.version.to_string(), v.revision)?
                .unwrap_or_default(),
        )
    };
    let (from_world, to_world) = (world(&from)?, world(&to)?);
    let new_outbound_hosts: Vec<String> = to
        .description
        .outbound_hosts
        .iter()
        .filter(|h| !from.description.outbound_hosts.contains(h))
        .cloned()
        .collect();
    let mut risks = Vec::new();
    let mut risk = |yes: bool, risk: Risk| {
        if yes {
            risks.push(risk);
        }
    };
    risk(!install.customisations.is_empty(), Risk::CustomisationsLost);
    risk(
        changes.iter().any(|c| c.severity == Severity::Breaking),
        Risk::BreakingChanges,
    );
    risk(
        changes.iter().any(|c| c.severity == Severity::Unknown),
        Risk::UnknownChanges,
    );
    risk(!instances_lacking.is_empty(), Risk::MissingCredentials);
    risk(!new_outbound_hosts.is_empty(), Risk::NewOutboundHosts);
    risk(to.version < from.version, Risk::Downgrade);
    Ok(UpdatePlan {
        install: id,
        from: from.reference(),
        from_revision: from.revision,
        to: to.reference(),
        to_revision: to.revision,
        customisations_lost: install.customisations.clone(),
        customised_by: install.modified_by.clone(),
        customised_at: install.modified_at,
        steps,
        changes,
        instances_lacking,
        new_outbound_hosts,
        from_world,
        to_world,
        risks,
    })
}

/// The config keys and secrets `description` requires that an instance with `config` and
/// `secret_keys` has no value for (a config key with a default needs none).
fn lacking(
    description: &Description,
    config: &BTreeMap<String, String>,
    secret_keys: &[String],
) -> Vec<String> {
    let keys = description
        .config
        .iter()
        .filter(|k| k.required && k.default_value.is_none() && !config.contains_key(&k.name))
        .map(|k| format!("config {}", k.name));
    let secrets = description
        .secrets
        .iter()
        .filter(|s| s.required && !secret_keys.contains(&s.name))
        .map(|s| format!("secret {}", s.name));
    keys.chain(secrets).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConfigKey, SecretKey};

    #[test]
    fn an_instance_lacks_what_is_required_and_has_no_default() {
        let key = |name: &str, required, default: Option<&str>| ConfigKey {
            name: name.into(),
            description: String::new(),
            default_value: default.map(Into::into),
            required,
        };
        let secret = |name: &str, required| SecretKey {
            name: name.into(),
            description: String::new(),
            required,
        };
        let description = Description {
            name: "c".into(),
            version: semver::Version::new(2, 0, 0),
            description: String::new(),
            operations: Vec::new(),
            config: vec![
                key("region", true, None),
                key("mode", true, Some("fast")),
                key("label", false, None),
                key("tenant", true, None),
            ],
            secrets: vec![
                secret("token", true),
                secret("extra", false),
                secret("key", true),
            ],
            outbound_hosts: Vec::new(),
        };
        let config = BTreeMap::from([("tenant".to_string(), "t1".to_string())]);
        assert_eq!(
            lacking(&description, &config, &["key".to_string()]),
            ["config region", "secret token"]
        );
    }
}
