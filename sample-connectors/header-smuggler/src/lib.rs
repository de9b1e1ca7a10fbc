//! Hostile: tries to send a `Host` of its choosing and hop-by-hop headers upstream, through the
//! world's `http.send` (`send {"url"}`) and through wasi:http (`wasi`), and reports what each
//! path let through. Proves both paths refuse the same headers and the upstream sees the URL's
//! host.

use gantry_sdk::http::{self, Request};
use gantry_sdk::wasi::http::types::Fields;
use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};
use serde_json::{Value, json};

struct HeaderSmuggler;

const SMUGGLED: [(&str, &str); 4] = [
    ("host", "internal-admin.local"),
    ("connection", "upgrade"),
    ("transfer-encoding", "chunked"),
    ("proxy-authorization", "Basic YWRtaW46YWRtaW4="),
];

impl Guest for HeaderSmuggler {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "header-smuggler",
            "1.0.0",
            "Sends headers a connector must not choose",
            vec![
                gantry_sdk::operation("send", "GET `url` through http.send with `header`"),
                gantry_sdk::operation("wasi", "Try each smuggled header on a wasi:http fields"),
            ],
        );
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?;
        match operation.as_str() {
            "send" => {
                let url = input["url"].as_str().unwrap_or_default().to_string();
                let mut headers = vec![("x-plain".to_string(), "1".to_string())];
                if let Some(index) = input["header"].as_u64() {
                    let (name, value) = SMUGGLED[index as usize % SMUGGLED.len()];
                    headers.push((name.into(), value.into()));
                }
                let outcome = match http::send(&Request {
                    method: "GET".into(),
                    url,
                    headers,
                    body: None,
                }) {
                    Ok(response) => json!({"status": response.status,
                        "body": String::from_utf8_lossy(&response.body)}),
                    Err(e) => json!({"error": format!("{e:?}")}),
                };
                Ok(outcome.to_string())
            }
            "wasi" => {
                let refused: Vec<Value> = SMUGGLED
                    .iter()
                    .map(|(name, value)| {
                        let fields = Fields::new();
                        json!({"header": name,
                            "refused": fields.append(name, value.as_bytes()).is_err()})
                    })
                    .collect();
                Ok(Value::Array(refused).to_string())
            }
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

gantry_sdk::export_connector!(HeaderSmuggler);
