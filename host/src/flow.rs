//! Flows: ordered steps, each naming an instance and an operation, mapping its input from the
//! flow's input and earlier steps' outputs, and **pinned to the exact digest** current when it
//! was bound. Nothing moves a pin except an explicit rebind (one step, every step using an
//! install, or an overwrite update of that install). Every run is recorded.
//!
//! Input mapping: in a step's `input` JSON, a string that is exactly `${input}`,
//! `${input.a.b}`, `${steps.NAME}` or `${steps.NAME.a.0}` is replaced by that value.

use crate::call::CallError;
use crate::capability::{CallContext, Secrets};
use crate::digest::Digest;
use crate::metadata::Metadata;
use crate::registry::{
    Error, Install, Instance, Registry, Result, VersionInfo, VersionState, audit, check_bindable,
    installed_version, load_install_row, load_instance, now_ms, require_org, validate_label,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// A step as a caller writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    pub instance: i64,
    pub operation: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A bound step: its spec and the digest it is pinned to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    pub instance: i64,
    pub operation: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = String)]
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Flow {
    pub id: i64,
    pub org: String,
    pub name: String,
    pub steps: Vec<Step>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// What one step of a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRun {
    pub name: String,
    #[schema(value_type = String)]
    pub digest: Digest,
    pub duration_us: u64,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<RunError>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub step: String,
    pub code: String,
    pub message: String,
}

/// A recorded run of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub flow_id: i64,
    pub status: RunStatus,
    pub started_at: i64,
    pub duration_us: u64,
    pub steps: Vec<StepRun>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<RunError>,
}

/// Replace `${input…}` and `${steps.NAME…}` strings in `template` with values from `scope`.
pub fn map_input(template: &Value, scope: &Value) -> std::result::Result<Value, String> {
    Ok(match template {
        Value::String(s) if s.starts_with("${") && s.ends_with('}') => {
            let path = &s[2..s.len() - 1];
            let mut node = scope;
            for segment in path.split('.') {
                node = match node {
                    Value::Object(map) => map.get(segment),
                    Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                }
                .ok_or_else(|| format!("input mapping refers to missing `{path}`"))?;
            }
            node.clone()
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| map_input(v, scope))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), map_input(v, scope)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Rebind every step bound through `install`'s instances to `target` (overwrite update).
/// Refused, changing nothing, when `target` lacks an operation one of those steps uses.
pub(crate) fn rebind_install_steps(
    m: &mut dyn Metadata,
    org: &str,
    install: i64,
    target: &VersionInfo,
) -> Result<Vec<Value>> {
    let steps = m.steps_through_install(org, install)?;
    let missing: Vec<String> = steps
        .iter()
        .filter(|s| target.description.operation(&s.operation).is_none())
        .map(|s| format!("flow {} step `{}` uses `{}`", s.flow, s.name, s.operation))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Conflict(format!(
            "{} lacks operations bound flows use ({}); install it alongside and rebind instead",
            target.reference(),
            missing.join("; ")
        )));
    }
    for step in &steps {
        m.bind_step(step.flow, &step.name, step.instance, &target.digest)?;
    }
    Ok(steps
        .into_iter()
        .map(|s| json!({"flow": s.flow, "step": s.name, "from": s.digest, "to": target.digest}))
        .collect())
}

/// The digest a new binding to `instance` gets, checking the operation exists and the version
/// may be bound.
fn bind(m: &mut dyn Metadata, org: &str, instance: i64, operation: &str) -> Result<Digest> {
    let instance = load_instance(m, org, instance)?;
    let install = load_install_row(m, org, instance.install_id)?;
    let version = installed_version(m, &install)?;
    check_bindable(&version)?;
    if version.description.operation(operation).is_none() {
        return Err(Error::InvalidInput(format!(
            "{} has no operation `{operation}`",
            version.reference()
        )));
    }
    Ok(version.digest)
}

fn load_flow(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Flow> {
    m.flow(org, id)?
        .ok_or_else(|| Error::NotFound(format!("flow {id}")))
}

impl Registry {
    /// Create a flow; each step is pinned to the digest its instance's install runs now.
    pub fn create_flow(
        &self,
        org: &str,
        actor: &str,
        name: &str,
        steps: Vec<StepSpec>,
    ) -> Result<Flow> {
        validate_label("flow name", name)?;
        if steps.is_empty() {
            return Err(Error::InvalidInput("a flow needs at least one step".into()));
        }
        let mut names = HashSet::new();
        for step in &steps {
            validate_label("step name", &step.name)?;
            if !names.insert(step.name.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "step name `{}` is used twice",
                    step.name
                )));
            }
        }
        self.meta.write(|m| {
            require_org(m, org)?;
            if m.flow_name_taken(org, name)? {
                return Err(Error::Conflict(format!("a flow named `{name}` exists")));
            }
            let id = m.insert_flow(org, name, actor, now_ms())?;
            let mut pins = Vec::new();
            for (position, spec) in steps.iter().enumerate() {
                let step = Step {
                    name: spec.name.clone(),
                    instance: spec.instance,
                    operation: spec.operation.clone(),
                    input: spec.input.clone(),
                    digest: bind(m, org, spec.instance, &spec.operation)?,
                };
                m.insert_step(id, position, &step)?;
                pins.push(
                    json!({"step": step.name, "instance": step.instance, "digest": step.digest}),
                );
            }
            audit(
                m,
                org,
                actor,
                "create-flow",
                &format!("flow {id}"),
                Value::Null,
                json!({"name": name, "steps": pins}),
            )?;
            load_flow(m, org, id)
        })
    }

    pub fn get_flow(&self, org: &str, id: i64) -> Result<Flow> {
        self.meta.read(|m| load_flow(m, org, id))
    }

    pub fn flows(&self, org: &str) -> Result<Vec<Flow>> {
        self.meta.read(|m| m.flows(org))
    }

    /// Rebind step `step` of flow `flow` to `instance` (or its own instance again, picking up
    /// what that install runs now). Deprecated and blocked versions are refused.
    pub fn rebind_step(
        &self,
        org: &str,
        actor: &str,
        flow: i64,
        step: &str,
        instance: Option<i64>,
    ) -> Result<Flow> {
        let rebound = self.meta.write(|m| {
            let current = load_flow(m, org, flow)?;
            let old = current
                .steps
                .iter()
                .find(|s| s.name == step)
                .ok_or_else(|| Error::NotFound(format!("step `{step}` of flow {flow}")))?;
            let instance = instance.unwrap_or(old.instance);
            let digest = bind(m, org, instance, &old.operation)?;
            m.bind_step(flow, step, instance, &digest)?;
            audit(
                m,
                org,
                actor,
                "rebind-step",
                &format!("flow {flow} step {step}"),
                json!({"instance": old.instance, "digest": old.digest}),
                json!({"instance": instance, "digest": digest}),
            )?;
            load_flow(m, org, flow)
        })?;
        self.collect_garbage()?;
        Ok(rebound)
    }

    /// Rebind every step (in every flow of `org`) that uses an instance of install `from` to
    /// instance `to`. Returns how many steps moved.
    pub fn rebind_install(&self, org: &str, actor: &str, from: i64, to: i64) -> Result<usize> {
        let moved = self.meta.write(|m| {
            load_install_row(m, org, from)?; // it must exist
            let steps = m.steps_through_install(org, from)?;
            let mut moved = Vec::new();
            for step in &steps {
                let digest = bind(m, org, to, &step.operation)?;
                m.bind_step(step.flow, &step.name, to, &digest)?;
                moved.push(json!({"flow": step.flow, "step": step.name,
                    "from": {"instance": step.instance, "digest": step.digest},
                    "to": {"instance": to, "digest": digest}}));
            }
            audit(
                m,
                org,
                actor,
                "rebind-install",
                &format!("install {from}"),
                Value::Null,
                json!({"steps": moved}),
            )?;
            Ok(steps.len())
        })?;
        self.collect_garbage()?;
        Ok(moved)
    }

    /// Run flow `flow` on `input`. The run is recorded whether it succeeds or fails; an error
    /// is returned only when the flow cannot be found.
    pub async fn run_flow(&self, org: &str, flow: i64, input: Value) -> Result<Run> {
        let flow = self.get_flow(org, flow)?;
        let started_at = now_ms();
        let started = Instant::now();
        let mut scope = json!({"input": input, "steps": {}});
        let mut records = Vec::new();
        let mut failure = None;
        let mut output = None;
        for step in &flow.steps {
            let step_started = Instant::now();
            let result = self.run_step(org, step, &scope).await;
            let duration_us = step_started.elapsed().as_micros() as u64;
            match result {
                Ok(value) => {
                    scope["steps"][&step.name] = value.clone();
                    output = Some(value.clone());
                    records.push(StepRun {
                        name: step.name.clone(),
                        digest: step.digest,
                        duration_us,
                        output: Some(value),
                        error: None,
                    });
                }
                Err((code, message)) => {
                    let error = RunError {
                        step: step.name.clone(),
                        code,
                        message,
                    };
                    records.push(StepRun {
                        name: step.name.clone(),
                        digest: step.digest,
                        duration_us,
                        output: None,
                        error: Some(error.clone()),
                    });
                    failure = Some(error);
                    output = None;
                    break;
                }
            }
        }
        let status = if failure.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let mut run = Run {
            id: 0,
            flow_id: flow.id,
            status,
            started_at,
            duration_us: started.elapsed().as_micros() as u64,
            steps: records,
            output,
            error: failure,
        };
        run.id = self.meta.write(|m| m.insert_run(org, &run))?;
        tracing::info!(org, flow = flow.id, run = run.id, status = ?run.status,
            duration_us = run.duration_us, "flow run finished");
        Ok(run)
    }

    async fn run_step(
        &self,
        org: &str,
        step: &Step,
        scope: &Value,
    ) -> std::result::Result<Value, (String, String)> {
        let fail = |e: Error| (e.code().to_string(), e.to_string());
        let ctx = self.call_context(org, step).map_err(fail)?;
        let input = map_input(&step.input, scope).map_err(|m| ("invalid-input".to_string(), m))?;
        let connector = self.connector(&step.digest).await.map_err(fail)?;
        match self
            .runtime
            .invoke(&connector, &step.operation, &input.to_string(), &ctx)
            .await
        {
            Ok(out) => serde_json::from_str(&out.output)
                .map_err(|e| ("invalid-output".into(), e.to_string())),
            Err(CallError::Guest(guest)) => Err(("connector-error".into(), guest.to_string())),
            Err(e) => Err((e.code().into(), e.to_string())),
        }
    }

    /// Config and secrets for one step, after checking its pinned version may run.
    fn call_context(&self, org: &str, step: &Step) -> Result<CallContext> {
        self.meta.read(|m| {
            let pinned = m
                .version_by_digest(&step.digest)?
                .ok_or_else(|| Error::NotFound(format!("connector version {}", step.digest)))?;
            if pinned.state == VersionState::Blocked {
                return Err(Error::Blocked(pinned.reference()));
            }
            let instance = load_instance(m, org, step.instance)?;
            let install = load_install_row(m, org, instance.install_id)?;
            self.context_of(m, org, &pinned, instance, install)
        })
    }

    /// The context of a call of `instance` (of `install`) running `version`: config
    /// (connector defaults, then the install's customisations, then the instance's), secrets
    /// and outbound grants.
    fn context_of(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        version: &VersionInfo,
        instance: Instance,
        install: Install,
    ) -> Result<CallContext> {
        let mut config: BTreeMap<String, String> = version
            .description
            .config
            .iter()
            .filter_map(|k| k.default_value.clone().map(|v| (k.name.clone(), v)))
            .collect();
        config.extend(install.customisations);
        config.extend(instance.config);
        let secrets = Secrets::new(self.open_secrets(m, org, instance.id)?);
        Ok(CallContext {
            config,
            secrets,
            limits: None,
            outbound: install.outbound,
            allow_private: self.private_addresses.get(org).cloned().unwrap_or_default(),
        })
    }

    /// Recorded runs of flow `flow`, newest first.
    pub fn runs(&self, org: &str, flow: i64) -> Result<Vec<Run>> {
        self.meta.read(|m| {
            load_flow(m, org, flow)?;
            m.runs(org, flow)
        })
    }

    /// Run `operation` of an instance directly, on the version its install runs now.
    /// Blocked versions are refused; the call's own failure is the inner `Err`.
    pub async fn invoke_instance(
        &self,
        org: &str,
        instance: i64,
        operation: &str,
        input: &str,
    ) -> Result<(
        crate::connector::Description,
        Digest,
        std::result::Result<crate::call::CallOutput, CallError>,
    )> {
        let (version, ctx) = self.meta.read(|m| {
            let found = load_instance(m, org, instance)?;
            let install = load_install_row(m, org, found.install_id)?;
            let version = installed_version(m, &install)?;
            if version.state == VersionState::Blocked {
                return Err(Error::Blocked(version.reference()));
            }
            let ctx = self.context_of(m, org, &version, found, install)?;
            Ok((version, ctx))
        })?;
        let connector = self.connector(&version.digest).await?;
        let result = self
            .runtime
            .invoke(&connector, operation, input, &ctx)
            .await;
        Ok((version.description, version.digest, result))
    }

    /// `(name, version)` of the connector with `digest`, for labels (metrics, logs).
    pub fn label_of(&self, digest: &Digest) -> Option<(String, String)> {
        let version = self.meta.read(|m| m.version_by_digest(digest)).ok()??;
        Some((version.name, version.version.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_mapping_replaces_whole_strings() {
        let scope = json!({"input": {"user": {"name": "Ada"}, "ids": [4, 5]}, "steps": {"fetch": {"total": 3}}});
        let template = json!({"who": "${input.user.name}", "second": "${input.ids.1}", "n": "${steps.fetch.total}", "keep": "plain ${x}", "all": "${input.ids}"});
        assert_eq!(
            map_input(&template, &scope).unwrap(),
            json!({"who": "Ada", "second": 5, "n": 3, "keep": "plain ${x}", "all": [4, 5]})
        );
        assert!(
            map_input(&json!("${steps.nope}"), &scope)
                .unwrap_err()
                .contains("steps.nope")
        );
    }
}
