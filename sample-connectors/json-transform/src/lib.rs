//! `json-transform`: everyday reshaping of JSON documents between flow steps. The operations
//! live in `json-transform-core` (plain Rust, shared with the benchmark baselines); this crate
//! describes them and exports them as a component.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest, OperationInfo};
use json_transform_core::TransformError;
use serde_json::{Value, json};

struct JsonTransform;

fn op(name: &str, description: &str, input: Value, output: Value) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        input_schema: input.to_string(),
        output_schema: output.to_string(),
    }
}

impl Guest for JsonTransform {
    fn describe() -> ConnectorInfo {
        let any = json!({});
        let operations = vec![
            op(
                "pick",
                "Keep only the given paths of a document",
                json!({"type": "object", "required": ["document", "paths"], "properties": {
                    "document": {}, "paths": {"type": "array", "items": {"type": "string", "minLength": 1}}}}),
                json!({"type": "object"}),
            ),
            op(
                "rename",
                "Rename top-level keys of an object",
                json!({"type": "object", "required": ["document", "mapping"], "properties": {
                    "document": {"type": "object"},
                    "mapping": {"type": "object", "additionalProperties": {"type": "string"}}}}),
                json!({"type": "object"}),
            ),
            op(
                "filter",
                "Keep the items of an array that match a condition",
                json!({"type": "object", "required": ["items", "where"], "properties": {
                    "items": {"type": "array"},
                    "where": {"type": "object", "required": ["path", "op"], "properties": {
                        "path": {"type": "string"},
                        "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists"]},
                        "value": any}}}}),
                json!({"type": "object", "properties": {"items": {"type": "array"}}}),
            ),
            op(
                "template",
                "Render a text template with {{path}} placeholders",
                json!({"type": "object", "required": ["template", "data"], "properties": {
                    "template": {"type": "string"}, "data": {}}}),
                json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            ),
        ];
        gantry_sdk::info(
            "json-transform",
            "1.0.0",
            "Pick, rename, filter and template JSON documents",
            operations,
        )
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        json_transform_core::run(&operation, &input).map_err(|e| match e {
            TransformError::InvalidInput(m) => ConnectorError::InvalidInput(m),
            TransformError::UnknownOperation(m) => ConnectorError::NotFound(m),
        })
    }
}

gantry_sdk::export_connector!(JsonTransform);
