//! Marketplace search at scale (issue 14): a registry of 100,000 generated versions (10,000
//! connectors of 200 organisations, one in three private), searched as one organisation sees
//! it — the first page, a deep page, common and rare words, a two-letter prefix, a tag, a
//! publisher, words with a tag, and a search nothing matches. Each search answers one page
//! (100 connectors at most) through [`Registry::search`], so it includes building the listings.
//!
//! Run: `cargo bench --bench marketplace` (`GANTRY_MARKET_VERSIONS` changes the size).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gantry_bench::market::{self, COMMON, Shape, TAGS};
use gantry_host::model::{Page, Search};
use gantry_host::registry::{Registry, RegistryConfig};
use gantry_host::runtime::{Runtime, RuntimeConfig};
use gantry_host::store::SqliteStore;
use std::hint::black_box;
use std::time::Instant;

fn search(text: Option<&str>, tag: Option<&str>, publisher: Option<&str>) -> Search {
    Search {
        text: text.map(Into::into),
        tag: tag.map(Into::into),
        publisher: publisher.map(Into::into),
    }
}

fn marketplace(c: &mut Criterion) {
    let versions = std::env::var("GANTRY_MARKET_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let shape = Shape::with_versions(versions);
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let started = Instant::now();
    market::generate(
        &SqliteStore::open(&data.join("gantry.db")).unwrap(),
        shape,
        7,
    )
    .unwrap();
    eprintln!(
        "generated {} versions ({} connectors, {} organisations) in {:.1} s",
        shape.versions(),
        shape.connectors,
        shape.orgs,
        started.elapsed().as_secs_f64()
    );

    let registry = Registry::open(
        RegistryConfig {
            data_dir: data,
            ..RegistryConfig::default()
        },
        runtime,
    )
    .unwrap();
    let viewer = market::org(0);
    let middle = format!("{}/", market::org(shape.orgs / 2));
    let rare = market::rare_word(3_000);
    let cases = [
        ("first-page", search(None, None, None), None),
        ("deep-page", search(None, None, None), Some(middle)),
        ("common-word", search(Some(COMMON[0]), None, None), None),
        ("rare-word", search(Some(&rare), None, None), None),
        ("two-letter-prefix", search(Some("ka"), None, None), None),
        ("tag", search(None, Some(TAGS[9]), None), None),
        (
            "publisher",
            search(None, None, Some(&market::org(shape.orgs - 1))),
            None,
        ),
        (
            "words-and-tag",
            search(Some("sync orders"), Some(TAGS[2]), None),
            None,
        ),
        ("no-match", search(Some("zzzz"), None, None), None),
    ];
    let mut group = c.benchmark_group(format!("marketplace-{versions}"));
    for (name, search, after) in &cases {
        let page = Page {
            limit: None,
            after: after.clone(),
        };
        let found = registry.search(&viewer, search, &page).unwrap().len();
        eprintln!("{name}: {found} connectors on the page");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(registry.search(&viewer, search, &page).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, marketplace);
criterion_main!(benches);
