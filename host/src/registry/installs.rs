//! Installs and their two update modes.

use super::compat::Severity;
use super::plan::{self, UpdatePlan};
use super::rules::{
    audit, check_bindable, check_config_keys, installed_version, load_install, load_install_row,
    require_org, visible_version, with_update_available,
};
use super::{Error, Registry, Result, now_ms};
use crate::model::{Install, Page, Risk, Update, UpdateMode};
use crate::store::Metadata;
use serde_json::Value;
use std::collections::BTreeMap;

impl Registry {
    // ----- installs ------------------------------------------------------------------------

    /// Take `pkg_org/name@version` into `org`. Deprecated and blocked versions are refused.
    pub fn install(
        &self,
        org: &str,
        actor: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
    ) -> Result<Install> {
        self.change(|m| {
            require_org(m, org)?;
            let target = visible_version(m, org, pkg_org, name, version)?;
            check_bindable(&target)?;
            let id = m.insert_install(org, actor, &target, now_ms())?;
            audit(
                m,
                org,
                actor,
                "install",
                &format!("install {id}"),
                Value::Null,
                serde_json::json!({"package": target.reference(), "digest": target.digest}),
            )?;
            load_install(m, org, id)
        })
    }

    pub fn get_install(&self, org: &str, id: i64) -> Result<Install> {
        self.read(|m| load_install(m, org, id))
    }

    /// One page of the installs of `org`, by id.
    pub fn installs(&self, org: &str, page: &Page) -> Result<Vec<Install>> {
        let after = page.after_id()?.unwrap_or(0);
        self.read(|m| {
            m.installs(org, after, page.limit())?
                .into_iter()
                .map(|install| with_update_available(m, install))
                .collect()
        })
    }

    /// Set the install's customisations (an overlay on the connector's default config). Keys
    /// must be config keys the connector declares.
    pub fn customise(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        customisations: BTreeMap<String, String>,
    ) -> Result<Install> {
        self.change(|m| {
            let install = load_install_row(m, org, id)?;
            let package = installed_version(m, &install)?;
            check_config_keys(&package, customisations.keys())?;
            m.set_customisations(org, id, &customisations, Some((actor, now_ms())))?;
            audit(
                m,
                org,
                actor,
                "customise",
                &format!("install {id}"),
                serde_json::to_value(&install.customisations)?,
                serde_json::to_value(&customisations)?,
            )?;
            load_install(m, org, id)
        })
    }

    /// Grant install `id` the outbound origins `hosts` (replacing earlier grants). Each must be
    /// `scheme://host[:port]` with optional `*` wildcards.
    pub fn grant_outbound(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        hosts: Vec<String>,
    ) -> Result<Install> {
        crate::sandbox::policy::parse_patterns(&hosts).map_err(|e| Error::InvalidInput(e.0))?;
        self.change(|m| {
            let install = load_install_row(m, org, id)?;
            m.set_outbound(org, id, &hosts)?;
            audit(
                m,
                org,
                actor,
                "grant-outbound",
                &format!("install {id}"),
                serde_json::to_value(&install.outbound)?,
                serde_json::to_value(&hosts)?,
            )?;
            load_install(m, org, id)
        })
    }

    /// Update install `id` as `update` says. Returns the install that now runs the new
    /// version (the same one for overwrite, a new one for alongside).
    pub fn update(&self, org: &str, actor: &str, id: i64, update: &Update) -> Result<Install> {
        let install = self.change(|m| self.update_in(m, org, actor, id, update))?;
        self.collect_garbage(&install.package_org, &install.name)?;
        Ok(install)
    }

    fn update_in(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        actor: &str,
        id: i64,
        update: &Update,
    ) -> Result<Install> {
        let install = load_install_row(m, org, id)?;
        let target = visible_version(m, org, &install.package_org, &install.name, &update.version)?;
        check_bindable(&target)?;
        if target.version == install.version && target.revision == install.revision {
            return Err(Error::InvalidInput(format!(
                "install {id} is already on {} (revision {})",
                target.reference(),
                target.revision
            )));
        }
        let plan = plan::plan(m, org, id, &update.version)?;
        let result_id = match update.mode {
            UpdateMode::Alongside => {
                // Nothing existing moves: only going down needs saying so.
                unaccepted(&plan, update, &[Risk::Downgrade])?;
                let new_id = m.insert_install(org, actor, &target, now_ms())?;
                m.set_outbound(org, new_id, &install.outbound)?;
                let carried: BTreeMap<String, String> = if update.carry_customisations {
                    install
                        .customisations
                        .iter()
                        .filter(|(key, _)| {
                            target.description.config.iter().any(|k| k.name == **key)
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                } else {
                    BTreeMap::new()
                };
                if !carried.is_empty() {
                    m.set_customisations(org, new_id, &carried, Some((actor, now_ms())))?;
                }
                audit(
                    m,
                    org,
                    actor,
                    "update-alongside",
                    &format!("install {new_id}"),
                    serde_json::json!({"install": id, "package": install.reference()}),
                    serde_json::json!({"install": new_id, "package": target.reference(), "digest": target.digest,
                        "outbound": install.outbound, "customisations": carried}),
                )?;
                new_id
            }
            UpdateMode::Overwrite => {
                // An overwrite drops the customisations with the old version.
                m.set_install_version(org, id, &target.version, target.revision)?;
                m.set_customisations(org, id, &BTreeMap::new(), None)?;
                // Rebind every step bound through this install's instances, as part of the
                // update (refused if a step's operation is gone).
                let rebound = super::flows::rebind_install_steps(m, org, id, &target)?;
                if let Some(lack) = plan.instances_lacking.first() {
                    return Err(Error::CredentialsNeeded(format!(
                        "instance {} ({}) of install {id} lacks {}, which {} requires{}; \
                         install {} alongside, create instances with them and rebind the steps",
                        lack.instance,
                        lack.name,
                        lack.missing.join(", "),
                        target.reference(),
                        match plan.instances_lacking.len() {
                            1 => String::new(),
                            n => format!(" (and {} more instances)", n - 1),
                        },
                        target.version,
                    )));
                }
                unaccepted(&plan, update, &plan.risks)?;
                audit(
                    m,
                    org,
                    actor,
                    "update-overwrite",
                    &format!("install {id}"),
                    serde_json::json!({"package": install.reference(), "customisations": install.customisations}),
                    serde_json::json!({"package": target.reference(), "digest": target.digest, "rebound_steps": rebound,
                        "acknowledged": plan.risks}),
                )?;
                id
            }
        };
        load_install(m, org, result_id)
    }
}

/// Refuse `update` unless it accepts every risk of `plan` among `risks`, saying what each is.
fn unaccepted(plan: &UpdatePlan, update: &Update, risks: &[Risk]) -> Result<()> {
    let missing: Vec<String> = risks
        .iter()
        .filter(|r| plan.risks.contains(r) && !update.accepts(**r))
        .map(|r| {
            let what = match r {
                Risk::CustomisationsLost => format!(
                    "its customisations ({}, set by {}) are dropped",
                    plan.customisations_lost
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    plan.customised_by.as_deref().unwrap_or("someone")
                ),
                Risk::BreakingChanges | Risk::UnknownChanges => {
                    let severity = if *r == Risk::BreakingChanges {
                        Severity::Breaking
                    } else {
                        Severity::Unknown
                    };
                    plan.changes
                        .iter()
                        .filter(|c| c.severity == severity)
                        .map(|c| format!("{}: {}", c.subject, c.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                Risk::MissingCredentials => "instances lack newly required credentials".into(),
                Risk::NewOutboundHosts => {
                    format!("it calls {}", plan.new_outbound_hosts.join(", "))
                }
                Risk::Downgrade => format!("{} is lower than {}", plan.to, plan.from),
            };
            format!(
                "{} ({what})",
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::AcknowledgementRequired(format!(
        "updating install {} from {} to {} needs acknowledging: {} — see its update plan, \
         or install alongside",
        plan.install,
        plan.from,
        plan.to,
        missing.join("; ")
    )))
}
