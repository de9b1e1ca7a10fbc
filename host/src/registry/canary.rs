//! Canary rebinds: a share of a step's runs goes to a candidate (as for a replay: another
//! instance, or another version or revision of the step's connector on its own instance), by a
//! hash of the run id, each run recording the arm it took. Once the candidate has had its
//! minimum runs, an error rate above the bound rolls the step back (every run takes its own
//! binding again; it never moved), and one within it promotes the candidate — the step is
//! rebound — by itself or on request. Every start, rollback and promotion is audited with the
//! runs that decided it. A canary is stored, so it survives a restart.

use super::replay::Candidate;
use super::rules::{
    audit, check_bindable, installed_version, load_flow, load_install_row, load_instance,
    visible_version,
};
use super::{Error, Registry, Result, now_ms};
use crate::model::{Arm, Canary, CanaryState, StepRun, VersionInfo};
use crate::store::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Most candidate runs a canary may ask for before it is decided.
pub const MAX_MIN_RUNS: u32 = 10_000;

/// How a canary is started.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    pub candidate: Candidate,
    /// Share of runs (1–100) the candidate takes.
    #[schema(minimum = 1, maximum = 100)]
    pub percent: u8,
    /// Highest share of the candidate's runs that may fail (0–1).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub max_error_rate: f64,
    /// Candidate runs before the canary is decided (1–10000).
    #[schema(minimum = 1, maximum = 10000)]
    pub min_runs: u32,
    /// Promote by itself once the minimum runs pass within the bound (default); `false`
    /// waits for a promote request.
    #[serde(default = "yes")]
    pub auto_promote: bool,
}

fn yes() -> bool {
    true
}

fn subject(canary: &Canary) -> String {
    format!("flow {} step {}", canary.flow, canary.step)
}

/// Rebind the canary's step to its candidate, audited with the runs that decided it.
fn promote(m: &mut dyn Metadata, org: &str, actor: &str, canary: &mut Canary) -> Result<()> {
    m.bind_step(
        canary.flow,
        &canary.step,
        canary.candidate_instance,
        &canary.candidate_digest,
    )?;
    canary.state = CanaryState::Promoted;
    canary.ended_at = Some(now_ms());
    audit(
        m,
        org,
        actor,
        "canary-promote",
        &subject(canary),
        json!({"instance": canary.stable_instance, "digest": canary.stable_digest}),
        json!({"instance": canary.candidate_instance, "digest": canary.candidate_digest,
               "candidate": canary.candidate, "runs": canary.candidate_run_ids,
               "failed_runs": canary.candidate_failed_runs, "error_rate": canary.error_rate()}),
    )
}

/// End the canary with every run on the step's own binding, audited with the runs that
/// decided it and `why`.
fn roll_back(
    m: &mut dyn Metadata,
    org: &str,
    actor: &str,
    canary: &mut Canary,
    why: &str,
) -> Result<()> {
    canary.state = CanaryState::RolledBack;
    canary.ended_at = Some(now_ms());
    audit(
        m,
        org,
        actor,
        "canary-rollback",
        &subject(canary),
        json!({"candidate": canary.candidate, "candidate_instance": canary.candidate_instance,
               "candidate_digest": canary.candidate_digest}),
        json!({"why": why, "runs": canary.candidate_run_ids,
               "failed_runs": canary.candidate_failed_runs, "error_rate": canary.error_rate(),
               "instance": canary.stable_instance, "digest": canary.stable_digest}),
    )
}

/// Count run `run`'s step record against the step's canary (the one `planned` was, if it is
/// still splitting), and decide the canary when its candidate has had its minimum runs.
/// Whether a decision changed what the step runs.
pub(crate) fn tally(
    m: &mut dyn Metadata,
    org: &str,
    run: i64,
    record: &StepRun,
    planned: &Canary,
) -> Result<bool> {
    let Some(arm) = record.arm else {
        return Ok(false);
    };
    let Some(mut canary) = m.canary(org, planned.flow, &planned.step)? else {
        return Ok(false);
    };
    if !canary.splitting() || canary.started_at != planned.started_at {
        return Ok(false);
    }
    let failed = record.error.is_some();
    match arm {
        Arm::Stable => {
            canary.stable_runs += 1;
            canary.stable_errors += u32::from(failed);
        }
        Arm::Candidate => {
            canary.candidate_runs += 1;
            canary.candidate_errors += u32::from(failed);
            canary.candidate_run_ids.push(run);
            if failed {
                canary.candidate_failed_runs.push(run);
            }
        }
    }
    let mut decided = false;
    if canary.state == CanaryState::Running && canary.candidate_runs >= canary.min_runs {
        let actor = "gantry:canary";
        if canary.error_rate() > canary.max_error_rate {
            let why = format!(
                "{} of {} candidate runs failed, above {}",
                canary.candidate_errors, canary.candidate_runs, canary.max_error_rate
            );
            roll_back(m, org, actor, &mut canary, &why)?;
            decided = true;
        } else if canary.auto_promote {
            promote(m, org, actor, &mut canary)?;
            decided = true;
        } else {
            canary.state = CanaryState::Passed;
            audit(
                m,
                org,
                actor,
                "canary-passed",
                &subject(&canary),
                json!(null),
                json!({"runs": canary.candidate_run_ids, "error_rate": canary.error_rate()}),
            )?;
        }
    }
    m.put_canary(org, &canary)?;
    Ok(decided)
}

impl Registry {
    /// Start a canary on step `step` of flow `flow` (replacing a decided one; refused while
    /// one splits its runs).
    pub fn start_canary(
        &self,
        org: &str,
        actor: &str,
        flow: i64,
        step: &str,
        request: &CanaryRequest,
    ) -> Result<Canary> {
        if !(1..=100).contains(&request.percent) {
            return Err(Error::InvalidInput("percent must be from 1 to 100".into()));
        }
        if !(0.0..=1.0).contains(&request.max_error_rate) {
            return Err(Error::InvalidInput(
                "max_error_rate must be from 0 to 1".into(),
            ));
        }
        if !(1..=MAX_MIN_RUNS).contains(&request.min_runs) {
            return Err(Error::InvalidInput(format!(
                "min_runs must be from 1 to {MAX_MIN_RUNS}"
            )));
        }
        self.change(|m| {
            let found = load_flow(m, org, flow)?;
            let bound = found
                .steps
                .iter()
                .find(|s| s.name == step)
                .ok_or_else(|| Error::NotFound(format!("step `{step}` of flow {flow}")))?;
            if let Some(running) = m.canary(org, flow, step)?
                && running.splitting()
            {
                return Err(Error::InvalidInput(format!(
                    "step `{step}` already has a canary of {}; promote or roll it back first",
                    running.candidate
                )));
            }
            let (instance, version) = candidate_pin(m, org, bound.instance, &request.candidate)?;
            check_bindable(&version)?;
            if !version
                .description
                .operations
                .iter()
                .any(|o| o.name == bound.operation)
            {
                return Err(Error::InvalidInput(format!(
                    "{} has no operation `{}`",
                    version.reference(),
                    bound.operation
                )));
            }
            let canary = Canary {
                flow,
                step: step.to_string(),
                stable_instance: bound.instance,
                stable_digest: bound.digest,
                candidate_instance: instance,
                candidate_digest: version.digest,
                candidate: version.reference(),
                candidate_revision: version.revision,
                percent: request.percent,
                max_error_rate: request.max_error_rate,
                min_runs: request.min_runs,
                auto_promote: request.auto_promote,
                state: CanaryState::Running,
                started_by: actor.to_string(),
                started_at: now_ms(),
                ended_at: None,
                stable_runs: 0,
                stable_errors: 0,
                candidate_runs: 0,
                candidate_errors: 0,
                candidate_run_ids: Vec::new(),
                candidate_failed_runs: Vec::new(),
            };
            m.put_canary(org, &canary)?;
            audit(
                m,
                org,
                actor,
                "canary-start",
                &subject(&canary),
                json!({"instance": bound.instance, "digest": bound.digest}),
                json!({"candidate": canary.candidate, "instance": instance,
                       "digest": canary.candidate_digest, "percent": request.percent,
                       "max_error_rate": request.max_error_rate, "min_runs": request.min_runs,
                       "auto_promote": request.auto_promote}),
            )?;
            Ok(canary)
        })
    }

    /// The canary of a step, running or decided.
    pub fn canary(&self, org: &str, flow: i64, step: &str) -> Result<Canary> {
        self.read(|m| {
            load_flow(m, org, flow)?;
            m.canary(org, flow, step)?
                .ok_or_else(|| Error::NotFound(format!("a canary of step `{step}`")))
        })
    }

    /// Promote a step's canary now (while it splits runs): the step is rebound to the
    /// candidate.
    pub fn promote_canary(&self, org: &str, actor: &str, flow: i64, step: &str) -> Result<Canary> {
        self.decide(org, flow, step, |m, canary| promote(m, org, actor, canary))
    }

    /// Roll a step's canary back now: every run takes the step's own binding again.
    pub fn roll_back_canary(
        &self,
        org: &str,
        actor: &str,
        flow: i64,
        step: &str,
    ) -> Result<Canary> {
        self.decide(org, flow, step, |m, canary| {
            roll_back(m, org, actor, canary, "rolled back on request")
        })
    }

    fn decide(
        &self,
        org: &str,
        flow: i64,
        step: &str,
        mut decision: impl FnMut(&mut dyn Metadata, &mut Canary) -> Result<()>,
    ) -> Result<Canary> {
        self.change(|m| {
            load_flow(m, org, flow)?;
            let mut canary = m
                .canary(org, flow, step)?
                .filter(Canary::splitting)
                .ok_or_else(|| Error::NotFound(format!("a running canary of step `{step}`")))?;
            decision(m, &mut canary)?;
            m.put_canary(org, &canary)?;
            Ok(canary)
        })
    }
}

/// The instance and version a candidate names, for a step on `step_instance`: an instance
/// and the version its install runs, or the step's instance and a version (revision) of its
/// connector.
pub(crate) fn candidate_pin(
    m: &mut dyn Metadata,
    org: &str,
    step_instance: i64,
    candidate: &Candidate,
) -> Result<(i64, VersionInfo)> {
    match (candidate.instance, &candidate.version) {
        (Some(instance), None) if candidate.revision.is_none() => {
            let found = load_instance(m, org, instance)?;
            let install = load_install_row(m, org, found.install_id)?;
            Ok((instance, installed_version(m, &install)?))
        }
        (None, Some(version)) => {
            let found = load_instance(m, org, step_instance)?;
            let install = load_install_row(m, org, found.install_id)?;
            let newest = visible_version(m, org, &install.package_org, &install.name, version)?;
            let version = match candidate.revision {
                None => newest,
                Some(revision) => m
                    .revisions(&newest.org, &newest.name, &newest.version.to_string())?
                    .into_iter()
                    .find(|v| v.revision == revision)
                    .ok_or_else(|| {
                        Error::NotFound(format!("revision {revision} of {}", newest.reference()))
                    })?,
            };
            Ok((step_instance, version))
        }
        _ => Err(Error::InvalidInput(
            "a candidate is an `instance`, or a `version` (and optionally a `revision`) of the \
             step's connector"
                .into(),
        )),
    }
}
