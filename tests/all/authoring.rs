//! The authors' kit from a fresh project: `gantry new NAME --lang rust|js|python`, then
//! `gantry build` and `gantry check` in it pass, and so do the template's own unit tests;
//! `gantry check` fails a component that breaks the rules, with exit code 1.

use crate::support::{json, root, sample_dir};
use std::path::Path;
use std::process::{Command, Output};

fn gantry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        // The Rust template's dependencies are compiled once for every run of these tests.
        .env(
            "CARGO_TARGET_DIR",
            root().join("target").join("template-builds"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("running gantry")
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gantry new demo --lang LANG`, build, check; then `test` runs the template's unit tests.
fn new_build_check(lang: &str, test: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    ok(
        "gantry new",
        &gantry(dir.path(), &["new", "demo", "--lang", lang]),
    );
    let project = dir.path().join("demo");
    // It will not write over a project.
    let again = gantry(dir.path(), &["new", "demo", "--lang", lang]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    ok("gantry build", &gantry(&project, &["build"]));
    let check = gantry(&project, &["check", "demo.wasm", "--json"]);
    ok("gantry check", &check);
    let report = json(&String::from_utf8_lossy(&check.stdout));
    assert_eq!(report["passed"], true, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "loads and fits the world",
            "never-granted imports",
            "describe() is valid",
            "`get-item` answers",
            "unknown operation: not-found",
            "malformed input: invalid-input",
        ],
        "{report:#}"
    );
    // The example input reaches the guest, which is granted no network here.
    let answer = report["checks"][3]["detail"].as_str().unwrap();
    assert!(
        answer.contains(r#"{"id":"42"}"#) && answer.contains("upstream"),
        "{answer}"
    );
    assert!(report["compile_ms"].as_f64().unwrap() > 0.0);
    assert!(report["load_ms"].as_f64().unwrap() > 0.0);

    let (program, args) = test.split_first().unwrap();
    let out = Command::new(program)
        .args(args)
        .current_dir(&project)
        .env(
            "CARGO_TARGET_DIR",
            root().join("target").join("template-tests"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    ok(&format!("the {lang} template's tests"), &out);
}

#[test]
fn a_new_rust_project_builds_and_passes_its_checks() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    new_build_check("rust", &[&cargo, "test", "--quiet"]);
}

#[test]
fn a_new_javascript_project_builds_and_passes_its_checks() {
    new_build_check("js", &["npm", "test"]);
}

#[test]
fn a_new_python_project_builds_and_passes_its_checks() {
    new_build_check("python", &["python3", "-m", "unittest"]);
}

#[test]
fn gantry_new_refuses_a_bad_name_and_build_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["Demo", "9lives", "a_b", ""] {
        let out = gantry(dir.path(), &["new", name]);
        assert!(!out.status.success(), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid connector name"));
    }
    let out = gantry(dir.path(), &["build"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no connector project"));
}

#[test]
fn gantry_check_fails_components_that_break_the_rules() {
    let dir = sample_dir();
    let check = |sample: &str| {
        let file = dir.join(format!("{}.wasm", sample.replace('-', "_")));
        let out = gantry(dir, &["check", file.to_str().unwrap(), "--json"]);
        assert_eq!(
            out.status.code(),
            Some(if sample == "echo" { 0 } else { 1 })
        );
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let failed = |report: &serde_json::Value| -> Vec<String> {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| format!("{}: {}", c["check"], c["detail"]))
            .collect()
    };
    // A well-behaved connector passes.
    let report = check("echo");
    assert_eq!(report["passed"], true, "{report:#}");
    // One that spins forever fails its operation on the deadline.
    let report = check("spin-forever");
    let fails = failed(&report);
    assert!(
        fails
            .iter()
            .any(|f| f.contains("timeout") || f.contains("cpu-deadline")),
        "{fails:?}"
    );
    // One that traps fails too.
    let report = check("panic");
    assert!(
        failed(&report).iter().any(|f| f.contains("trap")),
        "{report:#}"
    );
    // One whose describe() is refused at load fails the first check and stops there.
    let report = check("deep-schema");
    let fails = failed(&report);
    assert_eq!(fails.len(), 1, "{fails:?}");
    assert!(fails[0].contains("loads and fits the world"), "{fails:?}");
}
