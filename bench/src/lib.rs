//! Gantry's benchmark harness: the cases every bench measures, the baselines (a native Rust
//! function, and a hand-rolled host on the same wasmtime), the Gantry scenarios (in-process,
//! over HTTP, cold paths, hot swap, many loaded versions) and the latency report behind
//! `gantry bench`. The criterion benches in `benches/` use the same pieces.

pub mod cases;
pub mod market;
pub mod raw;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod stores;
