//! Flows: ordered steps, each naming an instance and an operation, mapping its input from the
//! flow's input and earlier steps' outputs, and **pinned to the exact digest** current when it
//! was bound. Nothing moves a pin except an explicit rebind (one step, every step using an
//! install, or an overwrite update of that install). Every run is recorded.
//!
//! A step's input is mapped from the flow's input and earlier steps' outputs (see
//! [`map_input`]).
//!
//! A run keeps the flow's input and each step's output once, as the JSON text it arrived as
//! ([`RawValue`]): a step's input is written from its template with the referenced parts
//! copied in as text, nothing is parsed into a tree, and a run's outputs together are bounded
//! ([`FlowLimits::run_bytes`]), so one large input through many steps cannot multiply in
//! memory.

use super::mapping::{Scope, map_input};
use super::pins::Call;
use super::rules::{
    audit, check_bindable, describe_pins, described_flow, installed_version, load_flow,
    load_install_row, load_instance, require_org,
};
use super::{Error, Registry, Result, now_ms};
use crate::model::{
    Arm, Digest, Flow, Page, Recording, Run, RunError, RunStatus, Step, StepRun, StepSpec,
    VersionInfo, validate_label,
};
use crate::runtime::CallError;
use crate::sandbox::CallContext;
use crate::sandbox::tape::{Tape, TapeLimits};
use crate::store::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
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
    /// Recordings kept per step of a recording flow (the newest).
    pub recordings_kept: usize,
    /// Caps of one step run's recording.
    #[serde(skip)]
    pub tape: TapeLimits,
}

impl Default for FlowLimits {
    fn default() -> Self {
        Self {
            steps: 64,
            run_bytes: 16 << 20,
            recordings_kept: 50,
            tape: TapeLimits::default(),
        }
    }
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
    let uses: Vec<String> = steps
        .iter()
        .filter(|s| target.description.operation(&s.operation).is_none())
        .map(|s| format!("flow {} step `{}` uses `{}`", s.flow, s.name, s.operation))
        .collect();
    if !uses.is_empty() {
        return Err(Error::MissingOperations {
            version: target.reference(),
            uses,
        });
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

impl Registry {
    /// Create a flow; each step is pinned to the digest its instance's install runs now.
    pub fn create_flow(
        &self,
        org: &str,
        actor: &str,
        name: &str,
        steps: Vec<StepSpec>,
    ) -> Result<Flow> {
        self.create_flow_recording(org, actor, name, steps, false)
    }

    /// [`create_flow`](Self::create_flow), recording its step runs when `record` is set.
    pub fn create_flow_recording(
        &self,
        org: &str,
        actor: &str,
        name: &str,
        steps: Vec<StepSpec>,
        record: bool,
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
        self.change(|m| {
            require_org(m, org)?;
            if m.flow_name_taken(org, name)? {
                return Err(Error::NameTaken {
                    what: "flow",
                    name: name.to_string(),
                });
            }
            let id = m.insert_flow(org, name, actor, now_ms())?;
            if record {
                m.set_flow_record(org, id, true)?;
            }
            let mut pins = Vec::new();
            for (position, spec) in steps.iter().enumerate() {
                let step = Step {
                    name: spec.name.clone(),
                    instance: spec.instance,
                    operation: spec.operation.clone(),
                    input: spec.input.clone(),
                    digest: bind(m, org, spec.instance, &spec.operation)?,
                    connector: None,
                    revision: None,
                    out_of_date: false,
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
                json!({"name": name, "steps": pins, "record": record}),
            )?;
            described_flow(m, org, id)
        })
    }

    pub fn get_flow(&self, org: &str, id: i64) -> Result<Flow> {
        self.read(|m| described_flow(m, org, id))
    }

    /// One page of the flows of `org`, by id.
    pub fn flows(&self, org: &str, page: &Page) -> Result<Vec<Flow>> {
        let after = page.after_id()?.unwrap_or(0);
        self.read(|m| {
            m.flows(org, after, page.limit())?
                .into_iter()
                .map(|flow| describe_pins(m, org, flow))
                .collect()
        })
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
        let (rebound, package) = self.change(|m| {
            let current = load_flow(m, org, flow)?;
            let old = current
                .steps
                .iter()
                .find(|s| s.name == step)
                .ok_or_else(|| Error::NotFound(format!("step `{step}` of flow {flow}")))?;
            // The package the step leaves: one of its revisions may be collectable now.
            let left = load_instance(m, org, old.instance)?.install_id;
            let left = load_install_row(m, org, left)?;
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
            Ok((described_flow(m, org, flow)?, (left.package_org, left.name)))
        })?;
        self.collect_garbage(&package.0, &package.1)?;
        Ok(rebound)
    }

    /// Rebind every step (in every flow of `org`) that uses an instance of install `from` to
    /// instance `to`. Returns how many steps moved.
    pub fn rebind_install(&self, org: &str, actor: &str, from: i64, to: i64) -> Result<usize> {
        let (moved, left) = self.change(|m| {
            let left = load_install_row(m, org, from)?;
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
            Ok((steps.len(), left))
        })?;
        self.collect_garbage(&left.package_org, &left.name)?;
        Ok(moved)
    }

    /// Run flow `flow` on `input`. The run is recorded whether it succeeds or fails; an error
    /// is returned only when the flow cannot be found (or `input` is not JSON).
    pub async fn run_flow(&self, org: &str, flow: i64, input: impl Serialize) -> Result<Run> {
        let input = serde_json::value::to_raw_value(&input)
            .map_err(|e| Error::InvalidInput(format!("the run's input: {e}")))?;
        let plan = self.plan(org, flow).await?;
        let flow = &plan.flow;
        // A run that a canary splits knows its id first: the id decides its arm.
        let split = plan.canaries.iter().any(Option::is_some);
        let reserved = if split {
            self.off_executor(|| self.meta.append(|m| Ok::<_, Error>(m.reserve_run_id()?)))?
        } else {
            0
        };
        let started_at = now_ms();
        let started = Instant::now();
        let mut records: Vec<StepRun> = Vec::with_capacity(flow.steps.len());
        let mut recordings: Vec<Recording> = Vec::new();
        let mut failure = None;
        let mut kept = 0usize;
        for ((step, call), canary) in flow.steps.iter().zip(&plan.steps).zip(&plan.canaries) {
            let step_started = Instant::now();
            let (call, arm) = match canary {
                None => (call, None),
                Some((canary, candidate)) => match canary.arm(reserved) {
                    Arm::Candidate => (candidate, Some((Arm::Candidate, canary))),
                    Arm::Stable => (call, Some((Arm::Stable, canary))),
                },
            };
            let candidate_step;
            let step = match arm {
                Some((Arm::Candidate, canary)) => {
                    candidate_step = Step {
                        instance: canary.candidate_instance,
                        digest: canary.candidate_digest,
                        connector: Some(canary.candidate.clone()),
                        revision: Some(canary.candidate_revision),
                        out_of_date: false,
                        ..step.clone()
                    };
                    &candidate_step
                }
                _ => step,
            };
            let scope = Scope {
                input: Some(&input),
                steps: records
                    .iter()
                    .filter_map(|r| Some((r.name.as_str(), &**r.output.as_ref()?)))
                    .collect(),
            };
            let (result, recording) = self
                .run_step(flow, step, call, &scope, self.flow_limits.run_bytes - kept)
                .await;
            recordings.extend(recording);
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
                connector: step.connector.clone(),
                revision: step.revision,
                out_of_date: step.out_of_date,
                arm: arm.map(|(arm, _)| arm),
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
            id: reserved,
            flow_id: flow.id,
            status,
            started_at,
            duration_us: started.elapsed().as_micros() as u64,
            steps: records,
            output,
            error: failure,
        };
        let keep = self.flow_limits.recordings_kept;
        // A run that tallies no canary only adds records: it need not wait for other writers.
        let access = if split {
            crate::store::Access::Write
        } else {
            crate::store::Access::Append
        };
        let (id, decided) = self.off_executor(|| {
            self.meta.run_unit(access, |m| {
                let id = m.insert_run(org, &run)?;
                for recording in &mut recordings {
                    recording.run = Some(id);
                    m.insert_recording(org, recording, keep)?;
                }
                let mut decided = false;
                for (record, canary) in run.steps.iter().zip(&plan.canaries) {
                    if let Some((canary, _)) = canary {
                        decided |= super::canary::tally(m, org, id, record, canary)?;
                    }
                }
                if decided {
                    m.changed()?;
                }
                Ok::<_, Error>((id, decided))
            })
        })?;
        run.id = id;
        if decided {
            // The step moved (promoted) or its candidate arm ended (rolled back).
            self.pins.invalidate();
        }
        tracing::info!(org, flow = flow.id, run = run.id, status = ?run.status,
            duration_us = run.duration_us, "flow run finished");
        Ok(run)
    }

    /// Run one step; its output as written, or the code and message of its failure. `room`:
    /// bytes of output the run may still keep.
    /// When the flow records, the step run's recording comes with it.
    async fn run_step(
        &self,
        flow: &Flow,
        step: &Step,
        call: &Result<Arc<Call>>,
        scope: &Scope<'_>,
        room: usize,
    ) -> (
        std::result::Result<Box<RawValue>, (String, String)>,
        Option<Recording>,
    ) {
        let call = match call {
            Ok(call) => call,
            Err(e) => return (Err((e.code().to_string(), e.to_string())), None),
        };
        let input = match map_input(&step.input, scope) {
            Ok(input) => input,
            Err(e) => return (Err(("invalid-input".to_string(), e.0)), None),
        };
        if !flow.record {
            return (
                self.call_step(step, call, &input, &call.ctx, room).await,
                None,
            );
        }
        let tape = Arc::new(Tape::record(&call.ctx.secrets, self.flow_limits.tape));
        let ctx = CallContext {
            tape: Some(tape.clone()),
            ..call.ctx.clone()
        };
        let at = now_ms();
        let result = self.call_step(step, call, &input, &ctx, room).await;
        let outcome = match &result {
            Ok(output) => Ok(output.get()),
            Err((code, message)) => Err(format!("{code}: {message}")),
        };
        let mut recording = tape.recording(
            &step.operation,
            *call.connector.digest(),
            at,
            &input,
            outcome,
        );
        recording.flow = Some(flow.id);
        recording.step = Some(step.name.clone());
        (result, Some(recording))
    }

    /// Call a step's operation on `input` with `ctx`; its output as written, within `room`.
    async fn call_step(
        &self,
        step: &Step,
        call: &Call,
        input: &str,
        ctx: &CallContext,
        room: usize,
    ) -> std::result::Result<Box<RawValue>, (String, String)> {
        let output = match self
            .runtime
            .invoke(&call.connector, &step.operation, input, ctx)
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

    /// One page of the recorded runs of flow `flow`, newest first (`page.after` names the
    /// run to continue *before*).
    pub fn runs(&self, org: &str, flow: i64, page: &Page) -> Result<Vec<Run>> {
        let before = page.after_id()?.unwrap_or(i64::MAX);
        self.read(|m| {
            load_flow(m, org, flow)?;
            Ok(m.runs(org, flow, before, page.limit())?)
        })
    }
}
