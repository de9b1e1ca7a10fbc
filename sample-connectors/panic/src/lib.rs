//! Hostile: `run` panics. Proves a guest panic is a typed trap carrying the panic message.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct Panic;

impl Guest for Panic {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "panic",
            "1.0.0",
            "Panics",
            vec![gantry_sdk::operation("run", "Panic")],
        )
    }

    fn invoke(_operation: String, input: String) -> Result<String, ConnectorError> {
        panic!("connector gave up on input {input}");
    }
}

gantry_sdk::export_connector!(Panic);
