//! Instances: configuration and sealed credentials of an install.

use super::rules::{audit, check_config_keys, installed_version, load_install_row, load_instance};
use super::{Error, Registry, Result, now_ms};
use crate::model::{Instance, Page, VersionInfo, validate_label};
use crate::runtime::{CallError, CallOutput, Connector};
use crate::store::Metadata;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Registry {
    // ----- instances -----------------------------------------------------------------------

    /// Create an instance of install `install_id` with its config and credentials.
    pub fn create_instance(
        &self,
        org: &str,
        actor: &str,
        install_id: i64,
        name: &str,
        config: BTreeMap<String, String>,
        secrets: BTreeMap<String, String>,
    ) -> Result<Instance> {
        validate_label("instance name", name)?;
        let plaintext = serde_json::to_string(&secrets)?;
        self.change(|m| {
            let install = load_install_row(m, org, install_id)?;
            let package = installed_version(m, &install)?;
            check_config_keys(&package, config.keys())?;
            check_secrets(&package, &secrets)?;
            let mut instance = Instance {
                id: 0,
                org: org.to_string(),
                install_id,
                name: name.to_string(),
                config: config.clone(),
                secret_keys: secrets.keys().cloned().collect(),
                created_by: actor.to_string(),
                created_at: now_ms(),
            };
            instance.id = m.insert_instance(&instance)?;
            // Sealed with the id, so the ciphertext opens only in this row.
            let sealed = self.vault.seal(org, instance.id, plaintext.as_bytes())?;
            m.set_sealed_secrets(org, instance.id, &instance.secret_keys, &sealed)?;
            audit(
                m,
                org,
                actor,
                "create-instance",
                &format!("instance {}", instance.id),
                Value::Null,
                serde_json::json!({"install": install_id, "name": name, "config": config, "secret_keys": instance.secret_keys}),
            )?;
            Ok(instance)
        })
    }

    /// Replace every secret of instance `id` (rotate its credentials): the same rules as at
    /// creation, against the version its install runs now. The next call uses them.
    pub fn rotate_secrets(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        secrets: BTreeMap<String, String>,
    ) -> Result<Instance> {
        let plaintext = serde_json::to_string(&secrets)?;
        self.change(|m| {
            let mut instance = load_instance(m, org, id)?;
            let install = load_install_row(m, org, instance.install_id)?;
            check_secrets(&installed_version(m, &install)?, &secrets)?;
            let before = instance.secret_keys.clone();
            instance.secret_keys = secrets.keys().cloned().collect();
            let sealed = self.vault.seal(org, id, plaintext.as_bytes())?;
            m.set_sealed_secrets(org, id, &instance.secret_keys, &sealed)?;
            audit(
                m,
                org,
                actor,
                "rotate-secrets",
                &format!("instance {id}"),
                serde_json::json!({"secret_keys": before}),
                serde_json::json!({"secret_keys": instance.secret_keys}),
            )?;
            Ok(instance)
        })
    }

    pub fn get_instance(&self, org: &str, id: i64) -> Result<Instance> {
        self.read(|m| load_instance(m, org, id))
    }

    /// One page of the instances of `org`, by id.
    pub fn instances(&self, org: &str, page: &Page) -> Result<Vec<Instance>> {
        let after = page.after_id()?.unwrap_or(0);
        self.read(|m| Ok(m.instances(org, after, page.limit())?))
    }

    /// The decrypted secrets of an instance, for a call only.
    pub(crate) fn open_secrets(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        id: i64,
    ) -> Result<BTreeMap<String, String>> {
        let sealed = m
            .sealed_secrets(org, id)?
            .ok_or_else(|| Error::NotFound(format!("instance {id}")))?;
        let plaintext = self
            .vault
            .open(org, id, &sealed)
            .map_err(|e| Error::storage_from(format!("the secrets of instance {id}"), e))?;
        serde_json::from_slice(&plaintext)
            .map_err(|e| Error::storage_from("sealed secrets are not a JSON object", e))
    }

    /// Run `operation` of instance `id` on the version its install runs now (blocked versions
    /// are refused). Returns the connector that ran, and the call's own result.
    pub async fn invoke_instance(
        &self,
        org: &str,
        id: i64,
        operation: &str,
        input: &str,
    ) -> Result<(Arc<Connector>, std::result::Result<CallOutput, CallError>)> {
        let call = self.pinned_call(org, id).await?;
        let result = self
            .runtime
            .invoke(&call.connector, operation, input, &call.ctx)
            .await;
        Ok((call.connector.clone(), result))
    }

    /// `(name, version)` of the loaded connector with `digest`, for labels (metrics, logs):
    /// what its own `describe()` says, never another organisation's row for the same bytes.
    pub fn label_of(&self, digest: &crate::model::Digest) -> Option<(String, String)> {
        let connector = self.runtime.loaded_connector(digest)?;
        let description = connector.description();
        Some((description.name.clone(), description.version.to_string()))
    }
}

/// Refuse secrets that `package` does not declare, or that lack one it requires.
fn check_secrets(package: &VersionInfo, secrets: &BTreeMap<String, String>) -> Result<()> {
    let described = &package.description;
    if let Some(key) = secrets
        .keys()
        .find(|k| !described.secrets.iter().any(|s| &s.name == *k))
    {
        return Err(Error::InvalidInput(format!(
            "`{key}` is not a secret of {}",
            package.reference()
        )));
    }
    if let Some(missing) = described
        .secrets
        .iter()
        .find(|s| s.required && !secrets.contains_key(&s.name))
    {
        return Err(Error::InvalidInput(format!(
            "secret `{}` is required by {}",
            missing.name,
            package.reference()
        )));
    }
    Ok(())
}
