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
    assert_eq!(
        report["error"]["code"], "invalid-input",
        "the input schema refuses it"
    );
    let out = gantry(&[
        "invoke",
        &wasm("json-transform"),
        "template",
        r#"{"template": "{{open", "data": {}}"#,
        "--json",
        "--cache-dir",
        cache,
    ]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["error"]["code"], "connector-error");
    assert_eq!(report["error"]["detail"]["kind"], "invalid-input");
}

/// Run `gantry` against a live server, feeding `stdin`.
fn remote(server: &str, token: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--server", server, "--token", token])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_whole_story_against_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    let gantry = crate::support::Server::start(
        dir.path(),
        crate::support::runtime().clone(),
        gantry_host::ApiConfig::default(),
    )
    .await;
    let token = gantry.token("acme", gantry_host::model::Role::Admin);
    let server = format!("http://{}", gantry.addr);

    let run = |args: Vec<String>, stdin: String| {
        let (server, token) = (server.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out, err) = remote(&server, &token, &args, &stdin);
            assert!(ok, "gantry {args:?} failed:\n{out}\n{err}");
            out
        })
    };
    let a = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(
        a(&["publish", &wasm("echo"), "--public", "--tags", "demo"]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(
        out.starts_with("created acme/echo@1.0.0 revision 1 sha256:"),
        "{out}"
    );
    let out = run(a(&["install", "acme/echo@1.0.0"]), String::new())
        .await
        .unwrap();
    assert_eq!(out.trim(), "install 1 of acme/echo@1.0.0");
    let out = run(
        a(&[
            "instance",
            "create",
            "--install",
            "1",
            "--name",
            "main",
            "--secrets",
            "-",
        ]),
        r#"{"token":"abc"}"#.into(),
    )
    .await
    .unwrap();
    assert!(
        out.contains("instance 1 `main`") && !out.contains("abc\""),
        "{out}"
    );

    let flow_file = dir.path().join("flow.json");
    std::fs::write(
        &flow_file,
        r#"{"name":"ctx","steps":[{"name":"c","instance":1,"operation":"context"}]}"#,
    )
    .unwrap();
    let out = run(
        a(&["flow", "create", flow_file.to_str().unwrap()]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(
        out.contains("flow 1 `ctx`") && out.contains("PINNED DIGEST"),
        "{out}"
    );
    let out = run(a(&["flow", "run", "1"]), String::new()).await.unwrap();
    assert!(
        out.contains("run 1 succeeded") && out.contains("\"token_length\":3"),
        "{out}"
    );

    run(a(&["publish", &wasm("echo-v2"), "--public"]), String::new())
        .await
        .unwrap();
    let out = run(a(&["update", "1", "2.0.0", "--alongside"]), String::new())
        .await
        .unwrap();
    assert!(out.contains("install 2 now runs echo@2.0.0"), "{out}");
    run(
        a(&[
            "instance",
            "create",
            "--install",
            "2",
            "--name",
            "v2",
            "--secrets",
            "-",
        ]),
        r#"{"token":"abcdef"}"#.into(),
    )
    .await
    .unwrap();
    let out = run(
        a(&["flow", "rebind", "1", "c", "--instance", "2"]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(out.contains("now pinned to sha256:"), "{out}");
    let out = run(a(&["flow", "run", "1", "--json"]), String::new())
        .await
        .unwrap();
    assert_eq!(
        json(&out)["output"],
        serde_json::json!({"version": "2.0.0", "echo": {"greeting": "hello", "token_length": 6}})
    );

    let out = run(a(&["state", "echo@1.0.0", "deprecated"]), String::new())
        .await
        .unwrap();
    assert_eq!(out.trim(), "echo@1.0.0 is deprecated");
    let out = run(a(&["search", "echo"]), String::new()).await.unwrap();
    assert!(
        out.contains("acme/echo") && out.contains("1.0.0 (deprecated)"),
        "{out}"
    );
    let out = run(a(&["versions", "acme/echo", "--json"]), String::new())
        .await
        .unwrap();
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
    // Printed exactly as the connector returned it: nothing rounded, nothing rewritten.
    let exact = r#"{"x": 1, "id": 123456789012345678901234567890, "s": "\ud800"}"#;
    let out = run(
        a(&["instance", "invoke", "1", "echo", exact]),
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(out.trim(), exact);
    let out = run(a(&["audit"]), String::new()).await.unwrap();
    assert!(
        out.contains("rebind-step") && !out.contains("abcdef"),
        "{out}"
    );

    // Every route has a verb.
    let out = run(a(&["customise", "2", "greeting=hi"]), String::new())
        .await
        .unwrap();
    assert!(out.contains("customised greeting = hi"), "{out}");
    let out = run(
        a(&["outbound", "2", "https://api.example.com"]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(out.contains("may reach https://api.example.com"), "{out}");
    let out = run(a(&["installs", "2"]), String::new()).await.unwrap();
    assert!(out.contains("install 2 of acme/echo@2.0.0"), "{out}");
    let out = run(a(&["instance", "list"]), String::new()).await.unwrap();
    assert!(out.contains("main") && out.contains("v2"), "{out}");
    let out = run(a(&["instance", "show", "2", "--json"]), String::new())
        .await
        .unwrap();
    assert_eq!(json(&out)["secret_keys"], serde_json::json!(["token"]));
    assert!(!out.contains("abcdef"), "a secret is never shown: {out}");
    let out = run(a(&["flow", "list"]), String::new()).await.unwrap();
    assert!(out.contains("ctx"), "{out}");
    let out = run(a(&["flow", "show", "1"]), String::new()).await.unwrap();
    assert!(
        out.contains("PINNED TO") && out.contains("sha256:"),
        "{out}"
    );
    let out = run(a(&["flow", "runs", "1", "--json"]), String::new())
        .await
        .unwrap();
    assert_eq!(json(&out).as_array().unwrap().len(), 2, "{out}");
    let out = run(a(&["rebind", "1", "--instance", "1"]), String::new())
        .await
        .unwrap();
    assert!(!out.trim().is_empty(), "{out}");
    let out = run(a(&["metrics"]), String::new()).await.unwrap();
    assert!(out.contains("gantry_calls_total"), "{out}");
    // A publish shows its stages on stderr as the server reports them; a refused one fails
    // with the server's error.
    let (watched, garbage) = (server.clone(), dir.path().join("garbage.wasm"));
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    let (token2, echo_v3) = (token.clone(), wasm("echo-v3"));
    let ((ok, out, err), refused) = tokio::task::spawn_blocking(move || {
        (
            remote(&watched, &token2, &["publish", &echo_v3], ""),
            remote(
                &watched,
                &token2,
                &["publish", garbage.to_str().unwrap()],
                "",
            ),
        )
    })
    .await
    .unwrap();
    assert!(
        ok && out.starts_with("created acme/echo@3.0.0"),
        "{out}{err}"
    );
    let stages: Vec<&str> = err.lines().collect();
    assert!(
        stages.len() == 3
            && stages[0].contains(": uploaded ")
            && stages[1].contains(": compiling (")
            && stages[2].contains(": storing ("),
        "{err}"
    );
    assert!(
        !refused.0 && refused.2.contains("422 Unprocessable Entity ["),
        "{refused:?}"
    );
    let out = run(a(&["update", "2", "3.0.0", "--plan"]), String::new())
        .await
        .unwrap();
    assert!(
        out.contains("acme/echo@2.0.0 (revision 1) -> acme/echo@3.0.0 (revision 1)")
            && out.contains("risks: customisations-lost, breaking-changes")
            && out
                .contains("step c of flow 1 (context on instance 2) moves: its operation is gone")
            && out.contains("breaking: operation context: removed")
            && out
                .contains("world of acme/echo@3.0.0:\n    export gantry:connector/connector@0.1.0")
            && out.contains("\n  - import wasi:config/store@0.2.0-rc.1\n"),
        "{out}"
    );
    let out = run(a(&["usage", "install", "2"]), String::new())
        .await
        .unwrap();
    assert!(
        out.contains("install 2: acme/echo@2.0.0 (revision 1)")
            && out.contains(
                "flow 1 step c (context on instance 2) pinned to acme/echo@2.0.0 revision 1"
            ),
        "{out}"
    );
    let out = run(a(&["usage", "version", "acme/echo@3.0.0"]), String::new())
        .await
        .unwrap();
    assert_eq!(out.trim(), "nothing uses it");
    let acknowledged = [
        "update",
        "2",
        "3.0.0",
        "--overwrite",
        "--acknowledge",
        "customisations-lost,breaking-changes",
    ];
    let (ok, _, err) = remote(&server, &token, &acknowledged, "");
    assert!(
        !ok && err.contains("[conflict]") && err.contains("context"),
        "no acknowledgement lifts a step losing its operation: {err}"
    );
    let (ok, _, err) = remote(
        &server,
        &token,
        &[
            "update",
            "2",
            "3.0.0",
            "--overwrite",
            "--acknowledge",
            "yolo",
        ],
        "",
    );
    assert!(!ok && err.contains("is not a risk"), "{err}");
    let out = run(a(&["delete", "echo@3.0.0"]), String::new())
        .await
        .unwrap();
    assert_eq!(out.trim(), "deleted echo@3.0.0");

    // Errors are the server's typed errors, with a non-zero exit.
    let (ok, _, err) = remote(&server, &token, &["install", "acme/echo@1.0.0"], "");
    assert!(!ok && err.contains("[deprecated]"), "{err}");
    let (ok, _, err) = remote(&server, "gty_bad", &["search"], "");
    assert!(!ok && err.contains("[unauthorized]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_serve_starts_from_a_config_file_and_bootstraps_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gantry.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nbind = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let served = crate::support::Served::start(&["--config", config.to_str().unwrap()]);
    let (addr, seen) = (served.url.clone(), &served.before);
    assert!(seen.iter().any(|l| l.contains("admin token")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("platform token")),
        "{seen:?}"
    );
    #[cfg(unix)]
    for file in ["platform.token", "admin.token"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(
        seen.iter().any(|l| l.contains("demo: published")),
        "{seen:?}"
    );
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let client = reqwest::Client::new();
    let health = client.get(format!("{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let run = client
        .post(format!("{addr}/v1/flows/1/runs"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(&run.text().await.unwrap())["output"],
        serde_json::json!({"text": "Hello Ada!"})
    );
    drop(served);
}

#[test]
fn bench_reports_every_path_of_a_users_connector() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"order": 42}"#).unwrap();
    let out = gantry(&[
        "bench",
        "--connector",
        &wasm("echo"),
        "--operation",
        "echo",
        "--input",
        input.to_str().unwrap(),
        "--duration-ms",
        "50",
        "--callers",
        "2",
        "--loaded",
        "1,3",
        "--cold-runs",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("echo.echo — echo.echo on 13 B of input"),
        "{stdout}"
    );
    for path in [
        "wasmtime, live instance",
        "wasmtime, fresh instance",
        "gantry in-process",
        "gantry instance (registry)",
        "gantry over HTTP",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(path))
            .unwrap_or_else(|| panic!("no row for {path}:\n{stdout}"));
        // p50 … then calls/s, ratios and, last, the failed calls: none.
        assert!(line.contains(" µs") || line.contains(" ms"), "{line}");
        assert!(line.ends_with(" 0"), "failed calls in {line}");
    }
    assert!(
        !stdout.contains("native fn"),
        "a user's connector has no native baseline"
    );
    assert!(stdout.contains("publish → first call"), "{stdout}");
    assert!(stdout.contains("restart → first call"), "{stdout}");
    assert!(stdout.contains("swapping"), "{stdout}");
    assert!(stdout.contains("3 loaded"), "{stdout}");
    assert!(
        stdout.contains("recording: flow runs of one step")
            && stdout.contains("recorded ÷ unrecorded median"),
        "{stdout}"
    );
    let swap = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("swapping"))
        .unwrap();
    assert!(swap.ends_with(" 0 failed"), "{swap}");
    // What the invoke route adds over HTTP, against the registry call back to back and paced.
    let http = stdout
        .lines()
        .find(|l| l.starts_with("over HTTP, one keep-alive connection"))
        .unwrap_or_else(|| panic!("no HTTP overhead:\n{stdout}"));
    assert!(http.ends_with("; 0 failed"), "{http}");
    assert!(
        http.contains("/healthz p50 ") && http.contains("invoke p50 "),
        "{http}"
    );
    for comparator in ["back to back", "paced"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("the registry call {comparator}")) && l.contains("×")),
            "no ratio to the call {comparator}:\n{stdout}"
        );
    }
}

#[test]
fn bench_refuses_bad_arguments_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("input.txt");
    std::fs::write(&not_json, "not json").unwrap();
    let echo = wasm("echo");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "bench",
                "--connector",
                &echo,
                "--operation",
                "echo",
                "--input",
                not_json.to_str().unwrap(),
            ],
            "the input is not JSON",
        ),
        (&["bench", "--operation", "echo"], "--connector"),
        (&["bench", "--callers", "0"], "--callers must be 1 to 1024"),
    ];
    for (args, reason) in cases {
        let out = gantry(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let input = dir.path().join("input.json");
    std::fs::write(&input, "{}").unwrap();
    let out = gantry(&[
        "bench",
        "--connector",
        &echo,
        "--operation",
        "nope",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("echo.nope: the call fails"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn invoke_prints_the_output_exactly_as_written() {
    // A number beyond f64 and a lone surrogate escape: valid JSON no `Value` keeps.
    let input = r#"{"n": 123456789012345678901234567890, "s": "\ud800 half"}"#;
    let out = gantry(&["invoke", &wasm("echo"), "echo", input, "--no-cache"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{input}\n"));
    let out = gantry(&[
        "invoke",
        &wasm("echo"),
        "echo",
        input,
        "--no-cache",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(r#"{{"output":{input},"digest":"sha256:"#)),
        "{stdout}"
    );
}
