//! The marketplace (search, a connector's versions and what each declares, install) and
//! publishing (upload, what `inspect` sees, private or public, republish, deprecate, block).

use super::session::{Fields, Posted, Seen, forged, same};
use super::{Answer, Failure, csrf, kebab, may, page, see, shown, when};
use crate::api::auth::{Operator, Publisher, Viewer};
use crate::api::state::AppState;
use crate::model::{Description, Page, Role, Search, VersionInfo, VersionState, Visibility};
use crate::registry::SignedIn;
use crate::runtime::Inspection;
use axum::extract::{Multipart, Path, Query, State};
use maud::{Markup, html};
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub(crate) struct MarketQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    publisher: String,
    #[serde(default)]
    after: String,
}

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A version's state as a badge (none when active).
pub(crate) fn badge(state: VersionState) -> Markup {
    html! {
        @match state {
            VersionState::Active => {},
            VersionState::Deprecated => span.badge.deprecated { "deprecated" },
            VersionState::Blocked => span.badge.blocked { "blocked" },
        }
    }
}

/// Marketplace search: text, tag, publisher; one page of connectors.
pub(crate) async fn marketplace(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Query(q): Query<MarketQuery>,
) -> Answer {
    let search = Search {
        text: some(&q.q),
        tag: some(&q.tag),
        publisher: some(&q.publisher),
    };
    let page_of = Page {
        limit: Some(50),
        after: some(&q.after),
    };
    let viewer = who.principal.org.clone();
    let found = s
        .blocking(move |r| r.search(&viewer, &search, &page_of))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    let next = (found.len() == 50).then(|| {
        let last = &found[found.len() - 1];
        format!("{}/{}", last.org, last.name)
    });
    shown(page(
        "Marketplace",
        Some(&who),
        html! {
            form.search method="get" action="/marketplace" role="search" {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(q.q);
                label for="tag" { "Tag" }
                input #tag type="text" name="tag" value=(q.tag);
                label for="publisher" { "Publisher" }
                input #publisher type="text" name="publisher" value=(q.publisher);
                button type="submit" { "Search" }
            }
            @if found.is_empty() {
                p { "No connector matches." }
            } @else {
                table {
                    thead { tr { th { "Connector" } th { "Newest" } th { "Description" } th { "Versions" } } }
                    tbody {
                        @for l in &found {
                            tr {
                                td { a href=(format!("/marketplace/{}/{}", l.org, l.name)) { (l.org) "/" (l.name) } }
                                td { (l.latest.version) " " (badge(l.latest.state)) }
                                td { (l.latest.description.description) }
                                td {
                                    @for v in &l.versions {
                                        span.version { (v.version) " " (badge(v.state)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(after) = next {
                    a href=(format!("/marketplace?q={}&tag={}&publisher={}&after={}", enc(&q.q), enc(&q.tag), enc(&q.publisher), enc(&after))) { "Next page" }
                }
            }
        },
    ))
}

/// `text`, URL-encoded for a query.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What a version declares: operations, config keys, secrets, outbound hosts.
pub(crate) fn declared(d: &Description) -> Markup {
    html! {
        dl.declared {
            dt { "Operations" }
            dd { ul { @for op in &d.operations { li { code { (op.name) } " — " (op.description) } } } }
            dt { "Config" }
            dd {
                @if d.config.is_empty() { "none" }
                ul { @for c in &d.config {
                    li { code { (c.name) } @if c.required { " (required)" }
                         @if let Some(default) = &c.default_value { " default " code { (default) } }
                         " — " (c.description) }
                } }
            }
            dt { "Secrets" }
            dd {
                @if d.secrets.is_empty() { "none" }
                ul { @for k in &d.secrets { li { code { (k.name) } @if k.required { " (required)" } " — " (k.description) } } }
            }
            dt { "Outbound hosts" }
            dd { @if d.outbound_hosts.is_empty() { "none" } @else { (d.outbound_hosts.join(", ")) } }
        }
    }
}

/// A connector: every version the viewer may see, newest first, with what each declares; install
/// (operators) and the lifecycle of its own versions (publishers).
pub(crate) async fn connector(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Viewer>,
    Path((org, name)): Path<(String, String)>,
) -> Answer {
    let viewer = who.principal.org.clone();
    let (o, n) = (org.clone(), name.clone());
    let mut versions = s
        .blocking(move |r| r.versions(&viewer, &o, &n, &Page::default()))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    versions.reverse();
    let own = org == who.principal.org;
    let installable: Vec<&VersionInfo> = versions
        .iter()
        .filter(|v| v.state == VersionState::Active)
        .collect();
    shown(page(
        &format!("{org}/{name}"),
        Some(&who),
        html! {
            @if may(&who, Role::Operator) && !installable.is_empty() {
                form.inline method="post" action=(format!("/marketplace/{org}/{name}/install")) {
                    (csrf(&who))
                    label for="install-version" { "Version" }
                    select #install-version name="version" {
                        @for v in &installable { option value=(v.version) { (v.version) } }
                    }
                    button type="submit" { "Install" }
                }
            }
            @for v in &versions {
                section.version aria-label=(format!("version {}", v.version)) {
                    h2 { (v.version) " " (badge(v.state)) span.visibility { (kebab(&v.visibility)) } }
                    p { (v.description.description) }
                    p.meta {
                        "Revision " (v.revision) " · published by " (v.publisher) " at " (when(Some(v.published_at)))
                        " · " code { (v.digest.to_string()) }
                        @if !v.tags.is_empty() { " · tags: " (v.tags.join(", ")) }
                    }
                    (declared(&v.description))
                    @if own && may(&who, Role::Publisher) {
                        (state_form(&who, v))
                    }
                }
            }
        },
    ))
}

fn state_form(who: &SignedIn, v: &VersionInfo) -> Markup {
    let action = format!("/marketplace/{}/{}/{}/state", v.org, v.name, v.version);
    html! {
        form.inline method="post" action=(action) {
            (csrf(who))
            @if v.state != VersionState::Active { button name="state" value="active" { "Reactivate " (v.version) } }
            @if v.state != VersionState::Deprecated { button name="state" value="deprecated" { "Deprecate " (v.version) } }
            @if v.state != VersionState::Blocked { button.danger name="state" value="blocked" { "Block " (v.version) } }
            @if v.visibility == Visibility::Private { a href="/publish" { "Republish…" } }
        }
    }
}

/// Install a version of a connector into the signed-in organisation.
pub(crate) async fn install(
    State(s): State<AppState>,
    Path((org, name)): Path<(String, String)>,
    posted: Posted<Operator>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let version = fields.text("version").to_string();
    let (me, actor) = (who.principal.org.clone(), who.principal.actor());
    let install = s
        .blocking(move |r| r.install(&me, &actor, &org, &name, &version))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/installs/{}", install.id))
}

/// Set the state of one of the organisation's own versions.
pub(crate) async fn set_state(
    State(s): State<AppState>,
    Path((org, name, version)): Path<(String, String, String)>,
    posted: Posted<Publisher>,
) -> Answer {
    let Posted { who, fields, .. } = posted;
    let state = match fields.text("state") {
        "active" => VersionState::Active,
        "deprecated" => VersionState::Deprecated,
        "blocked" => VersionState::Blocked,
        other => return Err(Failure::bad(format!("no state `{other}`")).to(&who)),
    };
    if org != who.principal.org {
        return Err(Failure::new(
            axum::http::StatusCode::NOT_FOUND,
            "not-found",
            format!("connector {org}/{name}@{version}"),
        )
        .to(&who));
    }
    let (me, actor) = (who.principal.org.clone(), who.principal.actor());
    let n = name.clone();
    s.blocking(move |r| r.set_state(&me, &actor, &n, &version, state))
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    see(&format!("/marketplace/{org}/{name}"))
}

fn publish_form(who: &SignedIn) -> Markup {
    html! {
        form method="post" action="/publish" enctype="multipart/form-data" {
            (csrf(who))
            label for="component" { "Component (.wasm)" }
            input #component type="file" name="component" accept=".wasm,application/wasm" required;
            fieldset {
                legend { "Visibility" }
                input #private type="radio" name="visibility" value="private" checked;
                label for="private" { "Private: only " (who.principal.org) "; republishing makes a new revision" }
                input #public type="radio" name="visibility" value="public";
                label for="public" { "Public: in the marketplace; immutable once published" }
            }
            label for="tags" { "Tags (comma-separated)" }
            input #tags type="text" name="tags";
            button type="submit" name="action" value="inspect" { "Inspect" }
            button type="submit" name="action" value="publish" { "Publish" }
        }
    }
}

/// The publish form.
pub(crate) async fn publish_page(Seen(who, ..): Seen<Publisher>) -> Answer {
    shown(page("Publish", Some(&who), publish_form(&who)))
}

/// What `inspect` sees of a component.
fn inspection(i: &Inspection) -> Markup {
    html! {
        section.inspection aria-label="Inspection" {
            h2 { "What the component is" }
            p.meta { code { (i.digest.to_string()) } " · " (i.size) " bytes" }
            @match &i.fits {
                Ok(d) => {
                    p.fits { "Fits the world: " strong { (d.name) "@" (d.version) } " — " (d.description) }
                    (declared(d))
                }
                Err(why) => p.failure role="alert" { "Does not fit the world: " (why.to_string()) },
            }
            @let never = i.never_granted();
            @if !never.is_empty() {
                p.failure { "Imports the sandbox never grants: " (never.join(", ")) }
            }
        }
    }
}

/// Inspect an uploaded component, and publish it when asked (name and version from its own
/// `describe()`).
pub(crate) async fn publish(
    State(s): State<AppState>,
    Seen(who, ..): Seen<Publisher>,
    mut form: Multipart,
) -> Answer {
    let mut fields = Vec::new();
    let mut bytes = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Failure::bad(e.body_text()).to(&who))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "component" {
            bytes = field
                .bytes()
                .await
                .map_err(|e| Failure::bad(e.body_text()).to(&who))?
                .to_vec();
        } else {
            let value = field
                .text()
                .await
                .map_err(|e| Failure::bad(e.body_text()).to(&who))?;
            fields.push((name, value));
        }
    }
    let fields = Fields::from(fields);
    if !same(fields.text("csrf"), &who.csrf) {
        return Ok(forged(&who));
    }
    let visibility = match fields.text("visibility") {
        "public" => Visibility::Public,
        _ => Visibility::Private,
    };
    let tags: Vec<String> = fields
        .text("tags")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let inspected = s
        .registry
        .runtime()
        .inspect(&bytes)
        .await
        .map_err(|e| Failure::bad(format!("not a component Gantry can load: {e}")).to(&who))?;
    if inspected.fits.is_err() || fields.text("action") != "publish" {
        return shown(page(
            "Publish",
            Some(&who),
            html! { (inspection(&inspected)) (publish_form(&who)) },
        ));
    }
    let (org, actor) = (who.principal.org.clone(), who.principal.actor());
    let (outcome, info) = s
        .registry
        .publish_as_described(&org, &actor, visibility, tags, bytes)
        .await
        .map_err(|e| Failure::from(e).to(&who))?;
    shown(page(
        "Published",
        Some(&who),
        html! {
            p.done role="status" {
                (info.org) "/" (info.name) "@" (info.version) " revision " (info.revision)
                " (" (kebab(&info.visibility)) "): " (kebab(&outcome))
            }
            p { a href=(format!("/marketplace/{}/{}", info.org, info.name)) { "See " (info.name) " in the marketplace" } }
            (inspection(&inspected))
        },
    ))
}
