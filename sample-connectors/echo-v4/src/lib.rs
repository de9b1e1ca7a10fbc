//! `echo` 4.0.0: keeps `echo` and `delay`, drops `context`, and now *requires* an `api_key`
//! secret — the vendor's breaking update of the seed story: an update plan names the step that
//! loses its operation and the instances that lack the new credential.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct EchoV4;

impl Guest for EchoV4 {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "echo",
            "4.0.0",
            "Returns its input; needs an API key",
            vec![
                gantry_sdk::operation("echo", "Return the input document"),
                gantry_sdk::operation("delay", "Sleep `ms` milliseconds, then return the input"),
            ],
        );
        info.secrets.push(gantry_sdk::SecretKey {
            name: "api_key".into(),
            description: "The vendor's API key".into(),
            required: true,
        });
        info
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        match operation.as_str() {
            "echo" | "delay" => Ok(input),
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

gantry_sdk::export_connector!(EchoV4);
