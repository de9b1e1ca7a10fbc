//! Flows: ordered steps, each naming an instance and an operation, mapping its input from the
//! flow's input and earlier steps' outputs, and **pinned to the exact digest** current when it
//! was bound. Nothing moves a pin except an explicit rebind (one step, every step using an
//! install, or an overwrite update of that install). Every run is recorded.
//!
//! Input mapping: in a step's `input` JSON, a string that is exactly `${input}`,
//! `${input.a.b}`, `${steps.NAME}` or `${steps.NAME.a.0}` is replaced by that value.
//!
//! A run keeps the flow's input and each step's output once, as the JSON text it arrived as
//! ([`RawValue`]): a step's input is written from its template with the referenced parts
//! copied in as text, nothing is parsed into a tree, and a run's outputs together are bounded
//! ([`FlowLimits::run_bytes`]), so one large input through many steps cannot multiply in
//! memory.

use crate::call::CallError;
use crate::capability::{CallContext, Secrets};
use crate::digest::Digest;
use crate::metadata::Metadata;
use crate::registry::{
    Error, Install, Instance, Page, Registry, Result, VersionInfo, VersionState, audit,
    check_bindable, installed_version, load_install_row, load_instance, now_ms, require_org,
    validate_label,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Bounds of flows and their runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowLimits {
    /// Steps in one flow.
    pub steps: usize,
    /// Bytes of step outputs one run keeps, all steps together (each step's output is bounded
    /// by its call's `output_bytes` too). A step whose output would pass it fails the run
    /// with `run-too-large`.
    pub run_bytes: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        Self {
            steps: 64,
            run_bytes: 16 << 20,
        }
    }
}

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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRun {
    pub name: String,
    #[schema(value_type = String)]
    pub digest: Digest,
    pub duration_us: u64,
    /// The step's output exactly as the connector wrote it.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub flow_id: i64,
    pub status: RunStatus,
    pub started_at: i64,
    pub duration_us: u64,
    pub steps: Vec<StepRun>,
    /// The last step's output, as the connector wrote it, when the run succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    pub error: Option<RunError>,
}

impl Run {
    /// [`Run::output`] parsed, for callers that want a tree.
    pub fn output_value(&self) -> Option<Value> {
        self.output
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

/// What a step's input may refer to: the flow's input and the outputs of earlier steps, each
/// the JSON text it arrived as.
#[derive(Debug, Default)]
pub struct Scope<'a> {
    pub input: Option<&'a RawValue>,
    pub steps: Vec<(&'a str, &'a RawValue)>,
}

impl<'a> Scope<'a> {
    /// The value `path` (`input…` or `steps.NAME…`) names.
    fn resolve(&self, path: &str) -> Result<&'a RawValue, String> {
        let missing = || format!("input mapping refers to missing `{path}`");
        let mut segments = path.split('.');
        let mut node = match segments.next() {
            Some("input") => self.input.ok_or_else(missing)?,
            Some("steps") => {
                let name = segments.next().ok_or_else(missing)?;
                self.steps
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == name)
                    .map(|(_, out)| *out)
                    .ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
        for segment in segments {
            node = child(node, segment).ok_or_else(missing)?;
        }
        Ok(node)
    }
}

/// The member `segment` of an object, or the element at index `segment` of an array: one
/// level of `node` is read (what is inside its members is only skimmed).
fn child<'a>(node: &'a RawValue, segment: &str) -> Option<&'a RawValue> {
    match node.get().trim_start().as_bytes().first() {
        Some(b'{') => serde_json::from_str::<BTreeMap<String, &'a RawValue>>(node.get())
            .ok()?
            .remove(segment),
        Some(b'[') => {
            let index: usize = segment.parse().ok()?;
            serde_json::from_str::<Vec<&'a RawValue>>(node.get())
                .ok()?
                .get(index)
                .copied()
        }
        _ => None,
    }
}

/// A placeholder's path: `input.a` for `"${input.a}"`.
fn placeholder(text: &str) -> Option<&str> {
    text.strip_prefix("${")?.strip_suffix('}')
}

/// A step's input template with its placeholders replaced, written as JSON text.
struct Mapped<'t, 's> {
    template: &'t Value,
    scope: &'t Scope<'s>,
}

impl Serialize for Mapped<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap, SerializeSeq};
        match self.template {
            Value::String(text) => match placeholder(text) {
                Some(path) => self
                    .scope
                    .resolve(path)
                    .map_err(S::Error::custom)?
                    .serialize(serializer),
                None => serializer.serialize_str(text),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Mapped {
                        template: item,
                        scope: self.scope,
                    })?;
                }
                seq.end()
            }
            Value::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(
                        key,
                        &Mapped {
                            template: value,
                            scope: self.scope,
                        },
                    )?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Write `template` as JSON text with every `${input…}` and `${steps.NAME…}` string replaced by
/// the value it names in `scope`, copied as written.
pub fn map_input(template: &Value, scope: &Scope<'_>) -> std::result::Result<String, String> {
    serde_json::to_string(&Mapped { template, scope }).map_err(|e| e.to_string())
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
        if steps.len() > self.flow_limits.steps {
            return Err(Error::InvalidInput(format!(
                "a flow has at most {} steps; this one has {}",
                self.flow_limits.steps,
                steps.len()
            )));
        }
        let mut names = HashSet::new();
        for step in &steps {
            validate_label("step name", &step.name)?;
            let depth = crate::json::value_nesting(&step.input);
            if depth > crate::json::KEPT_DEPTH {
                return Err(Error::InvalidInput(format!(
                    "the input of step `{}` nests {depth} levels deep; at most {}",
                    step.name,
                    crate::json::KEPT_DEPTH
                )));
            }
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

    /// One page of the flows of `org`, by id.
    pub fn flows(&self, org: &str, page: &Page) -> Result<Vec<Flow>> {
        let after = page.after_id()?.unwrap_or(0);
        self.meta.read(|m| m.flows(org, after, page.limit()))
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
    /// is returned only when the flow cannot be found (or `input` is not JSON).
    pub async fn run_flow(&self, org: &str, flow: i64, input: impl Serialize) -> Result<Run> {
        let input = serde_json::value::to_raw_value(&input)
            .map_err(|e| Error::InvalidInput(format!("the run's input: {e}")))?;
        let flow = self.get_flow(org, flow)?;
        let started_at = now_ms();
        let started = Instant::now();
        let mut records: Vec<StepRun> = Vec::with_capacity(flow.steps.len());
        let mut failure = None;
        let mut kept = 0usize;
        for step in &flow.steps {
            let step_started = Instant::now();
            let scope = Scope {
                input: Some(&input),
                steps: records
                    .iter()
                    .filter_map(|r| Some((r.name.as_str(), &**r.output.as_ref()?)))
                    .collect(),
            };
            let result = self
                .run_step(org, step, &scope, self.flow_limits.run_bytes - kept)
                .await;
            let duration_us = step_started.elapsed().as_micros() as u64;
            let (output, error) = match result {
                Ok(output) => {
                    kept += output.get().len();
                    (Some(output), None)
                }
                Err((code, message)) => (
                    None,
                    Some(RunError {
                        step: step.name.clone(),
                        code,
                        message,
                    }),
                ),
            };
            records.push(StepRun {
                name: step.name.clone(),
                digest: step.digest,
                duration_us,
                output,
                error: error.clone(),
            });
            if error.is_some() {
                failure = error;
                break;
            }
        }
        let status = if failure.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let output = match failure {
            None => records.last().and_then(|r| r.output.clone()),
            Some(_) => None,
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

    /// Run one step; its output as written, or the code and message of its failure. `room`:
    /// bytes of output the run may still keep.
    async fn run_step(
        &self,
        org: &str,
        step: &Step,
        scope: &Scope<'_>,
        room: usize,
    ) -> std::result::Result<Box<RawValue>, (String, String)> {
        let fail = |e: Error| (e.code().to_string(), e.to_string());
        let ctx = self.call_context(org, step).map_err(fail)?;
        let input = map_input(&step.input, scope).map_err(|m| ("invalid-input".to_string(), m))?;
        let connector = self.connector(&step.digest).await.map_err(fail)?;
        let output = match self
            .runtime
            .invoke(&connector, &step.operation, &input, &ctx)
            .await
        {
            Ok(out) => out.output,
            Err(CallError::Guest(guest)) => {
                return Err(("connector-error".into(), guest.to_string()));
            }
            Err(e) => return Err((e.code().into(), e.to_string())),
        };
        if output.len() > room {
            return Err((
                "run-too-large".into(),
                format!(
                    "the step's output ({} bytes) would take the run's outputs past {} bytes",
                    output.len(),
                    self.flow_limits.run_bytes
                ),
            ));
        }
        let depth = crate::json::nesting(&output);
        if depth > crate::json::KEPT_DEPTH {
            return Err((
                "invalid-output".into(),
                format!(
                    "the output nests {depth} levels deep; a run keeps documents at most {} deep",
                    crate::json::KEPT_DEPTH
                ),
            ));
        }
        RawValue::from_string(output).map_err(|e| ("invalid-output".into(), e.to_string()))
    }

    /// Config and secrets for one step, after checking its pinned version may run. The pinned
    /// version is looked up within the package the step's install took in: a digest is not an
    /// identity across organisations (another one may publish the same bytes, with another
    /// state).
    fn call_context(&self, org: &str, step: &Step) -> Result<CallContext> {
        self.meta.read(|m| {
            let instance = load_instance(m, org, step.instance)?;
            let install = load_install_row(m, org, instance.install_id)?;
            let pinned = m
                .package_revision(&install.package_org, &install.name, &step.digest)?
                .filter(|v| v.org == org || v.visibility == crate::registry::Visibility::Public)
                .ok_or_else(|| Error::NotFound(format!("connector version {}", step.digest)))?;
            if pinned.state == VersionState::Blocked {
                return Err(Error::Blocked(pinned.reference()));
            }
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

    /// One page of the recorded runs of flow `flow`, newest first (`page.after` names the
    /// run to continue *before*).
    pub fn runs(&self, org: &str, flow: i64, page: &Page) -> Result<Vec<Run>> {
        let before = page.after_id()?.unwrap_or(i64::MAX);
        self.meta.read(|m| {
            load_flow(m, org, flow)?;
            m.runs(org, flow, before, page.limit())
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

    /// `(name, version)` of the loaded connector with `digest`, for labels (metrics, logs):
    /// what its own `describe()` says, never another organisation's row for the same bytes.
    pub fn label_of(&self, digest: &Digest) -> Option<(String, String)> {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let description = loaded.peek(digest)?.description();
        Some((description.name.clone(), description.version.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_mapping_replaces_whole_strings() {
        let input = RawValue::from_string(
            r#"{"user": {"name": "Ada"}, "ids": [4, 5], "big": 123456789012345678901234567890}"#
                .into(),
        )
        .unwrap();
        let fetch = RawValue::from_string(r#"{"total": 3, "esc": "\ud800"}"#.into()).unwrap();
        let scope = Scope {
            input: Some(&input),
            steps: vec![("fetch", &fetch)],
        };
        let template = json!({"who": "${input.user.name}", "second": "${input.ids.1}", "n": "${steps.fetch.total}", "keep": "plain ${x}", "all": "${input.ids}"});
        let mapped = map_input(&template, &scope).unwrap();
        let tree: Value = serde_json::from_str(&mapped).unwrap();
        assert_eq!(
            tree,
            json!({"who": "Ada", "second": 5, "n": 3, "keep": "plain ${x}", "all": [4, 5]})
        );
        // Referenced values are copied as written: no number rounded, no escape rewritten.
        let mapped = map_input(&json!(["${input.big}", "${steps.fetch.esc}"]), &scope).unwrap();
        assert_eq!(mapped, r#"[123456789012345678901234567890,"\ud800"]"#);
        for missing in [
            "${steps.nope}",
            "${input.user.age}",
            "${input.ids.9}",
            "${other}",
        ] {
            let err = map_input(&json!(missing), &scope).unwrap_err();
            assert!(err.contains("missing"), "{missing}: {err}");
        }
    }
}
