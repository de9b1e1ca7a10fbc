//! What a new version changes for those who use the old one: operations removed or added,
//! input and output schemas compared, config keys, secrets and outbound hosts added — each
//! change breaking, compatible or unknown. The gate at publish refuses a breaking change
//! without a major bump; an update plan will list the same changes.
//!
//! The schema comparison answers "does schema W accept every value schema N accepts?" for the
//! JSON Schema keywords connectors use — `type`, `properties`, `required`, `items`, `enum`,
//! `additionalProperties`, `format` — and says *unknown* rather than guessing where another
//! keyword differs. An input stays compatible when the new schema accepts all the old one did;
//! an output when the old schema accepts all the new one may give.

use crate::model::Description;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// How a change affects those who use the older version.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Flows or instances that worked may fail: a removed operation, a schema that accepts
    /// less or promises less, a new required config key or secret, a new outbound host.
    Breaking,
    /// The comparison cannot tell (a schema keyword it does not reason about differs).
    Unknown,
    /// Nothing that worked stops working: an added operation, a wider input, an optional key.
    Compatible,
}

/// One change between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub severity: Severity,
    /// What changed: `operation pick`, `operation pick input`, `secret token`, ….
    pub subject: String,
    pub reason: String,
}

/// The changes from `old` to `new`, breaking ones first.
pub fn changes(old: &Description, new: &Description) -> Vec<Change> {
    let mut out = Vec::new();
    let mut change = |severity, subject: String, reason: String| {
        out.push(Change {
            severity,
            subject,
            reason,
        })
    };
    for op in &old.operations {
        let subject = format!("operation {}", op.name);
        match new.operations.iter().find(|n| n.name == op.name) {
            None => change(Severity::Breaking, subject, "removed".into()),
            Some(now) => {
                for (side, wider, narrower, verb) in [
                    (
                        "input",
                        &now.input_schema,
                        &op.input_schema,
                        "no longer accepts",
                    ),
                    (
                        "output",
                        &op.output_schema,
                        &now.output_schema,
                        "may now give",
                    ),
                ] {
                    let mut problems = Vec::new();
                    accepts_all(wider, narrower, "", &mut problems);
                    for problem in problems {
                        change(
                            problem.severity,
                            format!("operation {} {side}", op.name),
                            problem.describe(verb),
                        );
                    }
                }
            }
        }
    }
    for op in &new.operations {
        if !old.operations.iter().any(|o| o.name == op.name) {
            change(
                Severity::Compatible,
                format!("operation {}", op.name),
                "added".into(),
            );
        }
    }
    for key in &new.config {
        let needed = key.required && key.default_value.is_none();
        let before = old.config.iter().find(|k| k.name == key.name);
        let was_needed = before.is_some_and(|k| k.required && k.default_value.is_none());
        let subject = format!("config key {}", key.name);
        match (before, needed, was_needed) {
            (_, true, false) => change(Severity::Breaking, subject, "now required".into()),
            (None, _, _) => change(Severity::Compatible, subject, "added (optional)".into()),
            _ => {}
        }
    }
    for secret in &new.secrets {
        let before = old.secrets.iter().find(|s| s.name == secret.name);
        let subject = format!("secret {}", secret.name);
        match (before, secret.required) {
            (None | Some(_), true) if !before.is_some_and(|s| s.required) => {
                change(Severity::Breaking, subject, "now required".into())
            }
            (None, false) => change(Severity::Compatible, subject, "added (optional)".into()),
            _ => {}
        }
    }
    for host in &new.outbound_hosts {
        if !old.outbound_hosts.contains(host) {
            change(
                Severity::Breaking,
                format!("outbound host {host}"),
                "added: installs must grant it before calls reach it".into(),
            );
        }
    }
    out.sort_by_key(|c| c.severity);
    out
}

/// Why a wider schema may not accept everything a narrower one does.
struct Problem {
    severity: Severity,
    /// Where, as a JSON path under the schema's root (`` for the root, `.items`, `.a.b`).
    path: String,
    /// What: `type string`, `property \`a\``, ….
    what: String,
}

impl Problem {
    fn describe(&self, verb: &str) -> String {
        let at = if self.path.is_empty() {
            String::new()
        } else {
            format!(" at `{}`", self.path.trim_start_matches('.'))
        };
        match self.severity {
            Severity::Unknown => format!("cannot tell{at}: {}", self.what),
            _ => format!("{verb} {}{at}", self.what),
        }
    }
}

/// Keywords that only annotate: they accept and refuse nothing.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$schema",
    "$id",
    "deprecated",
    "readOnly",
    "writeOnly",
];
/// Keywords the comparison reasons about.
const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "additionalProperties",
    "format",
];
const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// Push to `out` why `wider` may not accept every value `narrower` accepts (nothing: it
/// does).
fn accepts_all(wider: &Value, narrower: &Value, path: &str, out: &mut Vec<Problem>) {
    if wider == narrower {
        return;
    }
    let problem = |severity, what: String| Problem {
        severity,
        path: path.to_string(),
        what,
    };
    let (w, n) = match (wider, narrower) {
        (Value::Bool(true), _) | (_, Value::Bool(false)) => return,
        (Value::Object(w), _) if constraints(w).next().is_none() => return,
        (Value::Bool(false), _) => {
            out.push(problem(Severity::Breaking, "any value".into()));
            return;
        }
        (Value::Object(w), Value::Bool(true)) => (w, &Map::new()),
        (Value::Object(w), Value::Object(n)) => (w, n),
        _ => {
            out.push(problem(
                Severity::Unknown,
                "a schema that is not an object".into(),
            ));
            return;
        }
    };
    let before = out.len();
    // A keyword this does not reason about, constraining `wider` otherwise than `narrower`.
    for (key, value) in constraints(w) {
        if !KNOWN.contains(&key.as_str()) && n.get(key) != Some(value) {
            out.push(problem(
                Severity::Unknown,
                format!("keyword `{key}` differs"),
            ));
        }
    }
    // Types: `integer` values are numbers too.
    let (wt, nt) = (types(w), types(n));
    let missing: Vec<&str> = nt
        .iter()
        .filter(|t| !(wt.contains(*t) || (**t == "integer" && wt.contains("number"))))
        .copied()
        .collect();
    if !missing.is_empty() {
        out.push(problem(
            Severity::Breaking,
            format!("type {}", missing.join(", ")),
        ));
    }
    if let Some(allowed) = w.get("enum").and_then(Value::as_array) {
        match n.get("enum").and_then(Value::as_array) {
            Some(given) => {
                for value in given.iter().filter(|v| !allowed.contains(v)) {
                    out.push(problem(Severity::Breaking, format!("enum value {value}")));
                }
            }
            None => out.push(problem(
                Severity::Breaking,
                "values outside its enum".into(),
            )),
        }
    }
    if let Some(format) = w.get("format")
        && n.get("format") != Some(format)
    {
        out.push(problem(
            Severity::Breaking,
            format!("values not of format {format}"),
        ));
    }
    if nt.contains("object") && wt.contains("object") {
        objects(w, n, path, out);
    }
    if nt.contains("array") && wt.contains("array") {
        match (w.get("items"), n.get("items")) {
            (None, _) => {}
            (Some(wi @ Value::Array(_)), ni) | (Some(wi), ni @ Some(Value::Array(_))) => {
                if Some(wi) != ni {
                    out.push(problem(Severity::Unknown, "tuple `items` differ".into()));
                }
            }
            (Some(wi), ni) => accepts_all(
                wi,
                ni.unwrap_or(&Value::Bool(true)),
                &format!("{path}[]"),
                out,
            ),
        }
    }
    // `narrower` may hold constraints of its own this does not read (`anyOf`, `$ref`, …) that
    // make it narrower than it looks: a breaking verdict here is then only a guess.
    let opaque = n
        .keys()
        .filter(|k| !KNOWN.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        .find(|k| w.get(*k) != n.get(*k));
    if let Some(key) = opaque {
        for p in &mut out[before..] {
            if p.severity == Severity::Breaking {
                p.severity = Severity::Unknown;
                p.what = format!("{} (the narrower schema's `{key}` may rule it out)", p.what);
            }
        }
    }
}

/// The properties of objects: every property `narrower` lets through must be one `wider`
/// accepts, and every property `wider` requires must be required by `narrower`.
fn objects(w: &Map<String, Value>, n: &Map<String, Value>, path: &str, out: &mut Vec<Problem>) {
    let required = |s: &Map<String, Value>| -> BTreeSet<String> {
        s.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let empty = Map::new();
    let props = |s: &Map<String, Value>| {
        s.get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    let additional = |s: &Map<String, Value>| {
        s.get("additionalProperties")
            .cloned()
            .unwrap_or(Value::Bool(true))
    };
    let (nreq, wprops, nprops) = (required(n), props(w), props(n));
    for key in required(w).difference(&nreq) {
        out.push(Problem {
            severity: Severity::Breaking,
            path: path.to_string(),
            what: format!("objects without property `{key}`"),
        });
    }
    let (wadd, nadd) = (additional(w), additional(n));
    for (key, wprop) in &wprops {
        let nprop = nprops.get(key).unwrap_or(&nadd);
        accepts_all(wprop, nprop, &format!("{path}.{key}"), out);
    }
    for (key, nprop) in nprops.iter().filter(|(k, _)| !wprops.contains_key(*k)) {
        accepts_all(&wadd, nprop, &format!("{path}.{key}"), out);
    }
    accepts_all(&wadd, &nadd, &format!("{path}.*"), out);
}

/// A schema's keywords that constrain (annotations left out).
fn constraints(s: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    s.iter().filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()))
}

/// The JSON types a schema's `type` allows (all of them without one).
fn types(s: &Map<String, Value>) -> BTreeSet<&str> {
    match s.get("type") {
        Some(Value::String(t)) => TYPES.iter().copied().filter(|x| x == t).collect(),
        Some(Value::Array(ts)) => TYPES
            .iter()
            .copied()
            .filter(|x| ts.iter().any(|t| t == x))
            .collect(),
        _ => TYPES.iter().copied().collect(),
    }
}

/// Whether going from `old` to `new` may break what used `old`: a major bump (from 1.0.0
/// on), a minor bump in 0.x, or leaving a pre-release.
pub fn may_break(old: &semver::Version, new: &semver::Version) -> bool {
    if !old.pre.is_empty() {
        return true;
    }
    if old.major == 0 && new.major == 0 {
        new.minor > old.minor
    } else {
        new.major > old.major
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(wider: Value, narrower: Value) -> Vec<(Severity, String)> {
        let mut out = Vec::new();
        accepts_all(&wider, &narrower, "", &mut out);
        out.into_iter()
            .map(|p| (p.severity, format!("{}{}", p.what, p.path)))
            .collect()
    }

    fn breaking(wider: Value, narrower: Value) -> bool {
        problems(wider, narrower)
            .iter()
            .any(|(s, _)| *s == Severity::Breaking)
    }

    #[test]
    fn the_keywords_connectors_use_are_compared() {
        let person = json!({"type": "object", "required": ["name"],
            "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}});
        // A new optional property (the old schema let no other through), a wider type: wider.
        let wider = json!({"type": "object", "required": ["name"],
            "additionalProperties": false,
            "properties": {"name": {"type": ["string", "null"]}, "age": {"type": "number"},
                           "tier": {"enum": ["gold", "silver", "bronze"]}}});
        // A constrained new property where any value was let through before is narrower.
        let mut open = person.clone();
        open["additionalProperties"] = json!(true);
        assert!(breaking(wider.clone(), open));
        assert!(problems(wider.clone(), person.clone()).is_empty());
        // The reverse: `null` names and fractional ages are no longer accepted.
        let back = problems(person.clone(), wider);
        assert!(
            back.contains(&(Severity::Breaking, "type null.name".into())),
            "{back:?}"
        );
        assert!(
            back.contains(&(Severity::Breaking, "type number.age".into())),
            "{back:?}"
        );
        // A newly required property; a closed object; a narrowed enum; items; formats.
        let required = json!({"type": "object", "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}});
        assert!(breaking(required, person.clone()));
        let closed = json!({"type": "object", "additionalProperties": false,
            "properties": {"name": {"type": "string"}}});
        assert!(breaking(closed, person.clone()));
        assert!(breaking(
            json!({"enum": ["a"]}),
            json!({"enum": ["a", "b"]})
        ));
        assert!(!breaking(
            json!({"enum": ["a", "b"]}),
            json!({"enum": ["b"]})
        ));
        assert!(breaking(
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": "array"})
        ));
        assert!(!breaking(
            json!({"type": "array"}),
            json!({"type": "array", "items": {"type": "string"}})
        ));
        assert!(breaking(
            json!({"format": "email"}),
            json!({"type": "string"})
        ));
    }

    #[test]
    fn what_it_does_not_read_is_unknown_not_guessed() {
        let p = problems(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string", "pattern": "^b"}),
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, Severity::Unknown);
        // The narrower side's own combinator may rule out what looks breaking.
        let p = problems(
            json!({"type": "string"}),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        );
        assert!(p.iter().all(|(s, _)| *s == Severity::Unknown), "{p:?}");
        // A keyword only the narrower side has just narrows it.
        assert!(
            problems(
                json!({"type": "integer"}),
                json!({"type": "integer", "minimum": 3})
            )
            .is_empty()
        );
    }

    #[test]
    fn bumps_that_may_break() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(may_break(&v("1.4.2"), &v("2.0.0")));
        assert!(!may_break(&v("1.4.2"), &v("1.5.0")));
        assert!(may_break(&v("0.3.1"), &v("0.4.0")));
        assert!(!may_break(&v("0.3.1"), &v("0.3.2")));
        assert!(may_break(&v("2.0.0-rc.1"), &v("2.0.0")));
    }

    mod properties {
        use super::*;
        use crate::model::{Description, Operation};
        use proptest::prelude::*;

        const BASE: &[&str] = &["object", "string", "integer", "boolean", "null"];

        /// An object schema: some types besides `object`, leaf properties, some required.
        fn schema() -> impl Strategy<Value = Value> {
            (
                proptest::sample::subsequence(&BASE[1..], 0..=2),
                proptest::collection::btree_map(
                    "[a-d]",
                    proptest::sample::select(&BASE[1..]),
                    0..4,
                ),
                any::<bool>(),
                any::<u8>(),
            )
                .prop_map(|(types, props, closed, pick)| {
                    let mut all = vec!["object"];
                    all.extend(types);
                    let required: Vec<&String> = props
                        .keys()
                        .enumerate()
                        .filter(|(i, _)| pick & (1 << i) != 0)
                        .map(|(_, k)| k)
                        .collect();
                    let properties: Map<String, Value> = props
                        .iter()
                        .map(|(k, t)| (k.clone(), json!({"type": [t]})))
                        .collect();
                    json!({"type": all, "properties": properties, "required": required,
                           "additionalProperties": !closed})
                })
        }

        /// `s` made strictly wider by one step, chosen by `how`, if one applies.
        fn widen(s: &Value, how: u8) -> Option<Value> {
            let mut w = s.clone();
            match how % 4 {
                0 => {
                    let types = w["type"].as_array_mut()?;
                    let new = BASE.iter().find(|t| !types.iter().any(|x| x == *t))?;
                    types.push(json!(new));
                }
                1 => {
                    w["required"].as_array_mut()?.pop()?;
                }
                2 => {
                    (w["additionalProperties"] == json!(false)).then_some(())?;
                    w["additionalProperties"] = json!(true);
                }
                _ => {
                    let (_, prop) = w["properties"].as_object_mut()?.iter_mut().next()?;
                    let types = prop["type"].as_array_mut()?;
                    let new = BASE[1..].iter().find(|t| !types.iter().any(|x| x == *t))?;
                    types.push(json!(new));
                }
            }
            Some(w)
        }

        fn description(version: &str, input: &Value, output: &Value) -> Description {
            Description {
                name: "c".into(),
                version: version.parse().unwrap(),
                description: String::new(),
                operations: vec![Operation {
                    name: "op".into(),
                    description: String::new(),
                    input_schema: input.clone(),
                    output_schema: output.clone(),
                }],
                config: Vec::new(),
                secrets: Vec::new(),
                outbound_hosts: Vec::new(),
            }
        }

        fn severities(old: &Description, new: &Description) -> BTreeSet<Severity> {
            changes(old, new).iter().map(|c| c.severity).collect()
        }

        proptest! {
            #[test]
            fn a_schema_is_compatible_with_itself(s in schema()) {
                prop_assert!(problems(s.clone(), s.clone()).is_empty());
            }

            #[test]
            fn widening_an_input_or_narrowing_an_output_is_compatible_and_not_the_reverse(
                s in schema(),
                how in any::<u8>(),
            ) {
                let Some(wide) = widen(&s, how) else { return Ok(()) };
                let any = json!({});
                // Input: the new version accepts more (compatible) or less (breaking).
                let wider_input = severities(&description("1.0.0", &s, &any), &description("1.1.0", &wide, &any));
                prop_assert!(!wider_input.contains(&Severity::Breaking), "{wider_input:?}");
                prop_assert!(!wider_input.contains(&Severity::Unknown), "{wider_input:?}");
                let narrower_input = severities(&description("1.0.0", &wide, &any), &description("1.1.0", &s, &any));
                prop_assert!(narrower_input.contains(&Severity::Breaking));
                // Output: the new version promises more (compatible) or less (breaking).
                let narrower_output = severities(&description("1.0.0", &any, &wide), &description("1.1.0", &any, &s));
                prop_assert!(narrower_output.is_empty(), "{narrower_output:?}");
                let wider_output = severities(&description("1.0.0", &any, &s), &description("1.1.0", &any, &wide));
                prop_assert!(wider_output.contains(&Severity::Breaking));
            }
        }
    }
}
