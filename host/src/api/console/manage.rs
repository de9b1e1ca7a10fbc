//! Manage connectors (the seeds' page): everything the organisation installed or built,
//! prebuilt or custom; an install with its customisations, grants, instances and where it is
//! used; **update available** and the update dialog — the warning, the plan, the
//! acknowledgements it requires, overwrite or install alongside.

use super::market::badge;
use super::session::{Posted, Seen};
use super::{Answer, Failure, csrf, kebab, may, page, see, shown, when};
use crate::api::auth::{Admin, Operator, Viewer};
use crate::api::state::AppState;
use crate::model::{Install, Page, Risk, Role, Search, Update, UpdateMode};
use crate::registry::SignedIn;
use crate::registry::compat::Severity;
use crate::registry::plan::UpdatePlan;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Prebuilt (another organisation's connector) or custom (the organisation's own).
fn kind(install: &Install) -> &'static str {
    if install.package_org == install.org {
        "custom"
    } else {
        "prebuilt"
    }
}

fn update_link(install: &Install) -> Markup {
    html! {
        @if let Some(v) = &install.update_available {
            a.button.update href=(format!("/installs/{}/update?version={v}", install.id)) { "Update available: " (v) }
        } @else if let Some(r) = install.revision_available {
            a.button.update href=(format!("/installs/{}/update?version={}", install.id, install.version)) { "Revision " (r) " available" }
        }
    }
}

/// Everything installed or built by the organisation.
pub(crate) async fn connectors(State(s): State<AppState>, Seen(who, ..): Seen<Viewer>) -> Answer {
    let org = who.principal.org.clone();
    let (installs, built) = s
        .blocking(move |r| {
            let installs = r.installs(&org, &Page::default())?;
            let built = r.search(
                &org,
                &Search {
                    text: None,
                    tag: None,
                    publisher: Some(org.clone()),
                },
                &Page::default(),
            )?;
            Ok::<_, crate::registry::Error>((installs, built))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    shown(page(
        "Manage connectors",
        Some(&who),
        html! {
            h2 { "Installed" }
            @if installs.is_empty() {
                p { "Nothing installed yet: " a href="/marketplace" { "find a connector in the marketplace" } "." }
            } @else {
                table.installs {
                    thead { tr { th { "Install" } th { "Connector" } th { "Kind" } th { "Version" } th { "Revision" } th { "Customised" } th { "Update" } } }
                    tbody {
                        @for i in &installs {
                            tr {
                                td { a href=(format!("/installs/{}", i.id)) { "install " (i.id) } }
                                td { (i.package_org) "/" (i.name) }
                                td { span.kind { (kind(i)) } }
                                td { (i.version) }
                                td { (i.revision) }
                                td {
                                    @if i.customisations.is_empty() { "no" } @else {
                                        (i.customisations.len()) " by " (i.modified_by.as_deref().unwrap_or("-")) " at " (when(i.modified_at))
                                    }
                                }
                                td { (update_link(i)) }
                            }
                        }
                    }
                }
            }
            h2 { "Built by " (who.principal.org) }
            @if built.is_empty() {
                p { "None." @if may(&who, Role::Publisher) { " " a href="/publish" { "Publish one" } "." } }
            } @else {
                ul {
                    @for l in &built {
                        li { a href=(format!("/marketplace/{}/{}", l.org, l.name)) { (l.name) } " — newest " (l.latest.version) " " (badge(l.latest.state)) }
                    }
                }
            }
        },
    ))
}

/// One install: what it runs, its customisations (with who and when), grants, instances,
/// where it is used; customise, grant, rebind, update.
pub(crate) async fn install(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Path(id): Path<i64>,
) -> Answer {
    let org = who.principal.org.clone();
    let (install, version, usage, instances) = s
        .blocking(move |r| {
            let install = r.get_install(&org, id)?;
            let version = r.version(
                &org,
                &install.package_org,
                &install.name,
                &install.version.to_string(),
            )?;
            let usage = r.install_usage(&org, id)?;
            let instances = r.instances(&org, &Page::default())?;
            Ok::<_, crate::registry::Error>((install, version, usage, instances))
        })
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    let others: Vec<_> = instances
        .iter()
        .filter(|i| i.install_id != install.id)
        .collect();
    shown(page(
        &format!("Install {id}"),
        Some(&who),
        html! {
            p.summary {
                strong { (install.package_org) "/" (install.name) "@" (install.version) }
                " revision " (install.revision) " · " span.kind { (kind(&install)) } " "
                (badge(version.state))
                " · installed by " (install.created_by) " at " (when(Some(install.created_at)))
            }
            (update_link(&install))
            h2 { "Customisations" }
            @if install.customisations.is_empty() { p { "None: the connector's defaults." } } @else {
                p.meta { "Last changed by " (install.modified_by.as_deref().unwrap_or("-")) " at " (when(install.modified_at)) }
                table { tbody { @for (k, v) in &install.customisations { tr { th scope="row" { (k) } td { (v) } } } } }
            }
            @if may(&who, Role::Operator) && !version.description.config.is_empty() {
                form method="post" action=(format!("/installs/{id}/customise")) {
                    (csrf(&who))
                    @for c in &version.description.config {
                        label for=(format!("config-{}", c.name)) { (c.name) @if let Some(d) = &c.default_value { " (default " (d) ")" } }
                        input id=(format!("config-{}", c.name)) type="text" name=(format!("config.{}", c.name))
                            value=(install.customisations.get(&c.name).map(String::as_str).unwrap_or(""));
                    }
                    button type="submit" { "Save customisations" }
                }
            }
            h2 { "Outbound hosts" }
            p { "Declared: " @if version.description.outbound_hosts.is_empty() { "none" } @else { (version.description.outbound_hosts.join(", ")) }
                ". Granted: " @if install.outbound.is_empty() { "none" } @else { (install.outbound.join(", ")) } "." }
            @if may(&who, Role::Admin) {
                form method="post" action=(format!("/installs/{id}/outbound")) {
                    (csrf(&who))
                    label for="outbound" { "Granted hosts (one per line)" }
                    textarea #outbound name="outbound" rows="3" { (install.outbound.join("\n")) }
                    button type="submit" { "Grant" }
                }
            }
            h2 { "Instances and where they are used" }
            @if usage.instances.is_empty() { p { "No instance yet: " a href="/instances" { "create one" } "." } }
            ul { @for i in &usage.instances { li { a href=(format!("/instances/{}", i.instance)) { (i.name) } } } }
            @if !usage.steps.is_empty() {
                table {
                    thead { tr { th { "Flow" } th { "Step" } th { "Operation" } th { "Instance" } th { "Pinned to" } } }
                    tbody { @for st in &usage.steps {
                        tr {
                            td { a href=(format!("/flows/{}", st.flow)) { "flow " (st.flow) } }
                            td { (st.step) } td { (st.operation) } td { (st.instance) }
                            td { (st.connector.as_deref().unwrap_or("-")) @if let Some(r) = st.revision { " revision " (r) } }
                        }
                    } }
                }
                @if may(&who, Role::Operator) && !others.is_empty() {
                    form.inline method="post" action=(format!("/installs/{id}/rebind")) {
                        (csrf(&who))
                        label for="rebind-to" { "Rebind every step of this install to instance" }
                        select #rebind-to name="instance" {
                            @for i in &others { option value=(i.id) { (i.name) " (install " (i.install_id) ")" } }
                        }
                        button type="submit" { "Rebind steps" }
                    }
                }
            }
        },
    ))
}

/// Customise an install: every `config.KEY` field; an empty one means the default.
pub(crate) async fn customise(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let values: BTreeMap<String, String> = fields
        .prefixed("config.")
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    s.blocking(move |r| r.customise(&org, &actor, id, values))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/installs/{id}"))
}

/// Grant the install outbound hosts (one per line).
pub(crate) async fn grant_outbound(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Admin>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let hosts: Vec<String> = fields
        .text("outbound")
        .lines()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    s.blocking(move |r| r.grant_outbound(&org, &actor, id, hosts))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/installs/{id}"))
}

/// Move every step bound through the install to another instance.
pub(crate) async fn rebind_install(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let to: i64 = fields
        .text("instance")
        .parse()
        .map_err(|_| Failure::bad("choose an instance").to(&who))?;
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    s.blocking(move |r| r.rebind_install(&org, &actor, id, to))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/installs/{id}"))
}

#[derive(Deserialize)]
pub(crate) struct UpdateQuery {
    version: String,
}

/// What a risk means, for the acknowledgement's label.
fn risk_text(risk: Risk) -> &'static str {
    match risk {
        Risk::CustomisationsLost => "I accept that the customisations above are lost",
        Risk::BreakingChanges => "I accept the breaking changes listed above",
        Risk::UnknownChanges => "I accept changes Gantry cannot judge",
        Risk::MissingCredentials => {
            "I accept that instances lack credentials the new version requires"
        }
        Risk::NewOutboundHosts => "I accept that the new version calls new hosts",
        Risk::Downgrade => "I accept moving to a lower version",
    }
}

fn plan_view(plan: &UpdatePlan) -> Markup {
    html! {
        section.plan aria-label="Update plan" {
            h2 { "The update plan" }
            p { (plan.from) " (revision " (plan.from_revision) ") → " strong { (plan.to) " (revision " (plan.to_revision) ")" } }
            p { "Risks: " @if plan.risks.is_empty() { "none" } @else { (plan.risks.iter().map(kebab).collect::<Vec<_>>().join(", ")) } }
            @if !plan.customisations_lost.is_empty() {
                h3 { "Customisations an overwrite drops" }
                p.meta { "Set by " (plan.customised_by.as_deref().unwrap_or("-")) " at " (when(plan.customised_at)) }
                ul { @for (k, v) in &plan.customisations_lost { li { code { (k) } " = " (v) } } }
            }
            h3 { "Flow steps an overwrite moves" }
            @if plan.steps.is_empty() { p { "None." } }
            ul { @for st in &plan.steps {
                li { "flow " a href=(format!("/flows/{}", st.flow)) { (st.flow) } " step " code { (st.step) } " (" (st.operation) " on instance " (st.instance) ")"
                     @if st.operation_removed { strong.breaking { " — its operation is gone" } } }
            } }
            h3 { "What the version changes" }
            @if plan.changes.is_empty() { p { "Nothing it declares." } }
            ul { @for c in &plan.changes {
                li class=(kebab(&c.severity)) {
                    @match c.severity { Severity::Breaking => strong { "breaking" }, _ => span { (kebab(&c.severity)) } }
                    ": " (c.subject) ": " (c.reason)
                }
            } }
            @if !plan.instances_lacking.is_empty() {
                h3 { "Instances lacking what it requires" }
                ul { @for i in &plan.instances_lacking { li { (i.name) " (instance " (i.instance) ") lacks " (i.missing.join(", ")) } } }
            }
            @if !plan.new_outbound_hosts.is_empty() {
                h3 { "New outbound hosts (an admin must grant them)" }
                ul { @for h in &plan.new_outbound_hosts { li { code { (h) } } } }
            }
            @if !plan.to_world.is_empty() {
                details {
                    summary { "The WIT world of " (plan.to) }
                    ul.world { @for w in &plan.to_world {
                        li { @if !plan.from_world.is_empty() && !plan.from_world.contains(w) { "+ " } code { (w) } }
                    }
                    @for w in plan.from_world.iter().filter(|w| !plan.to_world.contains(w)) { li { "− " code { (w) } } } }
                }
            }
        }
    }
}

fn update_form(who: &SignedIn, id: i64, plan: &UpdatePlan, version: &str) -> Markup {
    html! {
        form.update method="post" action=(format!("/installs/{id}/update")) {
            (csrf(who))
            input type="hidden" name="version" value=(version);
            fieldset {
                legend { "How to update" }
                div {
                    input #overwrite type="radio" name="mode" value="overwrite" required;
                    label for="overwrite" { "Overwrite: the install moves to " (plan.to) ", its instances stay, every step above is rebound, customisations are dropped" }
                }
                div {
                    input #alongside type="radio" name="mode" value="alongside";
                    label for="alongside" { "Install alongside: a second install of " (plan.to) "; nothing moves until you rebind steps" }
                }
                div {
                    input #carry type="checkbox" name="carry_customisations" value="yes";
                    label for="carry" { "Alongside: carry the customisations to the new install" }
                }
            }
            @if !plan.risks.is_empty() {
                fieldset {
                    legend { "Acknowledge each risk" }
                    @for risk in &plan.risks {
                        div {
                            input id=(format!("ack-{}", kebab(risk))) type="checkbox" name="acknowledge" value=(kebab(risk));
                            label for=(format!("ack-{}", kebab(risk))) { (risk_text(*risk)) " (" (kebab(risk)) ")" }
                        }
                    }
                }
            }
            button type="submit" { "Update" }
            " " a href=(format!("/installs/{id}")) { "Cancel" }
        }
    }
}

/// The update dialog: the seed's warning, the plan, and (for admins) the form with the
/// acknowledgements it requires.
pub(crate) async fn update_dialog(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Path(id): Path<i64>,
    Query(q): Query<UpdateQuery>,
) -> Answer {
    let org = who.principal.org.clone();
    let version = q.version.clone();
    let plan = s
        .blocking(move |r| r.update_plan(&org, id, &version))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    shown(page(
        &format!("Update install {id} to {}", q.version),
        Some(&who),
        html! {
            div.warning role="alert" {
                strong { "If in doubt, don't overwrite!" }
                " Overwriting moves the install and every flow step through it to the new version and drops its customisations. Installing alongside changes nothing until you rebind."
            }
            (plan_view(&plan))
            @if may(&who, Role::Admin) { (update_form(&who, id, &plan, &q.version)) }
            @else { p { "Updating needs the admin role." } }
        },
    ))
}

/// Update an install, overwrite or alongside, with the acknowledgements ticked.
pub(crate) async fn update(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted<Admin>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let mode = match fields.text("mode") {
        "overwrite" => UpdateMode::Overwrite,
        "alongside" => UpdateMode::Alongside,
        _ => return Err(Failure::bad("choose overwrite or install alongside").to(&who)),
    };
    let acknowledge = fields
        .all("acknowledge")
        .into_iter()
        .map(|risk| {
            serde_json::from_value::<Risk>(serde_json::Value::String(risk.to_string()))
                .map_err(|_| Failure::bad(format!("no risk `{risk}`")).to(&who))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let update = Update {
        version: fields.text("version").to_string(),
        mode,
        acknowledge,
        acknowledge_customisations_lost: false,
        carry_customisations: fields.get("carry_customisations").is_some(),
    };
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    let install = s
        .blocking(move |r| r.update(&org, &actor, id, &update))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/installs/{}", install.id))
}
