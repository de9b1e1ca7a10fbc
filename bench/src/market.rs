//! A generated marketplace: many organisations' connectors and versions, written straight into
//! a [`MetadataStore`] (publishing real components would compile each one), with descriptions
//! drawn from a vocabulary where a few words are common and most are rare, as in a real
//! catalogue. The same seed gives the same rows, so a search can be checked against another
//! store holding them.

use gantry_host::model::{Description, Digest, Operation, VersionInfo, VersionState, Visibility};
use gantry_host::store::{MetadataStore, StoreError};

/// The shape of a generated marketplace.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub orgs: usize,
    pub connectors: usize,
    pub versions_per_connector: usize,
}

impl Shape {
    /// `versions` versions: ten per connector, fifty connectors per organisation.
    pub fn with_versions(versions: usize) -> Self {
        let connectors = versions.div_ceil(10);
        Self {
            orgs: connectors.div_ceil(50),
            connectors,
            versions_per_connector: 10,
        }
    }

    pub fn versions(&self) -> usize {
        self.connectors * self.versions_per_connector
    }
}

/// Words most descriptions use.
pub const COMMON: &[&str] = &[
    "sync",
    "records",
    "api",
    "orders",
    "customers",
    "events",
    "webhook",
    "data",
];
/// Tags, the first few on many connectors, the rest on few.
pub const TAGS: &[&str] = &[
    "crm",
    "erp",
    "finance",
    "marketing",
    "storage",
    "messaging",
    "analytics",
    "hr",
    "legal",
    "logistics",
    "retail",
    "health",
    "beta",
    "gov",
    "iot",
    "edu",
];
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pa", "qu", "dor", "fen", "gal", "hul",
    "jex", "kor", "lum", "mar", "nix", "ost", "pri", "quo", "rax", "sul", "tor", "ulm", "vex",
    "wyn", "xan", "yor", "zed",
];

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`, small ones far more often (roughly Zipf-like).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((u * u * u) * n as f64) as usize
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Rare word number `n` of the vocabulary (there are `SYLLABLES.len()³` of them).
pub fn rare_word(n: usize) -> String {
    let s = SYLLABLES.len();
    format!(
        "{}{}{}",
        SYLLABLES[n % s],
        SYLLABLES[(n / s) % s],
        SYLLABLES[(n / s / s) % s]
    )
}

/// The name of organisation `n`.
pub fn org(n: usize) -> String {
    format!("org{n:04}")
}

/// Write the marketplace of `shape` into `store`: organisation `org0000` onwards, each
/// connector's versions 1.0.0, 1.1.0, …, one in three connectors private, one version in
/// twenty deprecated and one in fifty blocked.
pub fn generate(store: &dyn MetadataStore, shape: Shape, seed: u64) -> Result<(), StoreError> {
    let mut rng = Rng(seed);
    let per_org = shape.connectors.div_ceil(shape.orgs);
    store.write(|m| {
        for o in 0..shape.orgs {
            m.create_org(&org(o), 1)?;
        }
        Ok::<_, StoreError>(())
    })?;
    // In units of a few hundred connectors, as a busy registry would take them.
    for first in (0..shape.connectors).step_by(500) {
        let rows: Vec<VersionInfo> = (first..shape.connectors.min(first + 500))
            .flat_map(|c| connector_rows(&mut rng, shape, c, per_org))
            .collect();
        store.write(|m| {
            for row in &rows {
                m.insert_version(row)?;
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(())
}

fn connector_rows(rng: &mut Rng, shape: Shape, c: usize, per_org: usize) -> Vec<VersionInfo> {
    let org = org(c / per_org);
    let name = format!("{}-{}", rare_word(rng.skewed(4000)), c);
    let visibility = if c % 3 == 2 {
        Visibility::Private
    } else {
        Visibility::Public
    };
    let tags: Vec<String> = (0..1 + rng.below(3))
        .map(|_| TAGS[rng.skewed(TAGS.len())].to_string())
        .collect();
    (0..shape.versions_per_connector)
        .map(|v| {
            let version = semver::Version::new(1, v as u64, 0);
            let mut words: Vec<String> = (0..3)
                .map(|_| COMMON[rng.skewed(COMMON.len())].into())
                .collect();
            words.extend((0..6).map(|_| rare_word(rng.skewed(30_000))));
            let operations = (0..1 + rng.below(4))
                .map(|_| Operation {
                    name: format!(
                        "{}-{}",
                        rare_word(rng.skewed(2000)),
                        COMMON[rng.below(COMMON.len())]
                    ),
                    description: "one operation".into(),
                    input_schema: serde_json::json!({"type": "object"}),
                    output_schema: serde_json::json!({"type": "object"}),
                })
                .collect();
            let state = match rng.below(100) {
                0..2 => VersionState::Blocked,
                2..7 => VersionState::Deprecated,
                _ => VersionState::Active,
            };
            VersionInfo {
                org: org.clone(),
                name: name.clone(),
                version: version.clone(),
                revision: 1,
                digest: Digest::of(format!("{org}/{name}@{version}").as_bytes()),
                size: 150_000,
                visibility,
                state,
                publisher: "ci".into(),
                published_at: 1,
                tags: tags.clone(),
                description: Description {
                    name: name.clone(),
                    version,
                    description: words.join(" "),
                    operations,
                    config: Vec::new(),
                    secrets: Vec::new(),
                    outbound_hosts: Vec::new(),
                },
            }
        })
        .collect()
}
