//! `echo` 1.1.0: drops `delay` and `context` as 3.0.0 does, but with only a minor bump — the
//! breaking change the publish gate refuses.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct EchoSlim;

impl Guest for EchoSlim {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "echo",
            "1.1.0",
            "Returns its input; nothing else",
            vec![gantry_sdk::operation("echo", "Return the input document")],
        )
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        match operation.as_str() {
            "echo" => Ok(input),
            other => Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        }
    }
}

gantry_sdk::export_connector!(EchoSlim);
