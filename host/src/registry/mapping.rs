//! Input mapping: in a step's `input` JSON, a string that is exactly `${input}`,
//! `${input.a.b}`, `${steps.NAME}` or `${steps.NAME.a.0}` is replaced by that value, copied as
//! the JSON text it arrived as (no number rounded, no escape rewritten).

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

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

/// A step's input that cannot be written from its template: it refers to something missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMapping(pub String);

/// Write `template` as JSON text with every `${input…}` and `${steps.NAME…}` string replaced by
/// the value it names in `scope`, copied as written.
pub fn map_input(template: &Value, scope: &Scope<'_>) -> Result<String, InvalidMapping> {
    serde_json::to_string(&Mapped { template, scope }).map_err(|e| InvalidMapping(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            assert!(err.0.contains("missing"), "{missing}: {err}");
        }
    }
}
