//! Hostile: `run` allocates 1 MiB blocks, touching each, until it is stopped. Proves the memory cap.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};

struct AllocBomb;

impl Guest for AllocBomb {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "alloc-bomb",
            "1.0.0",
            "Allocates memory without bound",
            vec![gantry_sdk::operation("run", "Allocate until stopped")],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

gantry_sdk::export_connector!(AllocBomb);
