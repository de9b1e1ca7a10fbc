//! `echo` 3.0.0: keeps only the `echo` operation (drops `delay` and `context`), to prove that an
//! overwrite update is refused while flows still use an operation the new version lacks.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct EchoV3;

impl Guest for EchoV3 {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "echo",
            "3.0.0",
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

gantry_sdk::export_connector!(EchoV3);
