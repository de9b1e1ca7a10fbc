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
use crate::registry::{
    Error, Install, Instance, Registry, Result, VersionInfo, VersionState, audit, check_bindable,
    load_install_row, load_instance, now_ms, validate_label, visible_version,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
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
    tx: &Transaction<'_>,
    org: &str,
    install: i64,
    target: &crate::registry::VersionInfo,
) -> Result<Vec<Value>> {
    let mut stmt = tx.prepare(
        "SELECT s.flow_id, s.name, s.operation, s.digest FROM steps s JOIN flows f ON f.id = s.flow_id \
         WHERE f.org = ?1 AND s.instance_id IN (SELECT id FROM instances WHERE org = ?1 AND install_id = ?2)",
    )?;
    let steps = stmt
        .query_map(params![org, install], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let missing: Vec<String> = steps
        .iter()
        .filter(|(_, _, operation, _)| target.description.operation(operation).is_none())
        .map(|(flow, step, operation, _)| format!("flow {flow} step `{step}` uses `{operation}`"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Conflict(format!(
            "{} lacks operations bound flows use ({}); install it alongside and rebind instead",
            target.reference(),
            missing.join("; ")
        )));
    }
    tx.execute(
        "UPDATE steps SET digest = ?3 WHERE flow_id IN (SELECT id FROM flows WHERE org = ?1) \
         AND instance_id IN (SELECT id FROM instances WHERE org = ?1 AND install_id = ?2)",
        params![org, install, target.digest.to_string()],
    )?;
    Ok(steps
        .into_iter()
        .map(|(flow, step, _, from)| json!({"flow": flow, "step": step, "from": from, "to": target.digest}))
        .collect())
}

/// The digest a new binding to `instance` gets, checking the operation exists and the version
/// may be bound.
fn bind(conn: &Connection, org: &str, instance: i64, operation: &str) -> Result<Digest> {
    let instance = load_instance(conn, org, instance)?;
    let install = load_install_row(conn, org, instance.install_id)?;
    let version = visible_version(
        conn,
        org,
        &install.package_org,
        &install.name,
        &install.version.to_string(),
    )?;
    check_bindable(&version)?;
    if version.description.operation(operation).is_none() {
        return Err(Error::InvalidInput(format!(
            "{} has no operation `{operation}`",
            version.reference()
        )));
    }
    Ok(version.digest)
}

fn load_flow(conn: &Connection, org: &str, id: i64) -> Result<Flow> {
    let (name, created_by, created_at) = conn
        .query_row(
            "SELECT name, created_by, created_at FROM flows WHERE org = ?1 AND id = ?2",
            params![org, id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("flow {id}")))?;
    let mut stmt = conn.prepare(
        "SELECT name, instance_id, operation, input, digest FROM steps WHERE flow_id = ?1 ORDER BY position",
    )?;
    let steps = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(|(name, instance, operation, input, digest)| {
            Ok(Step {
                name,
                instance,
                operation,
                input: serde_json::from_str(&input)?,
                digest: digest
                    .parse()
                    .map_err(|e| Error::Storage(format!("stored digest: {e}")))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Flow {
        id,
        org: org.to_string(),
        name,
        steps,
        created_by,
        created_at,
    })
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
        let mut conn = self.db();
        Self::require_org(&conn, org)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM flows WHERE org = ?1 AND name = ?2)",
            params![org, name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(Error::Conflict(format!("a flow named `{name}` exists")));
        }
        tx.execute(
            "INSERT INTO flows (org, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![org, name, actor, now_ms()],
        )?;
        let id = tx.last_insert_rowid();
        let mut pins = Vec::new();
        for (position, step) in steps.iter().enumerate() {
            let digest = bind(&tx, org, step.instance, &step.operation)?;
            tx.execute(
                "INSERT INTO steps (flow_id, position, name, instance_id, operation, input, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, position, step.name, step.instance, step.operation, step.input.to_string(), digest.to_string()],
            )?;
            pins.push(json!({"step": step.name, "instance": step.instance, "digest": digest}));
        }
        audit(
            &tx,
            org,
            actor,
            "create-flow",
            &format!("flow {id}"),
            Value::Null,
            json!({"name": name, "steps": pins}),
        )?;
        tx.commit()?;
        load_flow(&conn, org, id)
    }

    pub fn get_flow(&self, org: &str, id: i64) -> Result<Flow> {
        load_flow(&self.db(), org, id)
    }

    pub fn flows(&self, org: &str) -> Result<Vec<Flow>> {
        let conn = self.db();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM flows WHERE org = ?1 ORDER BY id")?
            .query_map([org], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter()
            .map(|id| load_flow(&conn, org, id))
            .collect()
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = load_flow(&tx, org, flow)?;
        let old = current
            .steps
            .iter()
            .find(|s| s.name == step)
            .ok_or_else(|| Error::NotFound(format!("step `{step}` of flow {flow}")))?;
        let instance = instance.unwrap_or(old.instance);
        let digest = bind(&tx, org, instance, &old.operation)?;
        tx.execute(
            "UPDATE steps SET instance_id = ?3, digest = ?4 WHERE flow_id = ?1 AND name = ?2",
            params![flow, step, instance, digest.to_string()],
        )?;
        audit(
            &tx,
            org,
            actor,
            "rebind-step",
            &format!("flow {flow} step {step}"),
            json!({"instance": old.instance, "digest": old.digest}),
            json!({"instance": instance, "digest": digest}),
        )?;
        tx.commit()?;
        let flow = load_flow(&conn, org, flow)?;
        drop(conn);
        self.collect_garbage()?;
        Ok(flow)
    }

    /// Rebind every step (in every flow of `org`) that uses an instance of install `from` to
    /// instance `to`. Returns how many steps moved.
    pub fn rebind_install(&self, org: &str, actor: &str, from: i64, to: i64) -> Result<usize> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        load_install_row(&tx, org, from)?; // it must exist
        let steps: Vec<(i64, String, String, i64, String)> = tx
            .prepare(
                "SELECT s.flow_id, s.name, s.operation, s.instance_id, s.digest FROM steps s JOIN flows f ON f.id = s.flow_id \
                 WHERE f.org = ?1 AND s.instance_id IN (SELECT id FROM instances WHERE org = ?1 AND install_id = ?2)",
            )?
            .query_map(params![org, from], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut moved = Vec::new();
        for (flow, name, operation, old_instance, old_digest) in &steps {
            let digest = bind(&tx, org, to, operation)?;
            tx.execute(
                "UPDATE steps SET instance_id = ?3, digest = ?4 WHERE flow_id = ?1 AND name = ?2",
                params![flow, name, to, digest.to_string()],
            )?;
            moved.push(json!({"flow": flow, "step": name, "from": {"instance": old_instance, "digest": old_digest}, "to": {"instance": to, "digest": digest}}));
        }
        audit(
            &tx,
            org,
            actor,
            "rebind-install",
            &format!("install {from}"),
            Value::Null,
            json!({"steps": moved}),
        )?;
        tx.commit()?;
        drop(conn);
        self.collect_garbage()?;
        Ok(steps.len())
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
        let conn = self.db();
        conn.execute(
            "INSERT INTO runs (org, flow_id, status, started_at, duration_ms, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![org, flow.id, if status == RunStatus::Succeeded { "succeeded" } else { "failed" }, started_at, (run.duration_us / 1000) as i64, serde_json::to_string(&run)?],
        )?;
        run.id = conn.last_insert_rowid();
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

    /// Config (connector defaults, then the install's customisations, then the instance's) and
    /// secrets for one step, after checking its pinned version may run.
    fn call_context(&self, org: &str, step: &Step) -> Result<CallContext> {
        let conn = self.db();
        let pinned = conn
            .prepare_cached(&format!(
                "SELECT {} FROM versions WHERE digest = ?1 ORDER BY revision DESC LIMIT 1",
                crate::registry::VERSION_COLUMNS
            ))?
            .query_row([step.digest.to_string()], crate::registry::version_row)
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("connector version {}", step.digest)))?;
        if pinned.state == VersionState::Blocked {
            return Err(Error::Blocked(pinned.reference()));
        }
        let instance = load_instance(&conn, org, step.instance)?;
        let install = load_install_row(&conn, org, instance.install_id)?;
        self.context_of(&conn, org, &pinned, instance, install)
    }

    /// The context of a call of `instance` (of `install`) running `version`: config
    /// (connector defaults, then the install's customisations, then the instance's), secrets
    /// and outbound grants.
    fn context_of(
        &self,
        conn: &Connection,
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
        let secrets = Secrets::new(self.open_secrets(conn, org, instance.id)?);
        Ok(CallContext {
            config,
            secrets,
            limits: None,
            outbound: install.outbound,
        })
    }

    /// Recorded runs of flow `flow`, newest first.
    pub fn runs(&self, org: &str, flow: i64) -> Result<Vec<Run>> {
        let conn = self.db();
        load_flow(&conn, org, flow)?;
        let mut stmt = conn.prepare(
            "SELECT id, record FROM runs WHERE org = ?1 AND flow_id = ?2 ORDER BY id DESC",
        )?;
        let runs = stmt
            .query_map(params![org, flow], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        runs.into_iter()
            .map(|(id, record)| {
                Ok(Run {
                    id,
                    ..serde_json::from_str(&record)?
                })
            })
            .collect()
    }
}

impl Registry {
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
        let (version, ctx) = {
            let conn = self.db();
            let found = load_instance(&conn, org, instance)?;
            let install = load_install_row(&conn, org, found.install_id)?;
            let version = visible_version(
                &conn,
                org,
                &install.package_org,
                &install.name,
                &install.version.to_string(),
            )?;
            if version.state == VersionState::Blocked {
                return Err(Error::Blocked(version.reference()));
            }
            let ctx = self.context_of(&conn, org, &version, found, install)?;
            (version, ctx)
        };
        let connector = self.connector(&version.digest).await?;
        let result = self
            .runtime
            .invoke(&connector, operation, input, &ctx)
            .await;
        Ok((version.description, version.digest, result))
    }
}

impl Registry {
    /// `(name, version)` of the connector with `digest`, for labels (metrics, logs).
    pub fn label_of(&self, digest: &Digest) -> Option<(String, String)> {
        self.db()
            .query_row(
                "SELECT name, version FROM versions WHERE digest = ?1 LIMIT 1",
                [digest.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten()
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
