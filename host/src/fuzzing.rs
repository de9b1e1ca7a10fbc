//! What the fuzz targets in `fuzz/` drive: the parsers a tenant or a guest can feed that are
//! not public API otherwise. Not an API — hidden from the docs, free to change with the targets.

use serde_json::Value;
use serde_json::value::RawValue;

/// The output check of every call: `Ok` when `text` is one JSON document.
pub fn json_check(text: &str) -> Result<(), serde_json::Error> {
    crate::json::check(text)
}

/// The nesting of a JSON text, counted without parsing it.
pub fn json_nesting(text: &str) -> usize {
    crate::json::nesting(text)
}

/// The nesting of a parsed document.
pub fn value_nesting(value: &Value) -> usize {
    crate::json::value_nesting(value)
}

/// The deepest a document read for checking against a schema may nest.
pub const JSON_READ_DEPTH: usize = crate::json::READ_DEPTH;

/// A document read for checking against a schema.
pub fn json_for_checking(text: &str) -> Result<Value, serde_json::Error> {
    crate::json::value_for_checking(text)
}

/// The kind of a document told by its first byte, and the kind of the value read, as JSON
/// Schema's `type` names them (what an input schema asking only for a kind reads).
pub fn json_kinds(text: &str, value: &Value) -> (Option<String>, String) {
    let name = |kind: crate::json::Kind| format!("{kind:?}");
    (
        crate::json::kind_of(text).map(name),
        name(crate::json::kind_of_value(value)),
    )
}

/// A flow step's input written from its template, with `input` as the flow's input and
/// `steps` as earlier steps' outputs.
pub fn map_input(
    template: &Value,
    input: Option<&RawValue>,
    steps: &[(&str, &RawValue)],
) -> Result<String, String> {
    let scope = crate::registry::mapping::Scope {
        input,
        steps: steps.to_vec(),
    };
    crate::registry::mapping::map_input(template, &scope).map_err(|e| e.0)
}

/// What a guest's `describe()` answers, as plain data: operations as (name, description,
/// input schema, output schema), config keys as (name, description, default, required),
/// secrets as (name, description, required).
#[derive(Debug, Default)]
pub struct Described {
    pub name: String,
    pub version: String,
    pub description: String,
    pub operations: Vec<(String, String, String, String)>,
    pub config: Vec<(String, String, Option<String>, bool)>,
    pub secrets: Vec<(String, String, bool)>,
    pub outbound_hosts: Vec<String>,
}

/// A `describe()` answer checked as a load checks it, and its operations' schemas compiled as
/// a load compiles them: the description a load would keep, or why the load is refused.
pub fn describe(answer: Described) -> Result<crate::Description, String> {
    use crate::wit::gantry::connector::types::{ConfigKey, OperationInfo, SecretKey};
    let info = crate::wit::ConnectorInfo {
        name: answer.name,
        version: answer.version,
        description: answer.description,
        operations: answer
            .operations
            .into_iter()
            .map(
                |(name, description, input_schema, output_schema)| OperationInfo {
                    name,
                    description,
                    input_schema,
                    output_schema,
                },
            )
            .collect(),
        config: answer
            .config
            .into_iter()
            .map(|(name, description, default_value, required)| ConfigKey {
                name,
                description,
                default_value,
                required,
            })
            .collect(),
        secrets: answer
            .secrets
            .into_iter()
            .map(|(name, description, required)| SecretKey {
                name,
                description,
                required,
            })
            .collect(),
        outbound_hosts: answer.outbound_hosts,
    };
    let description = crate::Description::try_from(info)?;
    crate::runtime::schemas::Schemas::compile(&description)?;
    Ok(description)
}
