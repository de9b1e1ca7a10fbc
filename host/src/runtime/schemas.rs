//! The JSON Schemas a connector declares for its operations, compiled once when it is loaded
//! (with the `jsonschema` crate): input is checked against them before the guest runs, output
//! on request (`gantry check`, [`Connector::check_output`](super::Connector::check_output)).
//!
//! A schema is the publisher's, the input the caller's, and validation runs on the host, outside
//! the guest's CPU limit — so a schema is bounded at load: `$ref` only within itself (by JSON
//! pointer), no recursion, and at most [`MAX_UNFOLDED`] subschemas with every `$ref` unfolded.
//! Without that, a few kilobytes of `$defs` referring to each other twice over make validation
//! exponential. Patterns use the `regex` crate's engine: linear time, no backtracking.

use crate::json::{self, Kind};
use jsonschema::{PatternOptions, Validator};
use serde_json::Value;
use std::collections::HashMap;

/// Most subschemas (objects and arrays of a schema, every `$ref` unfolded) a schema may hold.
/// Validating one input then costs at most this many steps per node of the input.
pub const MAX_UNFOLDED: usize = 5_000;

/// Most bytes of a validation message quoted back (it can quote the input).
const MESSAGE_BYTES: usize = 300;

/// The validators of one connector's operations.
pub(crate) struct Schemas {
    operations: HashMap<String, Operation>,
}

struct Operation {
    /// `None` when the schema accepts everything (`{}` or `true`): nothing to check.
    input: Option<Input>,
    output: Option<Validator>,
}

/// An input schema, compiled.
struct Input {
    validator: Validator,
    /// The kinds of document the schema allows when that is all it asks (`{"type": "object"}`,
    /// annotations aside, the commonest input schema): an input that is one JSON document of
    /// such a kind is valid, told by its first byte without parsing it into a value.
    only_kinds: Option<Vec<Kind>>,
}

impl Schemas {
    /// Compile every operation's schemas; the error names the operation and the schema.
    pub(crate) fn compile(description: &crate::model::Description) -> Result<Self, String> {
        let mut operations = HashMap::with_capacity(description.operations.len());
        for op in &description.operations {
            let compile = |which: &str, schema: &Value| {
                validator(schema).map_err(|e| {
                    format!(
                        "the {which} schema of operation `{}` is not a usable JSON Schema: {e}",
                        op.name
                    )
                })
            };
            let input = compile("input", &op.input_schema)?.map(|validator| Input {
                validator,
                only_kinds: only_kinds(&op.input_schema),
            });
            operations.insert(
                op.name.clone(),
                Operation {
                    input,
                    output: compile("output", &op.output_schema)?,
                },
            );
        }
        Ok(Schemas { operations })
    }

    /// Check the JSON text `input` against the input schema of `operation`: the first failure,
    /// with where in the input it is. An operation declaring `{}` checks nothing and parses
    /// nothing; one asking only for a kind of document (`{"type": "object"}`) checks the text
    /// is one JSON document and reads its first byte; the rest, and every input refused, is
    /// parsed and validated.
    pub(crate) fn check_input(&self, operation: &str, input: &str) -> Result<(), String> {
        let Some(Some(schema)) = self.operations.get(operation).map(|op| op.input.as_ref()) else {
            return Ok(());
        };
        if let Some(kinds) = &schema.only_kinds
            && json::check(input).is_ok()
            && json::kind_of(input).is_some_and(|kind| kinds.contains(&kind))
        {
            return Ok(());
        }
        let document = json::value_for_checking(input).map_err(|e| match json::check(input) {
            Err(_) => format!("input is not a JSON document: {e}"),
            Ok(()) => format!(
                "input nests deeper than the {} levels its schema check reads: {e}",
                json::READ_DEPTH
            ),
        })?;
        check(&schema.validator, &document)
            .map_err(|e| format!("{e} (the input schema of operation `{operation}`)"))
    }

    /// Check the JSON text `output` against the output schema of `operation`.
    pub(crate) fn check_output(&self, operation: &str, output: &str) -> Result<(), String> {
        let Some(Some(validator)) = self.operations.get(operation).map(|op| op.output.as_ref())
        else {
            return Ok(());
        };
        let output: Value =
            serde_json::from_str(output).map_err(|e| format!("the output is not JSON: {e}"))?;
        check(validator, &output)
            .map_err(|e| format!("the output {e} (the output schema of operation `{operation}`)"))
    }
}

fn check(validator: &Validator, instance: &Value) -> Result<(), String> {
    match validator.validate(instance) {
        Ok(()) => Ok(()),
        Err(error) => {
            let path = error.instance_path().to_string();
            let mut message = error.to_string();
            if message.len() > MESSAGE_BYTES {
                let mut end = MESSAGE_BYTES;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
                message.push('…');
            }
            let at = if path.is_empty() { "/" } else { &path };
            Err(format!("at `{at}`: {message}"))
        }
    }
}

/// The kinds of document `schema` allows when it asks nothing else: a `type` (one name or a
/// list) and annotations only. `None` for any other keyword, and for `integer`, which only the
/// value tells from other numbers.
fn only_kinds(schema: &Value) -> Option<Vec<Kind>> {
    let kind = |name: &Value| match name.as_str()? {
        "null" => Some(Kind::Null),
        "boolean" => Some(Kind::Boolean),
        "number" => Some(Kind::Number),
        "string" => Some(Kind::String),
        "array" => Some(Kind::Array),
        "object" => Some(Kind::Object),
        _ => None,
    };
    let mut kinds = None;
    for (keyword, value) in schema.as_object()? {
        match keyword.as_str() {
            "type" => {
                kinds = Some(match value {
                    Value::Array(names) => names.iter().map(kind).collect::<Option<Vec<_>>>()?,
                    name => vec![kind(name)?],
                })
            }
            "$schema" | "$id" | "$comment" | "title" | "description" | "default" | "examples"
            | "deprecated" | "readOnly" | "writeOnly" => {}
            _ => return None,
        }
    }
    kinds
}

/// A validator for `schema`, or `None` when it accepts everything.
fn validator(schema: &Value) -> Result<Option<Validator>, String> {
    match schema {
        Value::Bool(true) => return Ok(None),
        Value::Object(map) if map.is_empty() => return Ok(None),
        _ => {}
    }
    let mut budget = MAX_UNFOLDED;
    unfold(schema, schema, &mut budget, &mut Vec::new())?;
    jsonschema::options()
        .with_pattern_options(PatternOptions::regex().size_limit(1 << 20))
        .build(schema)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Walk `node` of `root` with every `$ref` followed, spending one of `budget` per object or
/// array; `refs` is the chain of references being followed (a repeat is recursion).
fn unfold<'a>(
    root: &'a Value,
    node: &'a Value,
    budget: &mut usize,
    refs: &mut Vec<&'a str>,
) -> Result<(), String> {
    let children: Box<dyn Iterator<Item = (Option<&str>, &Value)>> = match node {
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (Some(k.as_str()), v))),
        Value::Array(items) => Box::new(items.iter().map(|v| (None, v))),
        _ => return Ok(()),
    };
    *budget = budget.checked_sub(1).ok_or_else(|| {
        format!("it holds more than {MAX_UNFOLDED} subschemas with its `$ref`s unfolded")
    })?;
    for (key, value) in children {
        match (key, value) {
            (Some("$ref"), Value::String(reference)) => {
                let target = resolve(root, reference)?;
                if refs.contains(&reference.as_str()) {
                    return Err(format!(
                        "`$ref` `{reference}` refers to itself: recursive schemas are not \
                         supported"
                    ));
                }
                refs.push(reference);
                unfold(root, target, budget, refs)?;
                refs.pop();
            }
            (Some("$dynamicRef" | "$recursiveRef"), _) => {
                return Err(format!("`{}` is not supported", key.unwrap_or_default()));
            }
            _ => unfold(root, value, budget, refs)?,
        }
    }
    Ok(())
}

/// The subschema `reference` names: only `#` and `#/json/pointer` within the schema itself.
fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let pointer = reference.strip_prefix('#').ok_or_else(|| {
        format!("`$ref` `{reference}` is not supported: only `#/…` pointers within the schema")
    })?;
    let pointer = percent_decode(pointer);
    root.pointer(&pointer)
        .ok_or_else(|| format!("`$ref` `{reference}` points at nothing in the schema"))
}

/// `%XX` escapes of a URI fragment decoded (JSON pointers in `$ref` are URI fragments).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_that_unfolds_exponentially_is_refused() {
        // 40 definitions, each referring to the next twice: 2^40 subschemas unfolded.
        let mut defs = serde_json::Map::new();
        for i in 0..40 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert("d40".into(), json!({"type": "string"}));
        let schema = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let Err(err) = validator(&schema) else {
            panic!("refused")
        };
        assert!(err.contains("more than 5000 subschemas"), "{err}");
    }

    #[test]
    fn recursion_remote_and_dangling_refs_are_refused_and_local_ones_work() {
        let recursive = json!({"$defs": {"node": {"properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node"});
        assert!(
            validator(&recursive)
                .err()
                .unwrap()
                .contains("refers to itself")
        );
        let remote = json!({"$ref": "https://example.com/schema.json"});
        assert!(validator(&remote).err().unwrap().contains("not supported"));
        let dangling = json!({"$ref": "#/$defs/nothing"});
        assert!(
            validator(&dangling)
                .err()
                .unwrap()
                .contains("points at nothing")
        );
        let local = json!({"$defs": {"id": {"type": "string", "minLength": 1}},
            "type": "object", "properties": {"id": {"$ref": "#/$defs/id"}}, "required": ["id"]});
        let v = validator(&local).unwrap().expect("a validator");
        assert!(check(&v, &json!({"id": "42"})).is_ok());
        let err = check(&v, &json!({"id": ""})).unwrap_err();
        assert!(err.starts_with("at `/id`:"), "{err}");
        let err = check(&v, &json!({})).unwrap_err();
        assert!(err.starts_with("at `/`:") && err.contains("id"), "{err}");
    }

    #[test]
    fn schemas_that_are_not_json_schemas_are_refused_and_trivial_ones_check_nothing() {
        assert!(validator(&json!({"type": "objekt"})).is_err());
        assert!(validator(&json!({"pattern": "("})).is_err());
        assert!(validator(&json!({})).unwrap().is_none());
        assert!(validator(&json!(true)).unwrap().is_none());
    }

    /// The schemas of one operation `op` taking `input`.
    fn schemas_taking(input: Value) -> Schemas {
        Schemas::compile(&crate::model::Description {
            name: "c".into(),
            version: semver::Version::new(1, 0, 0),
            description: String::new(),
            operations: vec![crate::model::Operation {
                name: "op".into(),
                description: String::new(),
                input_schema: input,
                output_schema: json!({}),
            }],
            config: vec![],
            secrets: vec![],
            outbound_hosts: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_schema_asking_only_a_kind_reads_the_first_byte_and_agrees_with_the_validator() {
        let inputs = [
            r#" {"a": [1, {"b": null}]} "#,
            "{}",
            "\n\t[1, 2]",
            "null",
            r#""text""#,
            "-1.5",
            "0",
            "1e400",
            "true",
            "false",
            // Not one JSON document:
            "{",
            "[1,]",
            "tru",
            "nul",
            "-",
            "{} {}",
            "",
            "  ",
            "'a'",
        ];
        for schema in [
            json!({"type": "object"}),
            json!({"type": ["array", "null"], "title": "t", "$comment": "c"}),
            json!({"type": "string", "description": "d", "examples": ["x"]}),
            json!({"type": ["number", "boolean"], "default": 1}),
        ] {
            let kinds = only_kinds(&schema).expect("only kinds");
            let validator = validator(&schema).unwrap().unwrap();
            let schemas = schemas_taking(schema.clone());
            for input in inputs {
                let fast = json::check(input).is_ok()
                    && json::kind_of(input).is_some_and(|kind| kinds.contains(&kind));
                let full = json::value_for_checking(input)
                    .is_ok_and(|document| check(&validator, &document).is_ok());
                assert_eq!(fast, full, "{schema} on {input:?}");
                assert_eq!(schemas.check_input("op", input).is_ok(), full, "{input:?}");
            }
        }
        for schema in [
            json!({"type": "integer"}),
            json!({"type": ["number", "integer"]}),
            json!({"type": "object", "required": ["a"]}),
            json!({"type": "object", "properties": {}}),
            json!({"enum": [1]}),
            json!({"title": "no type"}),
            json!({"type": 3}),
        ] {
            assert_eq!(only_kinds(&schema), None, "{schema}");
        }
    }

    #[test]
    fn an_input_refused_says_why_as_the_validator_does() {
        let schemas = schemas_taking(json!({"type": "object"}));
        assert!(schemas.check_input("op", r#"{"a": 1}"#).is_ok());
        let err = schemas.check_input("op", "[1]").unwrap_err();
        assert!(
            err.starts_with("at `/`:")
                && err.contains("\"object\"")
                && err.ends_with("(the input schema of operation `op`)"),
            "{err}"
        );
        let err = schemas.check_input("op", "{").unwrap_err();
        assert!(err.starts_with("input is not a JSON document:"), "{err}");
        // Deeper than the validator reads, an object is still an object.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(schemas.check_input("op", &deep).is_ok());
        let schemas = schemas_taking(json!({"type": "object", "required": ["a"]}));
        let err = schemas
            .check_input("op", &deep.replace("\"a\"", "\"b\""))
            .unwrap_err();
        assert!(
            err.starts_with("input nests deeper than the 127 levels"),
            "{err}"
        );
        // An operation the schemas do not know, and one declaring `{}`, check nothing.
        assert!(schemas.check_input("other", "not JSON").is_ok());
        assert!(
            schemas_taking(json!({}))
                .check_input("op", "not JSON")
                .is_ok()
        );
    }

    #[test]
    fn a_long_message_is_cut() {
        let v = validator(&json!({"type": "integer"})).unwrap().unwrap();
        let err = check(&v, &json!("x".repeat(10_000))).unwrap_err();
        assert!(err.len() < MESSAGE_BYTES + 40, "{}", err.len());
    }
}
