//! Hostile: `describe()` returns 16 MiB of operation descriptions and schemas. Proves that a
//! description is bounded before it is stored and sent to every organisation's marketplace.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct HugeDescribe;

impl Guest for HugeDescribe {
    fn describe() -> ConnectorInfo {
        let padding = "x".repeat(64 << 10);
        let operations = (0..256)
            .map(|n| {
                let mut op = gantry_sdk::operation(&format!("op-{n}"), &padding);
                op.input_schema = format!(r#"{{"description":"{padding}"}}"#);
                op
            })
            .collect();
        gantry_sdk::info(
            "huge-describe",
            "1.0.0",
            "Describes itself at length",
            operations,
        )
    }

    fn invoke(_operation: String, input: String) -> Result<String, ConnectorError> {
        Ok(input)
    }
}

gantry_sdk::export_connector!(HugeDescribe);
