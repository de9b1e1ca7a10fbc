//! Hostile: `run` makes wasi:http header maps (`fields`), fills each with 12 KiB of headers
//! (within the host's limit of one `fields`) and never drops one. Every one lives in the host's memory, not the guest's. Proves the per-call cap on
//! host handles: the call fails with `resource-limit` instead of growing the host.

use gantry_sdk::wasi::http::types::Fields;
use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct HeaderBomb;

impl Guest for HeaderBomb {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "header-bomb",
            "1.0.0",
            "Fills host memory with header maps it never drops",
            vec![gantry_sdk::operation(
                "run",
                "Make full header maps until stopped",
            )],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        let value = vec![b'x'; 4 << 10];
        let mut kept = Vec::new();
        for _ in 0..1_000_000 {
            let fields = Fields::new();
            for n in 0..3 {
                let _ = fields.append(&format!("x-filler-{n}"), &value);
            }
            kept.push(fields);
        }
        Ok(format!(r#"{{"kept":{}}}"#, kept.len()))
    }
}

gantry_sdk::export_connector!(HeaderBomb);
