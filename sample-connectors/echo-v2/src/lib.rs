//! `echo` 2.0.0: the same interface as `echo` 1.0.0 with visibly different output — the input
//! wrapped as `{"version": "2.0.0", "echo": <input>}` — so hot-swap tests can tell which ran.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct EchoV2;

impl Guest for EchoV2 {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "echo",
            "2.0.0",
            "Returns its input wrapped with the connector version",
            vec![
                gantry_sdk::operation("echo", "Return the input document, wrapped"),
                gantry_sdk::operation(
                    "delay",
                    "Sleep `ms` milliseconds, then return the input, wrapped",
                ),
                gantry_sdk::operation(
                    "context",
                    "Report the `greeting` config value and the length of the `token` secret",
                ),
            ],
        );
        info.config.push(gantry_sdk::ConfigKey {
            name: "greeting".into(),
            description: "How to greet".into(),
            default_value: Some("hello".into()),
            required: false,
        });
        info.secrets.push(gantry_sdk::SecretKey {
            name: "token".into(),
            description: "An API token (only its length is ever reported)".into(),
            required: false,
        });
        info
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        let doc: serde_json::Value = serde_json::from_str(&input)
            .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?;
        match operation.as_str() {
            "echo" => {}
            "context" => {
                let seen = serde_json::json!({
                    "greeting": gantry_sdk::config("greeting"),
                    "token_length": gantry_sdk::secrets::get("token").map(|t| t.len()),
                });
                return Ok(serde_json::json!({ "version": "2.0.0", "echo": seen }).to_string());
            }
            "delay" => {
                let ms = doc["ms"].as_u64().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            other => return Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
        Ok(serde_json::json!({ "version": "2.0.0", "echo": doc }).to_string())
    }
}

gantry_sdk::export_connector!(EchoV2);
