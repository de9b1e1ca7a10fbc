//! Hostile: `describe()` declares an input schema nested 126 levels deep — within serde_json's
//! limit on its own, past it once stored inside a version record. Proves that what a publisher
//! declares is bounded before it is stored: it is refused at publish, and no listing of any
//! organisation can be made unreadable.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct DeepSchema;

impl Guest for DeepSchema {
    fn describe() -> ConnectorInfo {
        let depth = 126;
        let mut op = gantry_sdk::operation("run", "Takes a deeply nested document");
        op.input_schema = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        gantry_sdk::info(
            "deep-schema",
            "1.0.0",
            "Declares a schema nested 126 deep",
            vec![op],
        )
    }

    fn invoke(_operation: String, input: String) -> Result<String, ConnectorError> {
        Ok(input)
    }
}

gantry_sdk::export_connector!(DeepSchema);
