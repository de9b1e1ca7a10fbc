//! The local CLI: `gantry inspect` and `gantry invoke` against real components.

use crate::support::{json, sample_dir};
use std::process::{Command, Output};

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env_remove("GANTRY_LOG")
        .output()
        .expect("running gantry")
}

fn wasm(name: &str) -> String {
    sample_dir()
        .join(format!("{}.wasm", name.replace('-', "_")))
        .display()
        .to_string()
}

#[test]
fn inspect_shows_fit_and_operations() {
    let out = gantry(&["inspect", &wasm("json-transform")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fits     yes"), "{stdout}");
    assert!(
        stdout.contains("gantry:connector/connector@0.1.0"),
        "{stdout}"
    );
    assert!(stdout.contains("template"), "{stdout}");

    let out = gantry(&["inspect", &wasm("worldbank")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("outbound https://api.worldbank.org"),
        "{stdout}"
    );
    assert!(stdout.contains("config   base_url"), "{stdout}");

    let out = gantry(&["inspect", "--json", &wasm("echo")]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["fits"], true);
    assert_eq!(report["describe"]["name"], "echo");
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn inspect_explains_a_misfit() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let out = gantry(&["inspect", core.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("core WebAssembly module"), "{stderr}");

    let missing = gantry(&["inspect", "/no/such/file.wasm"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/file.wasm"));
}

#[test]
fn invoke_prints_output_or_the_typed_error() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let out = gantry(&[
        "invoke",
        &wasm("json-transform"),
        "template",
        r#"{"template":"Hello {{who}}","data":{"who":"Gantry"}}"#,
        "--cache-dir",
        cache,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout)),
        serde_json::json!({"text": "Hello Gantry"})
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("ok: json-transform@1.0.0"), "{stderr}");

    let out = gantry(&[
        "invoke",
        &wasm("spin-forever"),
        "run",
        "--cpu-ms",
        "100",
        "--json",
        "--cache-dir",
        cache,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["error"]["code"], "cpu-deadline");

    let out = gantry(&[
        "invoke",
        &wasm("json-transform"),
        "pick",
        "[1]",
        "--json",
        "--cache-dir",
        cache,
    ]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["error"]["code"], "connector-error");
    assert_eq!(report["error"]["detail"]["kind"], "invalid-input");
}
