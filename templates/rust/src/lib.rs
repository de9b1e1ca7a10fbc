//! `{{name}}`: a Gantry connector. `get-item` reads one item of a JSON API:
//! `GET {base_url}/items/{id}` with the secret `api_key` as a bearer token.

use gantry_sdk::{ConfigKey, ConnectorError, ConnectorInfo, Guest, OperationInfo, SecretKey, http};
use serde_json::{Value, json};

struct Connector;

impl Guest for Connector {
    fn describe() -> ConnectorInfo {
        ConnectorInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            description: "Reads items of the Example API".into(),
            operations: vec![OperationInfo {
                name: "get-item".into(),
                description: "One item by its id".into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {"id": {"type": "string", "minLength": 1}},
                    "required": ["id"],
                    "additionalProperties": false,
                    "examples": [{"id": "42"}],
                })
                .to_string(),
                output_schema: json!({
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "item": {}},
                    "required": ["id", "item"],
                })
                .to_string(),
            }],
            config: vec![ConfigKey {
                name: "base_url".into(),
                description: "Base URL of the API".into(),
                default_value: Some("https://api.example.com".into()),
                required: false,
            }],
            secrets: vec![SecretKey {
                name: "api_key".into(),
                description: "API key, sent as a bearer token".into(),
                required: true,
            }],
            // Every origin the connector may call; an install grants some or all of them.
            outbound_hosts: vec!["https://api.example.com".into()],
        }
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        match operation.as_str() {
            "get-item" => get_item(&input).map(|output| output.to_string()),
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

fn get_item(input: &str) -> Result<Value, ConnectorError> {
    let id = item_id(input)?;
    let base = gantry_sdk::config("base_url").unwrap_or_else(|| "https://api.example.com".into());
    let key = gantry_sdk::secrets::get("api_key")
        .ok_or_else(|| ConnectorError::Unauthorized("the secret `api_key` is not set".into()))?;
    let response = http::send(&http::Request {
        method: "GET".into(),
        url: item_url(&base, &id),
        headers: vec![
            ("accept".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {key}")),
        ],
        body: None,
    })
    .map_err(|e| ConnectorError::Upstream(format!("{e:?}")))?;
    match response.status {
        200..=299 => {
            let item: Value = serde_json::from_slice(&response.body)
                .map_err(|e| ConnectorError::Upstream(format!("the answer is not JSON: {e}")))?;
            Ok(json!({"id": id, "item": item}))
        }
        401 | 403 => Err(ConnectorError::Unauthorized(format!(
            "HTTP {}",
            response.status
        ))),
        404 => Err(ConnectorError::NotFound(format!("no item `{id}`"))),
        429 => Err(ConnectorError::RateLimited("HTTP 429".into())),
        status => Err(ConnectorError::Upstream(format!("HTTP {status}"))),
    }
}

/// The item's id from the input document (the host has checked it against the input schema).
fn item_id(input: &str) -> Result<String, ConnectorError> {
    let input: Value = serde_json::from_str(input)
        .map_err(|e| ConnectorError::InvalidInput(format!("input is not JSON: {e}")))?;
    match input.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(ConnectorError::InvalidInput(
            "`id` must be a non-empty string".into(),
        )),
    }
}

/// `{base}/items/{id}`, the id percent-encoded.
fn item_url(base: &str, id: &str) -> String {
    let mut url = format!("{}/items/", base.trim_end_matches('/'));
    for byte in id.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                url.push(byte as char)
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

gantry_sdk::export_connector!(Connector);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_read_and_encoded() {
        assert_eq!(item_id(r#"{"id": "a b"}"#).unwrap(), "a b");
        assert!(item_id(r#"{"id": ""}"#).is_err());
        assert!(item_id("not json").is_err());
        assert_eq!(
            item_url("https://api.example.com/", "a b/c"),
            "https://api.example.com/items/a%20b%2Fc"
        );
    }
}
