//! `echo` 1.0.0: returns its input unchanged. `delay` sleeps for `input.ms` milliseconds first,
//! which lets tests hold a call in flight (hot swap) or overrun a wall-clock deadline.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct Echo;

impl Guest for Echo {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "echo",
            "1.0.0",
            "Returns its input unchanged",
            vec![
                gantry_sdk::operation("echo", "Return the input document"),
                gantry_sdk::operation("delay", "Sleep `ms` milliseconds, then return the input"),
            ],
        )
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
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

gantry_sdk::export_connector!(Echo);
