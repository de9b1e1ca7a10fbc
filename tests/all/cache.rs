//! A restart with the same cache directory runs a connector without compiling it again, and a
//! damaged or forged cache entry is recompiled rather than trusted.

use crate::support::{connector, json, small_runtime};
use gantry_host::runtime::Origin;
use gantry_host::{CallContext, Runtime, RuntimeConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The cached artifact files under `root` (not the key, nor their seals).
fn artifacts(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "cwasm") {
                    out.push(file);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_from_the_cache_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let echo = connector("echo");
    {
        let first = small_runtime(Some(dir.path().to_path_buf()));
        let c = first.load(&echo).await.unwrap();
        assert_eq!(c.origin(), Origin::Compiled);
        assert_eq!(first.stats().compiled, 1);
    }

    let second = small_runtime(Some(dir.path().to_path_buf()));
    let c = second.load(&echo).await.unwrap();
    assert_eq!(c.origin(), Origin::Cache);
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().cache_hits, 1);
    let out = second
        .invoke(&c, "echo", r#"{"n":[1]}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, r#"{"n":[1]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_connector_loads_by_digest_without_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let echo = connector("echo");
    let digest = gantry_host::Digest::of(&echo);
    let first = small_runtime(Some(dir.path().to_path_buf()));
    // Nothing cached yet: the caller must bring the bytes.
    assert!(
        first
            .load_cached(&digest, echo.len())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(first.stats().compiled, 0);
    drop(first.load(&echo).await.unwrap());
    drop(first);

    // After a restart the artifact alone is enough: no bytes read, hashed or compiled.
    let second = small_runtime(Some(dir.path().to_path_buf()));
    let c = second
        .load_cached(&digest, echo.len())
        .await
        .unwrap()
        .expect("loaded from the cache");
    assert_eq!(
        (c.origin(), c.digest(), c.size()),
        (Origin::Cache, &digest, echo.len())
    );
    assert_eq!(second.stats().compiled, 0);
    let out = second
        .invoke(&c, "echo", r#"{"n":[1]}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, r#"{"n":[1]}"#);
    // The bytes, loaded now, are the same connector.
    assert!(std::sync::Arc::ptr_eq(
        &c,
        &second.load(&echo).await.unwrap()
    ));

    // A digest the cache does not hold, or one whose artifact is damaged, is not loaded.
    let other = gantry_host::Digest::of(b"not cached");
    assert!(second.load_cached(&other, 10).await.unwrap().is_none());
    drop(c);
    for path in artifacts(dir.path()) {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = small_runtime(Some(dir.path().to_path_buf()));
    assert!(
        third
            .load_cached(&digest, echo.len())
            .await
            .unwrap()
            .is_none()
    );
}

/// Once an artifact has settled (its change time 2 s old, `cache::SETTLED`) and been hashed
/// whole, it is sealed: restarts load it on the seal — neither hashed nor described again —
/// until the file changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_artifact_is_sealed_and_loads_on_its_seal_until_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let echo = connector("echo");
    let digest = gantry_host::Digest::of(&echo);
    let restart = || small_runtime(Some(dir.path().to_path_buf()));
    let sealed = || {
        std::fs::read_dir(artifacts(dir.path())[0].parent().unwrap())
            .unwrap()
            .any(|f| f.unwrap().path().extension().is_some_and(|e| e == "seal"))
    };
    let loads = |runtime: &Runtime| {
        let stats = runtime.stats();
        (stats.cache_hits, stats.sealed_hits)
    };

    // The compiling runtime seals its artifact once it has settled, in the background.
    let first = restart();
    let described = first.load(&echo).await.unwrap().description().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !sealed() {
        assert!(std::time::Instant::now() < deadline, "never sealed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(first);

    let second = restart();
    let c = second
        .load_cached(&digest, echo.len())
        .await
        .unwrap()
        .expect("loaded on its seal");
    assert_eq!(loads(&second), (1, 1));
    assert_eq!(c.description(), &described);
    let out = second
        .invoke(&c, "echo", r#"{"n":[2]}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, r#"{"n":[2]}"#);
    drop((c, second));

    // The same bytes in another file (a new inode and change time): the seal no longer
    // holds, so the file is hashed whole again — and, once settled, sealed anew.
    for path in artifacts(dir.path()) {
        let copy = path.with_extension("copy");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
    }
    let third = restart();
    assert!(
        third
            .load_cached(&digest, echo.len())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(loads(&third), (1, 0));
    drop(third);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let fourth = restart();
    assert!(
        fourth
            .load_cached(&digest, echo.len())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(loads(&fourth), (1, 0), "hashed whole, then sealed");
    drop(fourth);
    let fifth = restart();
    assert!(
        fifth
            .load_cached(&digest, echo.len())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(loads(&fifth), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let echo = connector("echo");
    small_runtime(Some(dir.path().to_path_buf()))
        .load(&echo)
        .await
        .unwrap();

    // Flip one byte of every cached artifact.
    for path in artifacts(dir.path()) {
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    let rt = small_runtime(Some(dir.path().to_path_buf()));
    let c = rt.load(&echo).await.unwrap();
    assert_eq!(c.origin(), Origin::Compiled);
    assert_eq!(rt.stats().compiled, 1);
    assert!(
        rt.invoke(&c, "echo", "{}", &CallContext::default())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_of_new_bytes_compile_them_once() {
    let rt = small_runtime(None);
    let bytes = connector("json-transform");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (rt, bytes) = (rt.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move { rt.load(&bytes).await.unwrap() }));
    }
    let mut loaded = Vec::new();
    for task in tasks {
        loaded.push(task.await.unwrap());
    }
    assert_eq!(rt.stats().compiled, 1);
    assert!(
        loaded.iter().all(|c| std::sync::Arc::ptr_eq(c, &loaded[0])),
        "one connector for all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_artifact_is_never_run() {
    // The review's attack: whoever can write the cache puts snoop's compiled code under echo's
    // name, with a header that checks out without any key (echo's digest, the sha256 of the
    // code). Loading echo must compile echo, not run snoop.
    let dir = tempfile::tempdir().unwrap();
    let (echo, snoop) = (connector("echo"), connector("snoop"));
    {
        let rt = small_runtime(Some(dir.path().to_path_buf()));
        rt.load(&echo).await.unwrap();
        rt.load(&snoop).await.unwrap();
    }
    let echo_digest = gantry_host::Digest::of(&echo);
    let snoop_digest = gantry_host::Digest::of(&snoop);
    let files = artifacts(dir.path());
    let find = |d: &gantry_host::Digest| {
        files
            .iter()
            .find(|p| p.to_string_lossy().contains(&d.hex()))
            .unwrap()
            .clone()
    };
    let (echo_file, snoop_file) = (find(&echo_digest), find(&snoop_digest));
    let snoop_bytes = std::fs::read(&snoop_file).unwrap();
    let code = &snoop_bytes[72..];
    use sha2::Digest as _;
    let mut forged = snoop_bytes[..8].to_vec();
    forged.extend_from_slice(echo_digest.as_bytes());
    forged.extend_from_slice(&sha2::Sha256::digest(code));
    forged.extend_from_slice(code);
    std::fs::write(&echo_file, &forged).unwrap();
    // And a plain copy of snoop's file under echo's name.
    let copy_dir = tempfile::tempdir().unwrap();
    std::fs::remove_dir(copy_dir.path()).unwrap();
    std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.path())
        .arg(copy_dir.path())
        .status()
        .unwrap();
    std::fs::copy(
        &snoop_file,
        copy_dir
            .path()
            .join(echo_file.strip_prefix(dir.path()).unwrap()),
    )
    .unwrap();

    for root in [dir.path(), copy_dir.path()] {
        let rt = small_runtime(Some(root.to_path_buf()));
        let c = rt.load(&echo).await.unwrap();
        assert_eq!(c.origin(), Origin::Compiled, "the forged file was refused");
        assert_eq!(c.description().name, "echo");
        let out = rt
            .invoke(&c, "echo", r#"{"who":"echo"}"#, &CallContext::default())
            .await
            .unwrap();
        assert_eq!(json(&out.output), serde_json::json!({"who": "echo"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    small_runtime(Some(root.clone()));
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700,
        "created private"
    );
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Runtime::new(RuntimeConfig {
        cache_dir: Some(root.clone()),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .expect_err("refused");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(root.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Runtime::new(RuntimeConfig {
        cache_dir: Some(root),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .expect_err("refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_are_capped_and_an_abandoned_one_keeps_its_slot() {
    // Cranelift cannot be stopped: a compile past its timeout runs on. It keeps its slot until
    // it ends, so abandoned compiles never pile up beyond the cap.
    let rt = Runtime::new(RuntimeConfig {
        max_compiles: 1,
        compile_timeout: std::time::Duration::from_millis(1),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let err = rt.load(&connector("json-transform")).await.unwrap_err();
    assert_eq!(err.code(), "compile-timeout", "{err}");
    assert_eq!(
        rt.stats().compiling,
        1,
        "the abandoned compile holds its slot"
    );
    let err = rt.load(&connector("echo")).await.unwrap_err();
    assert_eq!(err.code(), "compiler-busy", "{err}");
    let started = std::time::Instant::now();
    while rt.stats().compiling > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the abandoned compile never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rt.stats().compiled, 0, "nothing abandoned was kept");
}
