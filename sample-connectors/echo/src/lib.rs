//! `echo` 1.0.0: returns its input unchanged. `delay` sleeps for `input.ms` milliseconds first,
//! which lets tests hold a call in flight (hot swap) or overrun a wall-clock deadline.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct Echo;

impl Guest for Echo {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "echo",
            "1.0.0",
            "Returns its input unchanged",
            vec![
                gantry_sdk::operation("echo", "Return the input document"),
                gantry_sdk::operation("delay", "Sleep `ms` milliseconds, then return the input"),
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
        match operation.as_str() {
            "echo" => Ok(input),
            "delay" => {
                let doc: serde_json::Value = serde_json::from_str(&input)
                    .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?;
                let ms = doc["ms"].as_u64().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(input)
            }
            "context" => Ok(context()),
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

/// What the call's configuration and credentials look like from inside (never the secret).
fn context() -> String {
    serde_json::json!({
        "greeting": gantry_sdk::config("greeting"),
        "token_length": gantry_sdk::secrets::get("token").map(|t| t.len()),
    })
    .to_string()
}

gantry_sdk::export_connector!(Echo);
