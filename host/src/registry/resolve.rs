//! Resolving what a call runs: an instance's call runs the revision its install pins (a newer
//! private revision only after an explicit update); a flow step's runs the exact digest it is pinned to, looked up within the
//! package its instance's install took in (a digest is not an identity across organisations:
//! another one may publish the same bytes, with another state). Either way a blocked version
//! is refused, and the call gets config (the connector's defaults, then the install's
//! customisations, then the instance's), its opened secrets and its install's grants.
//!
//! Results are kept in the [pin table](super::pins) until the next lifecycle change.

use super::pins::{Call, Pinned, Plan, Target};
use super::rules::{
    current, describe_pin, installed_version, load_flow, load_install_row, load_instance, visible,
};
use super::{Error, Registry, Result};
use crate::model::{Canary, Digest, Install, Instance, Step, VersionInfo, VersionState};
use crate::runtime::Connector;
use crate::sandbox::{CallContext, Secrets};
use crate::store::Metadata;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A version found for a call, with what its context is built from (all read in one unit).
struct Found {
    version: VersionInfo,
    instance: Instance,
    install: Install,
    secrets: BTreeMap<String, String>,
}

impl Registry {
    /// What a call of instance `id` of `org` runs now.
    pub(crate) async fn pinned_call(&self, org: &str, id: i64) -> Result<Arc<Call>> {
        let target = Target::Instance {
            org: org.to_string(),
            id,
        };
        if let Some(Pinned::Call(call)) = self.pins.get(&target) {
            return Ok(call);
        }
        let generation = self.pins.generation();
        let found = self.off_executor(|| {
            self.read(|m| {
                let instance = load_instance(m, org, id)?;
                let install = load_install_row(m, org, instance.install_id)?;
                let version = installed_version(m, &install)?;
                let secrets = self.open_secrets(m, org, id)?;
                Ok(Found {
                    version,
                    instance,
                    install,
                    secrets,
                })
            })
        })?;
        let call = Arc::new(self.call_of(org, found).await?);
        self.pins
            .keep(target, Pinned::Call(call.clone()), generation);
        Ok(call)
    }

    /// What a run of flow `id` of `org` runs now: the flow and, per step, its call or why it
    /// cannot be made.
    pub(crate) async fn plan(&self, org: &str, id: i64) -> Result<Arc<Plan>> {
        let target = Target::Flow {
            org: org.to_string(),
            id,
        };
        if let Some(Pinned::Plan(plan)) = self.pins.get(&target) {
            return Ok(plan);
        }
        let generation = self.pins.generation();
        let (flow, found, canaries) = self.off_executor(|| {
            self.read(|m| {
                let mut flow = load_flow(m, org, id)?;
                let splitting: Vec<Canary> = m
                    .flow_canaries(org, id)?
                    .into_iter()
                    .filter(Canary::splitting)
                    .collect();
                let canaries = flow
                    .steps
                    .iter()
                    .map(|step| {
                        let Some(canary) = splitting.iter().find(|c| c.step == step.name) else {
                            return Ok(None);
                        };
                        let arm = Step {
                            instance: canary.candidate_instance,
                            digest: canary.candidate_digest,
                            ..step.clone()
                        };
                        Ok(Some((canary.clone(), found_for_step(self, m, org, &arm)?)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let found = flow
                    .steps
                    .iter()
                    .map(|step| found_for_step(self, m, org, step))
                    .collect::<Result<Vec<_>>>()?;
                // What each step runs, as its run records it: from what was just found.
                for (step, found) in flow.steps.iter_mut().zip(&found) {
                    if let Ok(found) = found {
                        describe_pin(m, step, found.install.clone(), Some(&found.version))?;
                    }
                }
                Ok((flow, found, canaries))
            })
        })?;
        let mut steps = Vec::with_capacity(found.len());
        for step in found {
            steps.push(match step {
                Ok(found) => self.call_of(org, found).await.map(Arc::new),
                Err(e) => Err(e),
            });
        }
        let mut arms = Vec::with_capacity(canaries.len());
        for canary in canaries {
            arms.push(match canary {
                None => None,
                Some((canary, Ok(found))) => {
                    Some((canary, self.call_of(org, found).await.map(Arc::new)))
                }
                Some((canary, Err(e))) => Some((canary, Err(e))),
            });
        }
        let plan = Arc::new(Plan {
            flow,
            steps,
            canaries: arms,
        });
        self.pins
            .keep(target, Pinned::Plan(plan.clone()), generation);
        Ok(plan)
    }

    /// The call that runs `found`: refused when its version is blocked.
    async fn call_of(&self, org: &str, found: Found) -> Result<Call> {
        let Found {
            version,
            instance,
            install,
            secrets,
        } = found;
        if version.state == VersionState::Blocked {
            return Err(Error::Blocked(version.reference()));
        }
        let mut config: BTreeMap<String, String> = version
            .description
            .config
            .iter()
            .filter_map(|k| k.default_value.clone().map(|v| (k.name.clone(), v)))
            .collect();
        config.extend(install.customisations);
        config.extend(instance.config);
        let ctx = CallContext {
            config,
            secrets: Secrets::new(secrets),
            limits: None,
            outbound: install.outbound,
            allow_private: self.private_addresses.get(org).cloned().unwrap_or_default(),
            tape: None,
        };
        let connector = self.connector(&version.digest, version.size).await?;
        Ok(Call { connector, ctx })
    }

    /// The connector for `digest` (of `size` bytes): the one already loaded, the cached
    /// artifact (its blob not even read), or its blob loaded and compiled.
    pub(crate) async fn connector(&self, digest: &Digest, size: u64) -> Result<Arc<Connector>> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if let Some(loaded) = self.runtime.load_cached(digest, size).await? {
            return Ok(loaded);
        }
        let bytes = self
            .off_executor(|| self.blobs.get(digest))?
            .ok_or_else(|| Error::storage(format!("the blob of {digest} is missing")))?;
        Ok(self.runtime.load(&bytes).await?)
    }
}

/// What step `step` of a flow of `org` runs, or why it cannot run (the run records that as the
/// step's failure); `Err` of the outer result only for a storage failure.
fn found_for_step(
    registry: &Registry,
    m: &mut dyn Metadata,
    org: &str,
    step: &Step,
) -> Result<std::result::Result<Found, Error>> {
    let found = (|| {
        let instance = load_instance(m, org, step.instance)?;
        let install = load_install_row(m, org, instance.install_id)?;
        let version =
            current(m.revisions_with(&install.package_org, &install.name, &step.digest)?)
                .filter(|v| visible(v, org))
                .ok_or_else(|| Error::NotFound(format!("connector version {}", step.digest)))?;
        let secrets = registry.open_secrets(m, org, instance.id)?;
        Ok(Found {
            version,
            instance,
            install,
            secrets,
        })
    })();
    match found {
        Err(e @ Error::Storage { .. }) => Err(e),
        other => Ok(other),
    }
}
