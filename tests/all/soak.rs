//! The noisy-neighbour soak: `gantry serve` as its own process, four callers of a well-behaved
//! organisation, and the same load again with a share of the calls made by a hostile
//! organisation running every hostile sample. It reports how the well-behaved calls fared,
//! whether `/healthz` answered throughout, and the server's memory and file descriptors.
//!
//! A measurement, not a CI test (it takes two minutes and its figures depend on the machine):
//!
//! ```sh
//! cargo test --release --test all soak -- --ignored --nocapture
//! ```
//!
//! `GANTRY_SOAK_SECS` sets each phase's length (default 60), `GANTRY_SOAK_HOSTILE` the share of
//! the four callers' calls that are hostile, in percent (default 2), and
//! `GANTRY_SOAK_ATTACKERS` a number of further callers that make hostile calls only (default
//! 0: with them the four callers keep calling as many well-behaved calls as without, a stricter
//! test than the mix, where a caller busy with a hostile call makes no well-behaved one).

use crate::support::{connector, runtime, sample_dir};
use gantry_host::model::{PublishRequest, Role, Visibility};
use gantry_host::{Registry, RegistryConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a caller calls: which token, which instance, which operation, with what input.
#[derive(Clone)]
struct Target {
    label: &'static str,
    token: String,
    instance: i64,
    operation: &'static str,
    input: Value,
}

/// Tokens and instances of the two organisations.
struct Setup {
    good: Vec<Target>,
    hostile: Vec<Target>,
    /// Hostile descriptions published now and then (refused, after compiling them).
    publishes: Vec<&'static str>,
    evil_token: String,
}

/// Seed the data directory through the library (before the server owns it).
async fn seed(dir: &Path, upstream: &str) -> Setup {
    let registry = Registry::open(
        RegistryConfig {
            data_dir: dir.to_path_buf(),
            ..RegistryConfig::default()
        },
        runtime().clone(),
    )
    .unwrap();
    let mut tokens = BTreeMap::new();
    for org in ["good", "evil"] {
        registry.create_org(org).unwrap();
        tokens.insert(
            org,
            registry
                .create_token(org, "soak", Role::Admin, "soak", None)
                .unwrap()
                .1,
        );
    }
    let instance = async |org: &str, name: &str, grant: bool| {
        registry
            .publish(
                org,
                "soak",
                PublishRequest {
                    name: name.into(),
                    version: describe_version(name).into(),
                    visibility: Visibility::Private,
                    tags: Vec::new(),
                    bytes: connector(name),
                },
            )
            .await
            .unwrap();
        let install = registry
            .install(org, "soak", org, name, describe_version(name))
            .unwrap();
        if grant {
            registry
                .grant_outbound(org, "soak", install.id, vec!["http://127.0.0.1:*".into()])
                .unwrap();
        }
        registry
            .create_instance(
                org,
                "soak",
                install.id,
                "i",
                BTreeMap::new(),
                BTreeMap::new(),
            )
            .unwrap()
            .id
    };
    let target = |label, token: &str, instance: i64, operation, input| Target {
        label,
        token: token.to_string(),
        instance,
        operation,
        input,
    };
    let good = tokens["good"].clone();
    let evil = tokens["evil"].clone();
    let echo = instance("good", "echo", false).await;
    let jt = instance("good", "json-transform", false).await;
    let order = json!({"document": {"id": 42, "customer": {"name": "Ada", "tier": "gold"},
        "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]},
        "paths": ["id", "customer.name", "lines"]});
    let good_targets = vec![
        target(
            "echo",
            &good,
            echo,
            "echo",
            json!({"order": 42, "note": "x".repeat(100)}),
        ),
        target("json-transform", &good, jt, "pick", order),
    ];
    let mut hostile = Vec::new();
    for name in [
        "spin-forever",
        "alloc-bomb",
        "deep-recursion",
        "panic",
        "huge-output",
        "snoop",
        "header-bomb",
    ] {
        let id = instance("evil", name, false).await;
        hostile.push(target(name, &evil, id, "run", json!({})));
    }
    let id = instance("evil", "conn-hog", true).await;
    hostile.push(target(
        "conn-hog",
        &evil,
        id,
        "run",
        json!({"authority": upstream, "count": 50}),
    ));
    let id = instance("evil", "header-smuggler", true).await;
    hostile.push(target(
        "header-smuggler",
        &evil,
        id,
        "send",
        json!({"url": format!("http://{upstream}/"), "header": 0}),
    ));
    // `GANTRY_SOAK_ONLY=name,…` keeps only those hostile samples (to see what each costs).
    let only = std::env::var("GANTRY_SOAK_ONLY").unwrap_or_default();
    let keep = |label: &str| only.is_empty() || only.split(',').any(|o| o == label);
    Setup {
        good: good_targets,
        hostile: hostile.into_iter().filter(|t| keep(t.label)).collect(),
        publishes: ["deep-schema", "huge-describe"]
            .into_iter()
            .filter(|name| keep(name))
            .collect(),
        evil_token: evil,
    }
}

fn describe_version(_name: &str) -> &'static str {
    "1.0.0"
}

/// `gantry serve` on the seeded directory; the child and the address it listens on.
fn start_server(dir: &Path) -> (Child, String) {
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nbind = \"127.0.0.1:0\"\n\
             [private_addresses]\nevil = [\"127.0.0.1\"]\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "serve",
            "--no-demo",
            "--config",
            config.to_str().unwrap(),
            "--samples",
        ])
        .arg(sample_dir())
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_BIND")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("gantry serve said where it listens");
        if let Some(addr) = line.strip_prefix("gantry listening on ") {
            break addr.to_string();
        }
    };
    (child, addr)
}

/// Resident memory (KiB) and open file descriptors of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

#[derive(Default)]
struct Phase {
    good_ok: Vec<Duration>,
    good_failed: BTreeMap<String, usize>,
    hostile: BTreeMap<String, usize>,
    health_ok: usize,
    health_failed: usize,
    health_max: Duration,
    /// (seconds since start, RSS KiB, fds)
    samples: Vec<(f64, u64, usize)>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One phase: four callers for `length`, `hostile_percent` of their calls hostile, and
/// `attackers` more callers whose every call is hostile.
async fn phase(
    addr: &str,
    pid: u32,
    setup: &Setup,
    length: Duration,
    hostile_percent: u64,
    attackers: u64,
) -> Phase {
    let result = Arc::new(Mutex::new(Phase::default()));
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for caller in 0..4 + attackers {
        let hostile_percent = if caller < 4 { hostile_percent } else { 100 };
        let (addr, result) = (addr.to_string(), result.clone());
        let (good, hostile) = (setup.good.clone(), setup.hostile.clone());
        let publishes = setup.publishes.clone();
        let evil = setup.evil_token.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (caller + 1);
            let mut n = 0usize;
            while Instant::now() < deadline {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                n += 1;
                if seed % 100 < hostile_percent {
                    // Every hostile sample in turn, and now and then a publish of a hostile
                    // description (refused after compiling it).
                    let pick = (seed / 100) as usize % (hostile.len() + publishes.len());
                    let outcome = if pick >= hostile.len() {
                        let name = publishes[pick - hostile.len()];
                        let file = name;
                        let r = client
                            .post(format!("{addr}/v1/connectors/{name}/versions/1.0.0"))
                            .bearer_auth(&evil)
                            .header("content-type", "application/wasm")
                            .body(connector(file))
                            .send()
                            .await;
                        format!("publish {name}: {}", code(r).await)
                    } else {
                        let t = &hostile[pick];
                        let r = client
                            .post(format!(
                                "{addr}/v1/instances/{}/invoke/{}",
                                t.instance, t.operation
                            ))
                            .bearer_auth(&t.token)
                            .json(&t.input)
                            .send()
                            .await;
                        format!("{}: {}", t.label, code(r).await)
                    };
                    *result.lock().unwrap().hostile.entry(outcome).or_default() += 1;
                    continue;
                }
                let t = &good[n % good.len()];
                let started = Instant::now();
                let r = client
                    .post(format!(
                        "{addr}/v1/instances/{}/invoke/{}",
                        t.instance, t.operation
                    ))
                    .bearer_auth(&t.token)
                    .json(&t.input)
                    .send()
                    .await;
                let elapsed = started.elapsed();
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        result
                            .lock()
                            .unwrap()
                            .good_ok
                            .push(started.elapsed().max(elapsed));
                    }
                    other => {
                        let outcome = code(other).await;
                        *result
                            .lock()
                            .unwrap()
                            .good_failed
                            .entry(outcome)
                            .or_default() += 1
                    }
                }
            }
        }));
    }
    let monitor = {
        let (addr, result) = (addr.to_string(), result.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let started = Instant::now();
            while Instant::now() < deadline {
                let asked = Instant::now();
                let ok = client
                    .get(format!("{addr}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let took = asked.elapsed();
                let (rss, fds) = usage(pid);
                {
                    let mut r = result.lock().unwrap();
                    if ok {
                        r.health_ok += 1;
                    } else {
                        r.health_failed += 1;
                    }
                    r.health_max = r.health_max.max(took);
                    r.samples.push((started.elapsed().as_secs_f64(), rss, fds));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    monitor.await.unwrap();
    Arc::try_unwrap(result).ok().unwrap().into_inner().unwrap()
}

/// The status and error code of a response, for counting outcomes.
async fn code(response: reqwest::Result<reqwest::Response>) -> String {
    match response {
        Err(e) => format!("transport: {e}"),
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match body["error"]["code"].as_str() {
                Some(code) => format!("{status} {code}"),
                None => status.to_string(),
            }
        }
    }
}

fn report(name: &str, p: &mut Phase) {
    p.good_ok.sort();
    let total = p.good_ok.len() + p.good_failed.values().sum::<usize>();
    println!("== {name}");
    println!(
        "well-behaved calls: {total}, succeeded {} ({:.3} %), p50 {:?}, p99 {:?}, max {:?}",
        p.good_ok.len(),
        100.0 * p.good_ok.len() as f64 / total.max(1) as f64,
        percentile(&p.good_ok, 0.5),
        percentile(&p.good_ok, 0.99),
        p.good_ok.last().copied().unwrap_or_default()
    );
    if !p.good_failed.is_empty() {
        println!("  failed: {:?}", p.good_failed);
    }
    if !p.hostile.is_empty() {
        println!("hostile calls: {}", p.hostile.values().sum::<usize>());
        for (outcome, n) in &p.hostile {
            println!("  {n:>5} × {outcome}");
        }
    }
    println!(
        "/healthz: {} answered, {} not, slowest {:?}",
        p.health_ok, p.health_failed, p.health_max
    );
    let tenth = (p.samples.len() / 10).max(1);
    let series: Vec<String> = p
        .samples
        .iter()
        .step_by(tenth)
        .map(|(t, rss, fds)| format!("{t:.0}s {} MiB {fds} fds", rss / 1024))
        .collect();
    println!("server: {}", series.join(", "));
    let max_rss = p.samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_fds = p.samples.iter().map(|s| s.2).max().unwrap_or(0);
    println!("server peak: {} MiB, {max_fds} fds", max_rss / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute measurement: cargo test --release --test all soak -- --ignored --nocapture"]
async fn soak_hostile_tenants_beside_a_well_behaved_one() {
    let secs: u64 = std::env::var("GANTRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let hostile_percent: u64 = std::env::var("GANTRY_SOAK_HOSTILE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // An upstream that takes connections and never answers (conn-hog's target).
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = upstream.accept().await {
            held.push(stream);
            held.retain(|s| s.peer_addr().is_ok());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let setup = seed(dir.path(), &upstream_addr).await;
    let (mut child, addr) = start_server(dir.path());
    let pid = child.id();
    // Warm up: every connector loaded once.
    let client = reqwest::Client::new();
    for t in setup.good.iter().chain(&setup.hostile) {
        let _ = client
            .post(format!(
                "{addr}/v1/instances/{}/invoke/{}",
                t.instance, t.operation
            ))
            .bearer_auth(&t.token)
            .json(&t.input)
            .send()
            .await;
    }
    let attackers: u64 = std::env::var("GANTRY_SOAK_ATTACKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = Duration::from_secs(secs);
    let mut steady = phase(&addr, pid, &setup, length, 0, 0).await;
    let mut hostile = phase(&addr, pid, &setup, length, hostile_percent, attackers).await;
    report("well-behaved only", &mut steady);
    report(
        &format!(
            "with {hostile_percent} % hostile calls and {attackers} callers of hostile calls only"
        ),
        &mut hostile,
    );
    let ratio = percentile(&hostile.good_ok, 0.99).as_secs_f64()
        / percentile(&steady.good_ok, 0.99).as_secs_f64();
    println!("p99 of well-behaved calls, hostile ÷ steady: {ratio:.2}×");
    child.kill().unwrap();
    child.wait().unwrap();

    let total = hostile.good_ok.len() + hostile.good_failed.values().sum::<usize>();
    assert!(
        hostile.good_ok.len() as f64 >= 0.999 * total as f64,
        "well-behaved calls failed: {:?}",
        hostile.good_failed
    );
    assert_eq!(
        hostile.health_failed + steady.health_failed,
        0,
        "/healthz went unanswered"
    );
}
