//! A restart with the same cache directory runs a connector without compiling it again, and a
//! damaged cache entry is recompiled rather than trusted.

use crate::support::{connector, small_runtime};
use gantry_host::{CallContext, Origin};

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
        .invoke(&c, "echo", "[1]", &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, "[1]");
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
    for engine_dir in std::fs::read_dir(dir.path()).unwrap() {
        for file in std::fs::read_dir(engine_dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
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
