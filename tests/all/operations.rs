//! Gantry run as a platform team runs it, over real processes: `gantry serve` with TLS, the
//! CLI against it over HTTPS, and SIGTERM draining the calls in flight.

use crate::support::{Served, connector, json, sample_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1: the CA's PEM,
/// the certificate chain's and the key's, as files in `dir`.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Gantry test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// Run the CLI against `url` with `token`; its stdout, or a panic with what it said.
fn cli(url: &str, ca: &Path, token: &str, args: &[&str]) -> String {
    let (ok, out, err) = try_cli(url, Some(ca), token, args);
    assert!(ok, "gantry {args:?} failed:\n{out}\n{err}");
    out
}

fn try_cli(url: &str, ca: Option<&Path>, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command.args(["--server", url, "--token", token]);
    if let Some(ca) = ca {
        command.arg("--ca-file").arg(ca);
    }
    let out = command
        .args(args)
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_CA_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_vendor_and_its_customer_over_https_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let data = dir.path().join("data");
    let served = Served::start(&[
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-demo",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        served.url.starts_with("https://127.0.0.1:"),
        "{}",
        served.url
    );
    let url = served.url.as_str();
    let platform = std::fs::read_to_string(data.join("platform.token")).unwrap();
    let platform = platform.trim();
    assert!(
        !data.join("admin.token").exists(),
        "--no-demo: no organisation"
    );

    // Without the private CA the CLI does not trust the server.
    let (ok, _, err) = try_cli(url, None, platform, &["org", "list"]);
    assert!(!ok && err.contains("cannot reach"), "{err}");

    let token_of = |out: &str| json(out)["admin"]["token"].as_str().unwrap().to_string();
    let vendor = token_of(&cli(
        url,
        &ca,
        platform,
        &["org", "create", "vendor", "--json"],
    ));
    let shop = token_of(&cli(
        url,
        &ca,
        platform,
        &["org", "create", "shop", "--json"],
    ));
    let orgs = cli(url, &ca, platform, &["org", "list"]);
    assert!(orgs.contains("vendor") && orgs.contains("shop"), "{orgs}");

    let new_token = |admin: &str, role: &str, label: &str| {
        let out = cli(
            url,
            &ca,
            admin,
            &[
                "token",
                "create",
                "--role",
                role,
                "--label",
                label,
                "--expires",
                "30d",
                "--json",
            ],
        );
        json(&out)["token"].as_str().unwrap().to_string()
    };
    let publisher = new_token(&vendor, "publisher", "ci");
    let wasm = |name: &str| {
        sample_dir()
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    };
    cli(
        url,
        &ca,
        &publisher,
        &["publish", &wasm("echo"), "--public"],
    );

    let install = cli(url, &ca, &shop, &["install", "vendor/echo@1.0.0", "--json"]);
    let install = json(&install)["id"].as_i64().unwrap().to_string();
    let instance = cli(
        url,
        &ca,
        &shop,
        &[
            "instance",
            "create",
            "--install",
            &install,
            "--name",
            "main",
            "--json",
        ],
    );
    let instance = json(&instance)["id"].as_i64().unwrap();
    let flow_file = dir.path().join("flow.json");
    std::fs::write(
        &flow_file,
        serde_json::json!({"name": "relay", "steps": [{"name": "echo", "instance": instance, "operation": "echo", "input": "${input}"}]}).to_string(),
    )
    .unwrap();
    let flow = cli(
        url,
        &ca,
        &shop,
        &["flow", "create", flow_file.to_str().unwrap(), "--json"],
    );
    let flow = json(&flow)["id"].as_i64().unwrap().to_string();
    let run = cli(
        url,
        &ca,
        &shop,
        &["flow", "run", &flow, r#"{"order":7}"#, "--json"],
    );
    assert_eq!(
        json(&run)["output"],
        serde_json::json!({"order": 7}),
        "{run}"
    );

    // The vendor publishes 2.0.0; the shop sees it and overwrites.
    cli(
        url,
        &ca,
        &publisher,
        &["publish", &wasm("echo_v2"), "--public"],
    );
    let installs = cli(url, &ca, &shop, &["installs"]);
    assert!(installs.contains("update available: 2.0.0"), "{installs}");
    cli(
        url,
        &ca,
        &shop,
        &["update", &install, "2.0.0", "--overwrite"],
    );
    let installs = cli(url, &ca, &shop, &["installs", "--json"]);
    assert_eq!(json(&installs)[0]["version"], "2.0.0", "{installs}");
    let run = cli(
        url,
        &ca,
        &shop,
        &["flow", "run", &flow, r#"{"order":8}"#, "--json"],
    );
    assert_eq!(json(&run)["status"], "succeeded", "{run}");

    // The shop revokes a token; its next request is refused.
    let viewer = new_token(&shop, "viewer", "dashboard");
    cli(url, &ca, &viewer, &["installs"]);
    let tokens = cli(url, &ca, &shop, &["token", "list", "--json"]);
    let id = json(&tokens)
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "dashboard")
        .map(|t| t["id"].to_string())
        .expect("the viewer token is listed");
    assert!(!tokens.contains(&viewer[4..]), "never a secret: {tokens}");
    cli(url, &ca, &shop, &["token", "revoke", &id]);
    let (ok, _, err) = try_cli(url, Some(&ca), &viewer, &["installs"]);
    assert!(!ok && err.contains("401"), "{err}");

    // Over HTTPS the console's cookies are sent over HTTPS only.
    let set_cookie = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let page = client.get(format!("{url}/sign-in")).send().await.unwrap();
        page.headers()["set-cookie"].to_str().unwrap().to_string()
    });
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.ends_with("; Secure"),
        "{set_cookie}"
    );
}

mod reqwest {
    pub use ::reqwest::*;

    /// GET `url` on a runtime of its own; the status.
    pub fn blocking_get(url: &str) -> u16 {
        let url = url.to_string();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { ::reqwest::get(url).await.unwrap().status().as_u16() })
        })
        .join()
        .unwrap()
    }
}

/// A stand-in upstream on 127.0.0.1 that answers each request after `delay`, and says on
/// `arrived` when a request came in.
fn slow_upstream(delay: Duration) -> (std::net::SocketAddr, mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, arrived) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = tx.send(());
                std::thread::sleep(delay);
                let body = r#"{"slow":true}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (addr, arrived)
}

/// A real `gantry serve` (draining for at most `drain_timeout` seconds) with a call in flight
/// that its upstream answers after `upstream_delay`, and SIGTERM sent once the call reached
/// the upstream.
async fn sigterm_during_a_call(
    dir: &Path,
    drain_timeout: &str,
    upstream_delay: Duration,
) -> (
    Served,
    String,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let data = dir.join("data");
    let config = dir.join("gantry.toml");
    std::fs::write(&config, "[private_addresses]\nacme = [\"127.0.0.1\"]\n").unwrap();
    let served = Served::start(&[
        "--bind",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--no-demo",
        "--drain-timeout",
        drain_timeout,
    ]);
    let url = served.url.clone();
    let platform = std::fs::read_to_string(data.join("platform.token")).unwrap();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str, body: serde_json::Value| {
        client
            .request(method, format!("{url}{path}"))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
    };
    let org: serde_json::Value = call(
        reqwest::Method::POST,
        "/v1/orgs",
        &platform,
        serde_json::json!({"id": "acme"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let admin = org["admin"]["token"].as_str().unwrap().to_string();
    let published = client
        .post(format!("{url}/v1/connectors/rest-json/versions/1.0.0"))
        .bearer_auth(&admin)
        .header("content-type", "application/wasm")
        .body(connector("rest-json"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let install: serde_json::Value = call(
        reqwest::Method::POST,
        "/v1/installs",
        &admin,
        serde_json::json!({"org": "acme", "name": "rest-json", "version": "1.0.0"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let granted = call(
        reqwest::Method::PUT,
        &format!("/v1/installs/{}/outbound", install["id"]),
        &admin,
        serde_json::json!(["http://127.0.0.1:*"]),
    )
    .await
    .unwrap();
    assert_eq!(granted.status(), 200);
    let (upstream, arrived) = slow_upstream(upstream_delay);
    let instance: serde_json::Value = call(reqwest::Method::POST, "/v1/instances", &admin, serde_json::json!({"install": install["id"], "name": "slow", "config": {"base_url": format!("http://{upstream}")}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let in_flight = tokio::spawn(call(
        reqwest::Method::POST,
        &format!("/v1/instances/{}/invoke/get", instance["id"]),
        &admin,
        serde_json::json!({"path": "/slow"}),
    ));
    tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the call reached the upstream");
    let killed = Command::new("kill")
        .args(["-TERM", &served.pid()])
        .status()
        .unwrap();
    assert!(killed.success());

    (served, url, in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (mut served, url, in_flight) =
        sigterm_during_a_call(dir.path(), "60", Duration::from_secs(2)).await;

    // New connections are refused once the signal is handled (within a few seconds).
    let addr = url.trim_start_matches("http://").to_string();
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "still accepting connections after SIGTERM");

    let answer = in_flight
        .await
        .unwrap()
        .expect("the call in flight was answered");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body["output"]["body"],
        serde_json::json!({"slow": true}),
        "{body}"
    );
    let status = served
        .exit_status("it exits once the call is answered")
        .await;
    assert_eq!(status.code(), Some(0), "a drained shutdown exits 0");
    let said: Vec<String> = served.lines.try_iter().collect();
    assert!(
        said.iter().any(|l| l.starts_with("SIGTERM: shutting down")),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_outlasts_its_timeout_cuts_the_call_off_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (mut served, _, in_flight) =
        sigterm_during_a_call(dir.path(), "1", Duration::from_secs(60)).await;
    let status = served
        .exit_status("it exits once the drain timeout is spent")
        .await;
    assert_eq!(status.code(), Some(1), "a cut-off drain exits 1");
    assert!(
        in_flight.await.unwrap().is_err(),
        "the call in flight is cut off, not answered"
    );
    let said: Vec<String> = served.lines.try_iter().collect();
    assert!(said.iter().any(|l| l.contains("drain")), "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_logged_once_with_its_id_carried_into_the_guests_lines() {
    use crate::support::{Server, captured_logs, runtime};
    use gantry_host::model::Role;
    use reqwest::Method;
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        runtime().clone(),
        gantry_host::ApiConfig::default(),
    )
    .await;
    let admin = s.token("logco", Role::Admin);
    let r = s
        .publish(&admin, "worldbank", "1.0.0", "", connector("worldbank"))
        .await;
    assert_eq!(r.0, 201, "{}", r.1);
    let (_, install) = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&admin),
            Some(serde_json::json!({"org": "logco", "name": "worldbank", "version": "1.0.0"})),
        )
        .await;
    let (_, instance) = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&admin),
            Some(serde_json::json!({"install": install["id"], "name": "wb"})),
        )
        .await;
    let answer = s
        .client
        .post(format!(
            "http://{}/v1/instances/{}/invoke/countries",
            s.addr, instance["id"]
        ))
        .bearer_auth(&admin)
        .header("x-request-id", "trace-guest-7")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "trace-guest-7");
    let generated = s
        .client
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .unwrap();
    let generated = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 24, "a new id when the client sends none");
    s.shutdown().await;

    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("trace-guest-7"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gantry::guest") && l.contains("GET ")),
        "the guest's line carries the request id: {lines:#?}"
    );
    let request = lines
        .iter()
        .find(|l| l.contains("gantry::http"))
        .unwrap_or_else(|| panic!("one request line: {lines:#?}"));
    for field in [
        "method=POST",
        "route=\"/v1/instances/{id}/invoke/{operation}\"",
        "org=\"logco\"",
        "status=",
        "duration_us=",
    ] {
        assert!(request.contains(field), "{field} in {request}");
    }
    assert!(!text.contains(&admin[4..]), "a token is never logged");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = Served::start(&[
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-demo",
        "--log-format",
        "json",
    ]);
    let answer = reqwest::blocking_get(&format!("{}/healthz", served.url));
    assert_eq!(answer, 200);
    let line = served
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a request line");
    let line = json(&line);
    assert_eq!(line["target"], "gantry::http", "{line}");
    assert_eq!(line["fields"]["route"], "/healthz", "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
    assert_eq!(
        line["span"]["request_id"].as_str().unwrap().len(),
        24,
        "{line}"
    );
}
