//! Hostile: `run` returns a 16 MiB JSON string. Proves the output size cap.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct HugeOutput;

impl Guest for HugeOutput {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "huge-output",
            "1.0.0",
            "Returns far more output than allowed",
            vec![gantry_sdk::operation("run", "Return 16 MiB")],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        let mut out = String::with_capacity(16 << 20);
        out.push('"');
        out.extend(std::iter::repeat_n('x', (16 << 20) - 2));
        out.push('"');
        Ok(out)
    }
}

gantry_sdk::export_connector!(HugeOutput);
