//! Hostile: `run` never returns and never calls the host. Proves the CPU deadline.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct SpinForever;

impl Guest for SpinForever {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "spin-forever",
            "1.0.0",
            "Loops forever",
            vec![gantry_sdk::operation("run", "Spin without end")],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

gantry_sdk::export_connector!(SpinForever);
