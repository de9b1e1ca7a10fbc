//! Bad bytes are refused at load with a message that says why, and nothing is cached.

use crate::support::{connector, files_under, small_runtime};
use gantry_host::runtime::LoadError;

/// A component that exports a plain function instead of the connector interface.
const OTHER_WORLD: &str = r#"
(component
  (core module $m (func (export "f") (result i32) i32.const 42))
  (core instance $i (instantiate $m))
  (func (export "hello") (result u32) (canon lift (core func $i "f")))
)"#;

/// A component that imports an interface Gantry does not provide.
const UNKNOWN_IMPORT: &str = r#"
(component
  (import "acme:evil/backdoor@1.0.0" (instance (export "open" (func))))
)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_are_refused_with_a_reason_and_nothing_is_cached() {
    let cache = tempfile::tempdir().unwrap();
    let rt = small_runtime(Some(cache.path().to_path_buf()));
    let echo = connector("echo");

    let err = rt.load(b"definitely not wasm").await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm(_)), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");

    let err = rt.load(&echo[..echo.len() / 2]).await.unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
    assert_eq!(err.code(), "invalid-component");

    let core = wat::parse_str("(module (func (export \"run\")))").unwrap();
    let err = rt.load(&core).await.unwrap_err();
    assert_eq!(err, LoadError::CoreModule);
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");

    let other = wat::parse_str(OTHER_WORLD).unwrap();
    let err = rt.load(&other).await.unwrap_err();
    assert!(matches!(err, LoadError::World(_)), "{err}");
    assert!(
        err.to_string().contains("gantry:connector/connector"),
        "names the missing export: {err}"
    );

    let unknown = wat::parse_str(UNKNOWN_IMPORT).unwrap();
    let err = rt.load(&unknown).await.unwrap_err();
    assert!(matches!(err, LoadError::World(_)), "{err}");
    assert!(
        err.to_string().contains("acme:evil/backdoor"),
        "names the unexpected import: {err}"
    );

    assert_eq!(rt.stats().compiled, 0);
    assert!(rt.loaded().is_empty());
    let cached: Vec<_> = files_under(cache.path())
        .into_iter()
        .filter(|f| !f.ends_with("key"))
        .collect();
    assert!(cached.is_empty(), "nothing cached: {cached:?}");

    // The same runtime still loads a good component, and that one is cached.
    rt.load(&echo).await.unwrap();
    assert_eq!(
        files_under(cache.path()).len(),
        2,
        "the artifact and the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_imports_exports_and_fit() {
    let rt = small_runtime(None);
    let report = rt.inspect(&connector("json-transform")).await.unwrap();
    assert_eq!(report.exports, ["gantry:connector/connector@0.1.0"]);
    assert!(
        report.imports.iter().any(|i| i.starts_with("wasi:cli/")),
        "{:?}",
        report.imports
    );
    assert_eq!(report.fits.unwrap().name, "json-transform");

    let report = rt
        .inspect(&wat::parse_str(UNKNOWN_IMPORT).unwrap())
        .await
        .unwrap();
    assert_eq!(report.imports, ["acme:evil/backdoor@1.0.0"]);
    assert!(
        report
            .fits
            .unwrap_err()
            .to_string()
            .contains("acme:evil/backdoor")
    );
}
