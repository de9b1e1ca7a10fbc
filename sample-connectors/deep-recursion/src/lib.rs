//! Hostile: `run` recurses without a base case the optimiser can see. Proves that stack exhaustion
//! is a trap, not a host crash.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct DeepRecursion;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    descend(depth + 1).wrapping_add(std::hint::black_box(depth))
}

impl Guest for DeepRecursion {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "deep-recursion",
            "1.0.0",
            "Recurses until the stack runs out",
            vec![gantry_sdk::operation("run", "Recurse without end")],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        Ok(descend(0).to_string())
    }
}

gantry_sdk::export_connector!(DeepRecursion);
