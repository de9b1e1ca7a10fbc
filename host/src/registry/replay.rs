//! Evidence before a rebind: a flow that records keeps each step run (input, output, outbound
//! exchanges, secrets redacted); a replay runs a step's recorded inputs against a candidate —
//! another instance, or another version or revision of the step's connector — in the sandbox,
//! with every outbound request answered from the recording and none sent, and reports, per
//! input, the same output, a different one (with a JSON diff) or an error. Nothing about the
//! flow changes.

use super::canary::candidate_pin;
use super::rules::{audit, load_flow};
use super::{Error, Registry, Result};
use crate::model::{Page, Recording, VersionState};
use crate::runtime::Connector;
use crate::sandbox::CallContext;
use crate::sandbox::tape::Tape;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most recordings one replay runs.
pub const MAX_REPLAYED: usize = 100;
/// Most differences listed for one input.
pub const MAX_DIFFERENCES: usize = 100;

/// What a replay runs the recorded inputs on: another instance (`instance`), or another
/// version (and revision: the newest when not given) of the step's connector on the step's own
/// instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    #[serde(default, deserialize_with = "crate::model::optional_id")]
    pub instance: Option<i64>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub revision: Option<u32>,
}

/// A replay request: the candidate, and how many of the step's newest recordings to run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub candidate: Candidate,
    /// How many of the step's newest recordings to run (default 10).
    #[serde(default = "default_count")]
    #[schema(minimum = 1, maximum = 100)]
    pub count: usize,
}

fn default_count() -> usize {
    10
}

/// How one recorded input fared on the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayOutcome {
    /// The same output (or the same error code) as recorded.
    Same,
    /// Another output: see the diff.
    Different,
    /// The candidate failed where the recording did not (or with another error).
    Error,
}

/// One place two JSON documents differ: its path (`/a/0/b`), and the value on each side
/// (absent: `null` with `*_absent` set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Difference {
    pub path: String,
    #[schema(value_type = Object)]
    pub recorded: Value,
    #[schema(value_type = Object)]
    pub candidate: Value,
}

/// One recorded input replayed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    pub recording: i64,
    pub run: Option<i64>,
    pub outcome: ReplayOutcome,
    #[schema(value_type = Object)]
    pub input: Box<RawValue>,
    /// What the recording answered: its output, or its error.
    #[schema(value_type = Option<Object>)]
    pub recorded_output: Option<Box<RawValue>>,
    pub recorded_error: Option<String>,
    /// What the candidate answered (secrets redacted).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub diff: Vec<Difference>,
    /// Requests the candidate made that the recording has no answer for (never sent).
    pub unmatched: Vec<String>,
    /// The recording was not whole (a cap was reached when it was made).
    pub incomplete: Option<String>,
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayTotals {
    pub inputs: usize,
    pub same: usize,
    pub different: usize,
    pub errors: usize,
    pub unmatched_requests: usize,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub flow: i64,
    pub step: String,
    /// What ran: `org/name@version` as the candidate's `describe()` says, and its digest.
    pub candidate: String,
    pub digest: String,
    pub totals: ReplayTotals,
    pub inputs: Vec<Replayed>,
}

impl Registry {
    /// Switch recording of flow `flow`'s step runs on or off.
    pub fn set_flow_record(
        &self,
        org: &str,
        actor: &str,
        flow: i64,
        record: bool,
    ) -> Result<crate::model::Flow> {
        self.change(|m| {
            let before = load_flow(m, org, flow)?.record;
            if before != record {
                m.set_flow_record(org, flow, record)?;
                audit(
                    m,
                    org,
                    actor,
                    "set-flow-record",
                    &format!("flow {flow}"),
                    json!({"record": before}),
                    json!({"record": record}),
                )?;
            }
            super::rules::described_flow(m, org, flow)
        })
    }

    /// The newest recordings of step `step` of flow `flow` (`page.after`: continue before
    /// that recording).
    pub fn recordings(
        &self,
        org: &str,
        flow: i64,
        step: &str,
        page: &Page,
    ) -> Result<Vec<Recording>> {
        let before = page.after_id()?.unwrap_or(i64::MAX);
        self.read(|m| {
            let found = load_flow(m, org, flow)?;
            if !found.steps.iter().any(|s| s.name == step) {
                return Err(Error::NotFound(format!("step `{step}` of flow {flow}")));
            }
            Ok(m.recordings(org, flow, step, before, page.limit())?)
        })
    }

    /// Run the newest `request.count` recorded inputs of step `step` of flow `flow` against
    /// `request.candidate`, outbound requests answered from each recording (none sent).
    pub async fn replay(
        &self,
        org: &str,
        flow: i64,
        step: &str,
        request: &ReplayRequest,
    ) -> Result<ReplayReport> {
        if !(1..=MAX_REPLAYED).contains(&request.count) {
            return Err(Error::InvalidInput(format!(
                "count must be from 1 to {MAX_REPLAYED}"
            )));
        }
        let (operation, instance) = self.read(|m| {
            let found = load_flow(m, org, flow)?;
            let step = found
                .steps
                .iter()
                .find(|s| s.name == step)
                .ok_or_else(|| Error::NotFound(format!("step `{step}` of flow {flow}")))?;
            Ok((step.operation.clone(), step.instance))
        })?;
        let (connector, ctx) = self.candidate(org, instance, &request.candidate).await?;
        let recordings =
            self.read(|m| Ok(m.recordings(org, flow, step, i64::MAX, request.count)?))?;
        let mut totals = ReplayTotals::default();
        let mut inputs = Vec::with_capacity(recordings.len());
        for recording in recordings {
            let replayed = self
                .replay_one(&connector, &operation, &ctx, recording)
                .await;
            totals.inputs += 1;
            match replayed.outcome {
                ReplayOutcome::Same => totals.same += 1,
                ReplayOutcome::Different => totals.different += 1,
                ReplayOutcome::Error => totals.errors += 1,
            }
            totals.unmatched_requests += replayed.unmatched.len();
            inputs.push(replayed);
        }
        let described = connector.description();
        Ok(ReplayReport {
            flow,
            step: step.to_string(),
            candidate: format!("{}@{}", described.name, described.version),
            digest: connector.digest().to_string(),
            totals,
            inputs,
        })
    }

    /// The connector and call context a candidate runs with: the candidate's version on its
    /// instance (the step's own, for a version).
    async fn candidate(
        &self,
        org: &str,
        step_instance: i64,
        candidate: &Candidate,
    ) -> Result<(Arc<Connector>, CallContext)> {
        let (instance, version) = self.read(|m| candidate_pin(m, org, step_instance, candidate))?;
        if version.state == VersionState::Blocked {
            return Err(Error::Blocked(version.reference()));
        }
        let call = self.pinned_call(org, instance).await?;
        let connector = self.connector(&version.digest, version.size).await?;
        Ok((connector, call.ctx.clone()))
    }

    async fn replay_one(
        &self,
        connector: &Arc<Connector>,
        operation: &str,
        ctx: &CallContext,
        recording: Recording,
    ) -> Replayed {
        let tape = Arc::new(Tape::replay(recording.exchanges.clone(), &ctx.secrets));
        let ctx = CallContext {
            tape: Some(tape.clone()),
            ..ctx.clone()
        };
        let result = self
            .runtime
            .invoke(connector, operation, recording.input.get(), &ctx)
            .await;
        let (output, error) = match result {
            Ok(out) => (RawValue::from_string(tape.redact(&out.output)).ok(), None),
            Err(e) => (None, Some(tape.redact(&format!("{}: {e}", e.code())))),
        };
        let code = |error: &Option<String>| {
            error
                .as_deref()
                .and_then(|e| e.split(':').next())
                .map(str::to_string)
        };
        let parse = |raw: &Option<Box<RawValue>>| {
            raw.as_deref()
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        };
        let (then, now) = (parse(&recording.output), parse(&output));
        let mut differences = Vec::new();
        let outcome = match (&then, &now) {
            (Some(then), Some(now)) => {
                diff("", Some(then), Some(now), &mut differences);
                if differences.is_empty() {
                    ReplayOutcome::Same
                } else {
                    ReplayOutcome::Different
                }
            }
            (None, Some(now)) => {
                // The recording failed; the candidate answers.
                differences.push(Difference {
                    path: String::new(),
                    recorded: json!({"error": recording.error}),
                    candidate: now.clone(),
                });
                ReplayOutcome::Different
            }
            (_, None) if code(&error) == code(&recording.error) && then.is_none() => {
                ReplayOutcome::Same
            }
            (_, None) => ReplayOutcome::Error,
        };
        Replayed {
            recording: recording.id,
            run: recording.run,
            outcome,
            input: recording.input,
            recorded_output: recording.output,
            recorded_error: recording.error,
            output,
            error,
            diff: differences,
            unmatched: tape.played().unmatched,
            incomplete: recording.incomplete,
        }
    }
}

/// The places `a` and `b` differ under `path`, at most [`MAX_DIFFERENCES`] of them: objects
/// key by key, arrays index by index, anything else by value (an absent side is `null`).
pub fn diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    if out.len() >= MAX_DIFFERENCES {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                diff(&path, x.get(key), y.get(key), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                diff(&format!("{path}/{i}"), x.get(i), y.get(i), out);
            }
        }
        (a, b) if a != b => out.push(Difference {
            path: path.to_string(),
            recorded: a.cloned().unwrap_or(Value::Null),
            candidate: b.cloned().unwrap_or(Value::Null),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_each_place_documents_differ() {
        let mut out = Vec::new();
        let a = json!({"a": 1, "b": [1, 2], "c": {"d/e": "x"}, "gone": true});
        let b = json!({"a": 1, "b": [1, 3, 4], "c": {"d/e": "y"}, "new": null});
        diff("", Some(&a), Some(&b), &mut out);
        let paths: Vec<&str> = out.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/b/1", "/b/2", "/c/d~1e", "/gone", "/new"]);
        assert_eq!(out[0].recorded, json!(2));
        assert_eq!(out[0].candidate, json!(3));
        let mut none = Vec::new();
        diff("", Some(&a), Some(&a), &mut none);
        assert!(none.is_empty());
    }
}
