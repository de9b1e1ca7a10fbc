//! The Extism peer comparison; the measuring is in `benches/extism.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the Gantry repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn cargo_build(
    manifest: &Path,
    profile: &str,
    target: &str,
    target_dir: &Path,
    package: Option<&str>,
) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--profile",
            profile,
            "--target",
            target,
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    if let Some(package) = package {
        command.args(["-p", package]);
    }
    let status = command.status().expect("running cargo");
    assert!(status.success(), "building {} failed", manifest.display());
}

/// The Extism plugin (echo and json-transform's pick), built from `peers/extism/plugin`.
pub fn extism_plugin() -> Vec<u8> {
    let root = repo_root();
    let target_dir = root.join("peers/extism/target/plugin");
    cargo_build(
        &root.join("peers/extism/Cargo.toml"),
        "plugin",
        "wasm32-unknown-unknown",
        &target_dir,
        Some("gantry-extism-plugin"),
    );
    std::fs::read(target_dir.join("wasm32-unknown-unknown/plugin/gantry_extism_plugin.wasm"))
        .expect("reading the built Extism plugin")
}

/// Gantry's sample connector `name`, built from `sample-connectors/`.
pub fn gantry_connector(name: &str) -> Vec<u8> {
    let root = repo_root();
    let target_dir = root.join("target/sample-connectors");
    cargo_build(
        &root.join("sample-connectors/Cargo.toml"),
        "release",
        "wasm32-wasip2",
        &target_dir,
        None,
    );
    std::fs::read(
        target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
    )
    .expect("reading a built sample connector")
}
