//! `rest-json`: a generic authenticated REST/JSON connector written with an ordinary async HTTP
//! client (`wstd`, over wasi:http) — to show that such libraries work under Gantry's policy.
//!
//! Configuration: `base_url` (required), `auth_header` (default `authorization`), `auth_scheme`
//! (default `Bearer`). Secret: `api_key`, sent as `<auth_header>: <auth_scheme> <api_key>`.
//! Operations: `get {path}` and `post {path, body}` → `{status, body}`, and `echo`. It declares
//! `*` (any origin): what it may reach is decided entirely by the install's grants. `rest-js`
//! and `rest-py` are the same connector in JavaScript and Python, held to the same tests.

use gantry_sdk::{ConfigKey, ConnectorError, ConnectorInfo, Guest, OperationInfo, SecretKey};
use serde_json::{Value, json};
use wstd::http::{Body, Client, Request};

struct RestJson;

fn invalid(m: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidInput(m.into())
}

async fn call(method: &str, input: &Value) -> Result<Value, ConnectorError> {
    let base = gantry_sdk::config("base_url")
        .ok_or_else(|| ConnectorError::Internal("config `base_url` is not set".into()))?;
    let path = input["path"]
        .as_str()
        .ok_or_else(|| invalid("`path` must be a string"))?;
    if !path.starts_with('/') {
        return Err(invalid("`path` must start with `/`"));
    }
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = Request::builder()
        .method(method)
        .uri(&url)
        .header("accept", "application/json");
    if let Some(key) = gantry_sdk::secrets::get("api_key") {
        let header = gantry_sdk::config("auth_header").unwrap_or_else(|| "authorization".into());
        let scheme = gantry_sdk::config("auth_scheme").unwrap_or_else(|| "Bearer".into());
        request = request.header(header, format!("{scheme} {key}"));
    }
    let body = match input.get("body") {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let request = request
        .body(body)
        .map_err(|e| invalid(format!("bad request: {e}")))?;
    let response = Client::new()
        .send(request)
        .await
        .map_err(|e| ConnectorError::Upstream(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let bytes = body
        .contents()
        .await
        .map_err(|e| ConnectorError::Upstream(format!("reading the response failed: {e}")))?;
    let parsed =
        serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)));
    match status {
        401 | 403 => Err(ConnectorError::Unauthorized(format!("HTTP {status}"))),
        // 2.0.0: a missing resource is an answer, not an error.
        404 if cfg!(feature = "v2") => Ok(json!({"status": status, "body": parsed})),
        404 => Err(ConnectorError::NotFound(format!("{path}: HTTP 404"))),
        429 => Err(ConnectorError::RateLimited("HTTP 429".into())),
        500..=599 => Err(ConnectorError::Upstream(format!("HTTP {status}"))),
        _ => Ok(json!({"status": status, "body": parsed})),
    }
}

/// An operation taking `{path[, body]}` and answering `{status, body}`.
fn request(name: &str, description: &str, with_body: bool) -> OperationInfo {
    let mut properties = json!({"path": {"type": "string", "pattern": "^/"}});
    if with_body {
        properties["body"] = json!({});
    }
    OperationInfo {
        name: name.into(),
        description: description.into(),
        input_schema: json!({"type": "object", "properties": properties, "required": ["path"]})
            .to_string(),
        output_schema: json!({
            "type": "object",
            "properties": {"status": {"type": "integer"}, "body": {}},
            "required": ["status", "body"],
        })
        .to_string(),
    }
}

impl Guest for RestJson {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "rest-json",
            if cfg!(feature = "v2") {
                "2.0.0"
            } else {
                "1.0.0"
            },
            "Call any JSON REST API with an API key",
            vec![
                gantry_sdk::operation("echo", "Answer the input document unchanged"),
                request("get", "GET `path` relative to `base_url`", false),
                request("post", "POST `body` as JSON to `path`", true),
            ],
        );
        info.config = vec![
            ConfigKey {
                name: "base_url".into(),
                description: "Base URL of the API".into(),
                default_value: None,
                required: true,
            },
            ConfigKey {
                name: "auth_header".into(),
                description: "Header carrying the key".into(),
                default_value: Some("authorization".into()),
                required: false,
            },
            ConfigKey {
                name: "auth_scheme".into(),
                description: "Prefix of the key in the header".into(),
                default_value: Some("Bearer".into()),
                required: false,
            },
        ];
        info.secrets = vec![SecretKey {
            name: "api_key".into(),
            description: "The API key".into(),
            required: false,
        }];
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        let input: Value =
            serde_json::from_str(&input).map_err(|e| invalid(format!("input is not JSON: {e}")))?;
        if !input.is_object() {
            return Err(invalid("input must be a JSON object"));
        }
        let method = match operation.as_str() {
            "echo" => return Ok(input.to_string()),
            "get" => "GET",
            "post" => "POST",
            other => return Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        };
        wstd::runtime::block_on(call(method, &input)).map(|v| v.to_string())
    }
}

gantry_sdk::export_connector!(RestJson);
