//! Instances (config and write-only secrets, rotation, where used), flows (steps with what
//! each is pinned to, rebinding, running, the runs) and the audit log.

use super::session::{Fields, Posted, Seen};
use super::{Answer, Failure, csrf, may, page, see, shown, when};
use crate::api::auth::{Admin, Operator, Viewer};
use crate::api::state::AppState;
use crate::api::wire::path_segment;
use crate::model::{Page, Role, RunStatus, Step, StepSpec};
use crate::registry::SignedIn;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// How many secret rows a form offers.
const SECRET_ROWS: usize = 3;

/// `key=value` lines as a map; a line without `=` is refused.
fn pairs(text: &str) -> Result<BTreeMap<String, String>, Failure> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| Failure::bad(format!("`{line}` is not key=value")))
        })
        .collect()
}

/// The secrets a form's rows name: `secret_name_N` with `secret_value_N`.
fn secrets(fields: &Fields) -> BTreeMap<String, String> {
    (0..SECRET_ROWS)
        .filter_map(|n| {
            let name = fields.text(&format!("secret_name_{n}"));
            let value = fields.get(&format!("secret_value_{n}")).unwrap_or_default();
            (!name.is_empty()).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// Rows for secrets: a name and a password field each, never filled in.
fn secret_rows() -> Markup {
    html! {
        fieldset {
            legend { "Secrets (write-only: never shown again)" }
            @for n in 0..SECRET_ROWS {
                div.row {
                    label for=(format!("secret-name-{n}")) { "Secret name" }
                    input id=(format!("secret-name-{n}")) type="text" name=(format!("secret_name_{n}"));
                    label for=(format!("secret-value-{n}")) { "Value" }
                    input id=(format!("secret-value-{n}")) type="password" name=(format!("secret_value_{n}")) autocomplete="off";
                }
            }
        }
    }
}

/// The organisation's instances, and a form to create one.
pub(crate) async fn instances(State(s): State<AppState>, Seen(who, ..): Seen<Viewer>) -> Answer {
    let org = who.principal.org.clone();
    let (instances, installs) = s
        .blocking(move |r| {
            Ok::<_, crate::registry::Error>((
                r.instances(&org, &Page::default())?,
                r.installs(&org, &Page::default())?,
            ))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    shown(page(
        "Instances",
        Some(&who),
        html! {
            @if instances.is_empty() { p { "No instance yet." } } @else {
                table {
                    thead { tr { th { "Instance" } th { "Install" } th { "Config" } th { "Secrets" } th { "Created" } } }
                    tbody { @for i in &instances {
                        tr {
                            td { a href=(format!("/instances/{}", i.id)) { (i.name) } }
                            td { a href=(format!("/installs/{}", i.install_id)) { "install " (i.install_id) } }
                            td { @for (k, v) in &i.config { code { (k) "=" (v) } " " } }
                            td { (i.secret_keys.join(", ")) }
                            td { (i.created_by) " at " (when(Some(i.created_at))) }
                        }
                    } }
                }
            }
            @if may(&who, Role::Operator) && !installs.is_empty() {
                h2 { "New instance" }
                form method="post" action="/instances" {
                    (csrf(&who))
                    label for="install" { "Install" }
                    select #install name="install" {
                        @for i in &installs { option value=(i.id) { "install " (i.id) ": " (i.package_org) "/" (i.name) "@" (i.version) } }
                    }
                    label for="name" { "Name" }
                    input #name type="text" name="name" required;
                    label for="config" { "Config (key=value, one per line)" }
                    textarea #config name="config" rows="3" {}
                    (secret_rows())
                    button type="submit" { "Create instance" }
                }
            }
        },
    ))
}

/// Create an instance.
pub(crate) async fn create_instance(State(s): State<AppState>, posted: Posted<Operator>) -> Answer {
    let Posted { who, fields, .. } = posted;
    let install: i64 = fields
        .text("install")
        .parse()
        .map_err(|_| Failure::bad("choose an install").to(&who))?;
    let config = pairs(fields.get("config").unwrap_or_default()).map_err(|e| e.to(&who))?;
    let secrets = secrets(&fields);
    let name = fields.text("name").to_string();
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    let instance = s
        .blocking(move |r| r.create_instance(&org, &actor, install, &name, config, secrets))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/instances/{}", instance.id))
}

/// One instance: config, the names of its secrets, where it is used; rotate its secrets.
pub(crate) async fn instance(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Path(id): Path<i64>,
) -> Answer {
    let org = who.principal.org.clone();
    let (instance, usage) = s
        .blocking(move |r| {
            let instance = r.get_instance(&org, id)?;
            let usage = r.install_usage(&org, instance.install_id)?;
            Ok::<_, crate::registry::Error>((instance, usage))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    let steps: Vec<_> = usage.steps.iter().filter(|s| s.instance == id).collect();
    shown(page(
        &format!("Instance {}", instance.name),
        Some(&who),
        html! {
            p { "Of " a href=(format!("/installs/{}", instance.install_id)) { "install " (instance.install_id) } " · created by " (instance.created_by) " at " (when(Some(instance.created_at))) }
            h2 { "Config" }
            @if instance.config.is_empty() { p { "None." } }
            table { tbody { @for (k, v) in &instance.config { tr { th scope="row" { (k) } td { (v) } } } } }
            h2 { "Secrets" }
            p { @if instance.secret_keys.is_empty() { "None." } @else { (instance.secret_keys.join(", ")) " (values are never shown)" } }
            @if may(&who, Role::Operator) {
                form method="post" action=(format!("/instances/{id}/secrets")) {
                    (csrf(&who))
                    p.help { "Rotating replaces every secret of the instance; the next call uses the new ones." }
                    (secret_rows())
                    button type="submit" { "Rotate credentials" }
                }
            }
            h2 { "Where it is used" }
            @if steps.is_empty() { p { "No flow step uses it." } }
            ul { @for st in &steps {
                li { a href=(format!("/flows/{}", st.flow)) { "flow " (st.flow) } " step " code { (st.step) } " (" (st.operation) ")" }
            } }
        },
    ))
}

/// Replace an instance's secrets.
pub(crate) async fn rotate_secrets(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let secrets = secrets(&fields);
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    s.blocking(move |r| r.rotate_secrets(&org, &actor, id, secrets))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/instances/{id}"))
}

/// The organisation's flows, and a form to create one.
pub(crate) async fn flows(State(s): State<AppState>, Seen(who, ..): Seen<Viewer>) -> Answer {
    let org = who.principal.org.clone();
    let (flows, instances) = s
        .blocking(move |r| {
            Ok::<_, crate::registry::Error>((
                r.flows(&org, &Page::default())?,
                r.instances(&org, &Page::default())?,
            ))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    shown(page(
        "Flows",
        Some(&who),
        html! {
            @if flows.is_empty() { p { "No flow yet." } } @else {
                table {
                    thead { tr { th { "Flow" } th { "Steps" } th { "Created" } } }
                    tbody { @for f in &flows {
                        tr {
                            td { a href=(format!("/flows/{}", f.id)) { (f.name) } }
                            td {
                                @for st in &f.steps {
                                    span.step { (st.name) ": " (st.connector.as_deref().unwrap_or("-"))
                                        @if st.out_of_date { " " span.badge.outdated { "out of date" } } }
                                    " "
                                }
                            }
                            td { (f.created_by) " at " (when(Some(f.created_at))) }
                        }
                    } }
                }
            }
            @if may(&who, Role::Operator) && !instances.is_empty() {
                h2 { "New flow" }
                form method="post" action="/flows" {
                    (csrf(&who))
                    label for="flow-name" { "Name" }
                    input #flow-name type="text" name="name" required;
                    label for="steps" { "Steps (JSON)" }
                    textarea #steps name="steps" rows="6" aria-describedby="steps-help" {
                        (format!("[{{\"name\": \"first\", \"instance\": {}, \"operation\": \"echo\", \"input\": {{}}}}]", instances[0].id))
                    }
                    p #steps-help.help {
                        "Each step: a name, an instance, an operation and an input (`${input.…}` and `${steps.NAME.…}` map earlier values). Instances: "
                        @for i in &instances { code { (i.id) } " " (i.name) "; " }
                    }
                    button type="submit" { "Create flow" }
                }
            }
        },
    ))
}

/// Create a flow from its steps as JSON.
pub(crate) async fn create_flow(State(s): State<AppState>, posted: Posted<Operator>) -> Answer {
    let Posted { who, fields, .. } = posted;
    let steps: Vec<StepSpec> = serde_json::from_str(fields.text("steps"))
        .map_err(|e| Failure::bad(format!("the steps are not valid: {e}")).to(&who))?;
    let name = fields.text("name").to_string();
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    let flow = s
        .blocking(move |r| r.create_flow(&org, &actor, &name, steps))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/flows/{}", flow.id))
}

fn rebind_form(
    who: &SignedIn,
    flow: i64,
    step: &Step,
    instances: &[crate::model::Instance],
) -> Markup {
    let (current, step) = (step.instance, step.name.as_str());
    let id = format!("rebind-{}", path_segment(step));
    html! {
        form.inline method="post" action=(format!("/flows/{flow}/steps/{}/rebind", path_segment(step))) {
            (csrf(who))
            label for=(id) { "Rebind " (step) " to" }
            select id=(id) name="instance" {
                @for i in instances {
                    option value=(i.id) selected[i.id == current] { (i.name) " (install " (i.install_id) ")" }
                }
            }
            button type="submit" { "Rebind" }
        }
    }
}

/// One flow: its steps with what each is pinned to, rebinding, a run form and the runs.
pub(crate) async fn flow(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Path(id): Path<i64>,
) -> Answer {
    let org = who.principal.org.clone();
    let (flow, runs, instances) = s
        .blocking(move |r| {
            Ok::<_, crate::registry::Error>((
                r.get_flow(&org, id)?,
                r.runs(
                    &org,
                    id,
                    &Page {
                        limit: Some(20),
                        after: None,
                    },
                )?,
                r.instances(&org, &Page::default())?,
            ))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    let operator = may(&who, Role::Operator);
    shown(page(
        &format!("Flow {}", flow.name),
        Some(&who),
        html! {
            h2 { "Steps" }
            table.steps {
                thead { tr { th { "Step" } th { "Operation" } th { "Instance" } th { "Connector" } th { "Revision" } th { "Digest" } @if operator { th { "Rebind" } } } }
                tbody { @for st in &flow.steps {
                    tr {
                        td { (st.name) }
                        td { (st.operation) }
                        td { a href=(format!("/instances/{}", st.instance)) { (st.instance) } }
                        td { (st.connector.as_deref().unwrap_or("-")) @if st.out_of_date { " " span.badge.outdated { "out of date" } } }
                        td { (st.revision.map(|r| r.to_string()).unwrap_or_default()) }
                        td { code.digest { (st.digest.to_string()) } }
                        @if operator { td { (rebind_form(&who, flow.id, st, &instances)) } }
                    }
                } }
            }
            @if operator {
                h2 { "Run" }
                form method="post" action=(format!("/flows/{id}/run")) {
                    (csrf(&who))
                    label for="input" { "Input (JSON)" }
                    textarea #input name="input" rows="3" { "{}" }
                    button type="submit" { "Run flow" }
                }
            }
            h2 { "Runs" }
            @if runs.is_empty() { p { "Not run yet." } }
            @for run in &runs {
                section.run aria-label=(format!("run {}", run.id)) {
                    h3 {
                        "Run " (run.id) " "
                        @match run.status { RunStatus::Succeeded => span.badge.ok { "succeeded" }, RunStatus::Failed => span.badge.blocked { "failed" } }
                        " at " (when(Some(run.started_at))) " in " (run.duration_us) " µs"
                    }
                    table {
                        thead { tr { th { "Step" } th { "Connector" } th { "Status" } th { "Time" } th { "Error" } } }
                        tbody { @for st in &run.steps {
                            tr {
                                td { (st.name) }
                                td { (st.connector.as_deref().unwrap_or("-")) @if let Some(r) = st.revision { " revision " (r) } }
                                td { @if st.error.is_some() { "error" } @else { "ok" } }
                                td { (st.duration_us) " µs" }
                                td { @if let Some(e) = &st.error { code { (e.code) } " " (e.message) } }
                            }
                        } }
                    }
                    @if let Some(out) = &run.output { p { "Output: " code.output { (out.get()) } } }
                    @if let Some(e) = &run.error { p.failure { "Step " (e.step) ": " (e.code) ": " (e.message) } }
                }
            }
        },
    ))
}

/// Run a flow with an input.
pub(crate) async fn run_flow(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let input: Box<serde_json::value::RawValue> =
        serde_json::from_str(fields.get("input").unwrap_or("{}"))
            .map_err(|e| Failure::bad(format!("the input is not JSON: {e}")).to(&who))?;
    let org = who.principal.org.clone();
    let _permit = s.call_permit(&org).map_err(|e| Failure::from(e).to(&who))?;
    s.registry
        .run_flow(&org, id, &*input)
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/flows/{id}"))
}

/// Rebind one step of a flow to an instance.
pub(crate) async fn rebind_step(
    State(s): State<AppState>,
    Path((id, step)): Path<(i64, String)>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let instance: i64 = fields
        .text("instance")
        .parse()
        .map_err(|_| Failure::bad("choose an instance").to(&who))?;
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    s.blocking(move |r| r.rebind_step(&org, &actor, id, &step, Some(instance)))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/flows/{id}"))
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    after: Option<String>,
}

/// The organisation's audit log: who changed what and when, with before and after.
pub(crate) async fn audit(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Admin>,
    Query(q): Query<AuditQuery>,
) -> Answer {
    let org = who.principal.org.clone();
    let page_of = Page {
        limit: Some(100),
        after: q.after.filter(|a| !a.is_empty()),
    };
    let entries = s
        .blocking(move |r| r.audit_log(&org, &page_of))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    let next = (entries.len() == 100).then(|| entries[99].id);
    shown(page(
        "Audit",
        Some(&who),
        html! {
            table.audit {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Subject" } th { "Before" } th { "After" } } }
                tbody { @for e in &entries {
                    tr {
                        td { (when(Some(e.at))) }
                        td { (e.actor) }
                        td { (e.action) }
                        td { (e.subject) }
                        td { code { (e.before.to_string()) } }
                        td { code { (e.after.to_string()) } }
                    }
                } }
            }
            @if let Some(after) = next { a href=(format!("/audit?after={after}")) { "Next page" } }
        },
    ))
}
