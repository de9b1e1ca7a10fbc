//! The store conformance suite: one set of checks every `MetadataStore` and `BlobStore` must
//! pass — the embedded SQLite and directory stores, and the in-memory ones. A new backend (the
//! PostgreSQL store, an object store) adds one line to `conformance!` below.
//!
//! The suite checks the contract the registry relies on: plain lookups scoped as documented,
//! paging, ids, units that commit whole or not at all, and no rule of the lifecycle (a store
//! returns every revision; which one is current is the registry's business).

use gantry_host::model::{
    AuditEntry, ConfigKey, Description, Digest, Instance, Operation, Role, Run, RunStatus, Search,
    Session, Step, TokenInfo, VersionInfo, VersionState, Visibility,
};
use gantry_host::store::{
    BlobStore, FsBlobStore, MemoryBlobStore, MemoryStore, Metadata, MetadataStore, PgStore,
    RevisionKey, S3BlobStore, SqliteStore, StoreError,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

type Result<T> = std::result::Result<T, StoreError>;

/// A backend under test, and what keeps it alive (its directory).
struct Backend<S: ?Sized> {
    store: Arc<S>,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Backend<dyn MetadataStore> {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        store: Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap()),
        _dir: Some(dir),
    }
}

fn memory() -> Backend<dyn MetadataStore> {
    Backend {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }
}

fn postgres() -> Backend<dyn MetadataStore> {
    Backend {
        store: Arc::new(PgStore::connect(&crate::services::postgres_schema()).unwrap()),
        _dir: None,
    }
}

fn s3() -> Backend<dyn BlobStore> {
    let (key_id, secret) = crate::services::S3_KEYS;
    Backend {
        store: Arc::new(
            S3BlobStore::open_with_keys(&crate::services::s3_bucket(), key_id, secret).unwrap(),
        ),
        _dir: None,
    }
}

fn fs_blobs() -> Backend<dyn BlobStore> {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        store: Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap()),
        _dir: Some(dir),
    }
}

fn memory_blobs() -> Backend<dyn BlobStore> {
    Backend {
        store: Arc::new(MemoryBlobStore::new()),
        _dir: None,
    }
}

macro_rules! conformance {
    ($($backend:ident: $($check:ident),+;)+) => {
        $(mod $backend {
            $(#[test]
            fn $check() {
                let backend = super::$backend();
                super::$check(&*backend.store);
            })+
        })+
    };
}

conformance! {
    sqlite: units_commit_whole_or_not_at_all, organisations_and_settings, versions_are_plain_rows,
        installs_are_scoped_and_paged, instances_keep_sealed_secrets_apart, flows_steps_and_bindings,
        runs_come_newest_first, tokens_and_the_audit_log, the_marketplace_index_follows_versions,
        sessions_are_kept_by_hash_and_swept, recordings_canaries_and_worlds;
    memory: units_commit_whole_or_not_at_all, organisations_and_settings, versions_are_plain_rows,
        installs_are_scoped_and_paged, instances_keep_sealed_secrets_apart, flows_steps_and_bindings,
        runs_come_newest_first, tokens_and_the_audit_log, the_marketplace_index_follows_versions,
        sessions_are_kept_by_hash_and_swept, recordings_canaries_and_worlds;
    postgres: units_commit_whole_or_not_at_all, organisations_and_settings, versions_are_plain_rows,
        installs_are_scoped_and_paged, instances_keep_sealed_secrets_apart, flows_steps_and_bindings,
        runs_come_newest_first, tokens_and_the_audit_log, the_marketplace_index_follows_versions,
        sessions_are_kept_by_hash_and_swept, recordings_canaries_and_worlds;
    fs_blobs: blobs_are_content_addressed;
    s3: blobs_are_content_addressed;
    memory_blobs: blobs_are_content_addressed;
}

fn write<T>(store: &dyn MetadataStore, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> T {
    store.write(work).unwrap()
}

fn read<T>(store: &dyn MetadataStore, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> T {
    store.read(work).unwrap()
}

fn description(name: &str, version: &str) -> Description {
    Description {
        name: name.into(),
        version: version.parse().unwrap(),
        description: format!("{name} for the suite"),
        operations: vec![Operation {
            name: "echo".into(),
            description: "returns its input".into(),
            input_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
        }],
        config: vec![ConfigKey {
            name: "greeting".into(),
            description: "what to say".into(),
            default_value: Some("hello".into()),
            required: false,
        }],
        secrets: Vec::new(),
        outbound_hosts: vec!["https://api.example.com".into()],
    }
}

fn version(org: &str, name: &str, v: &str, revision: u32, bytes: &[u8]) -> VersionInfo {
    VersionInfo {
        org: org.into(),
        name: name.into(),
        version: v.parse().unwrap(),
        revision,
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        visibility: Visibility::Private,
        state: VersionState::Active,
        publisher: "dev".into(),
        published_at: 1,
        tags: vec!["demo".into()],
        description: description(name, v),
    }
}

fn instance(org: &str, install_id: i64, name: &str) -> Instance {
    Instance {
        id: 0,
        org: org.into(),
        install_id,
        name: name.into(),
        config: BTreeMap::from([("greeting".into(), "hi".into())]),
        secret_keys: vec!["token".into()],
        created_by: "ops".into(),
        created_at: 2,
    }
}

fn step(name: &str, instance: i64, digest: Digest) -> Step {
    Step {
        name: name.into(),
        instance,
        operation: "echo".into(),
        input: json!({"a": "${input}"}),
        digest,
        connector: None,
        revision: None,
        out_of_date: false,
    }
}

fn units_commit_whole_or_not_at_all(store: &dyn MetadataStore) {
    // A unit that fails leaves nothing, and its error comes back as it was.
    let failed: Result<()> = store.write(|m| {
        m.create_org("acme", 1)?;
        assert!(m.org_exists("acme")?, "a unit sees its own writes");
        Err(StoreError::failed("stop"))
    });
    assert!(matches!(failed, Err(StoreError::Failed { message, .. }) if message == "stop"));
    assert!(!read(store, |m| m.org_exists("acme")));
    // A unit that succeeds keeps everything it wrote.
    write(store, |m| {
        m.create_org("acme", 1)?;
        m.set_setting("a", "1")
    });
    assert!(read(store, |m| m.org_exists("acme")));
    assert_eq!(read(store, |m| m.setting("a")), Some("1".into()));
    // A read unit's writes are not kept.
    let _ = store.read(|m| m.set_setting("a", "2"));
    assert_eq!(read(store, |m| m.setting("a")), Some("1".into()));
}

fn organisations_and_settings(store: &dyn MetadataStore) {
    write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("acme", 2) // idempotent
    });
    assert!(read(store, |m| m.org_exists("acme")));
    assert!(!read(store, |m| m.org_exists("globex")));
    write(store, |m| m.create_org("globex", 3));
    write(store, |m| m.create_org("beta", 4));
    let ids = |after: &str, limit| {
        read(store, |m| m.orgs(after, limit))
            .into_iter()
            .map(|o| (o.id, o.created_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids("", 10),
        [("acme".into(), 1), ("beta".into(), 4), ("globex".into(), 3)],
        "by id; the first creation time kept"
    );
    assert_eq!(ids("acme", 1), [("beta".to_string(), 4)]);
    assert!(ids("globex", 10).is_empty());
    assert_eq!(read(store, |m| m.setting("key")), None);
    write(store, |m| m.set_setting("key", "one"));
    write(store, |m| m.set_setting("key", "two"));
    assert_eq!(read(store, |m| m.setting("key")), Some("two".into()));
}

fn versions_are_plain_rows(store: &dyn MetadataStore) {
    let (r1, r2) = (
        version("acme", "echo", "1.0.0", 1, b"one"),
        version("acme", "echo", "1.0.0", 2, b"two"),
    );
    let mut public = version("acme", "echo", "2.0.0", 1, b"three");
    public.visibility = Visibility::Public;
    let other = version("globex", "echo", "1.0.0", 1, b"one");
    write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("globex", 1)?;
        for v in [&r1, &r2, &public, &other] {
            m.insert_version(v)?;
        }
        Ok(())
    });
    // Every revision, the whole description, whatever is current.
    let mut revisions = read(store, |m| m.revisions("acme", "echo", "1.0.0"));
    revisions.sort_by_key(|v| v.revision);
    assert_eq!(revisions, vec![r1.clone(), r2.clone()]);
    assert_eq!(
        read(store, |m| m.package_revisions("acme", "echo")).len(),
        3
    );
    assert!(read(store, |m| m.revisions("acme", "echo", "9.9.9")).is_empty());
    // By digest, within the package only.
    let with = read(store, |m| {
        m.revisions_with("acme", "echo", &Digest::of(b"one"))
    });
    assert_eq!(with, vec![r1.clone()]);
    // Listed: summaries without schemas, the public ones to another organisation.
    let public_rows = read(store, |m| m.listed_revisions("globex", "acme", "echo"));
    assert_eq!(public_rows.len(), 1);
    assert_eq!(public_rows[0].digest, public.digest);
    assert_eq!(public_rows[0].description.operations[0].name, "echo");
    assert_eq!(
        read(store, |m| m.listed_revisions("acme", "acme", "echo")).len(),
        3
    );
    assert!(read(store, |m| m.listed_revisions("acme", "globex", "echo")).is_empty());
    // State applies to every revision of the version.
    write(store, |m| {
        m.set_version_state("acme", "echo", "1.0.0", VersionState::Deprecated)
    });
    assert!(
        read(store, |m| m.revisions("acme", "echo", "1.0.0"))
            .iter()
            .all(|v| v.state == VersionState::Deprecated)
    );
    assert_eq!(
        read(store, |m| m.revisions("globex", "echo", "1.0.0"))[0].state,
        VersionState::Active
    );
    // The world of each revision, recorded after the row.
    let world = vec!["export gantry:connector/connector@0.1.0".to_string()];
    write(store, |m| m.set_world("acme", "echo", "1.0.0", 1, &world));
    assert_eq!(
        read(store, |m| m.world("acme", "echo", "1.0.0", 1)),
        Some(world.clone())
    );
    assert_eq!(
        read(store, |m| m.world("acme", "echo", "1.0.0", 2)),
        Some(Vec::new()),
        "never recorded"
    );
    assert_eq!(read(store, |m| m.world("acme", "echo", "1.0.0", 3)), None);
    assert_eq!(
        read(store, |m| m.world("globex", "echo", "1.0.0", 1)),
        Some(Vec::new())
    );
    // Keys and deletion of one revision; references by digest across organisations.
    let mut keys = read(store, |m| m.revision_keys("acme", "echo"));
    keys.sort_by_key(|k| (k.version.clone(), k.revision));
    assert_eq!(
        keys[0],
        RevisionKey {
            org: "acme".into(),
            name: "echo".into(),
            version: "1.0.0".into(),
            revision: 1,
            digest: Digest::of(b"one"),
        }
    );
    write(store, |m| m.delete_revision(&keys[0]));
    assert_eq!(
        read(store, |m| m.revisions("acme", "echo", "1.0.0")),
        vec![VersionInfo {
            state: VersionState::Deprecated,
            ..r2.clone()
        }]
    );
    assert_eq!(read(store, |m| m.world("acme", "echo", "1.0.0", 1)), None);
    assert!(
        read(store, |m| m.digest_referenced(&Digest::of(b"one"))),
        "globex still holds those bytes"
    );
    assert!(!read(store, |m| m.digest_referenced(&Digest::of(b"none"))));
    // A revision is stored once.
    assert!(store.write(|m| m.insert_version(&r2)).is_err());
}

/// The one thing a store derives: its search index, kept in step with every write of versions.
fn the_marketplace_index_follows_versions(store: &dyn MetadataStore) {
    let search = |viewer: &str, text: &str, tag: Option<&str>, publisher: Option<&str>| {
        let search = Search {
            text: Some(text.into()),
            tag: tag.map(Into::into),
            publisher: publisher.map(Into::into),
        };
        read(store, |m| m.search(viewer, &search, None, 100))
            .into_iter()
            .map(|(org, name)| format!("{org}/{name}"))
            .collect::<Vec<_>>()
    };
    let described = |mut v: VersionInfo, text: &str, operation: &str, tags: &[&str]| {
        v.description.description = text.into();
        v.description.operations[0].name = operation.into();
        v.tags = tags.iter().map(|t| t.to_string()).collect();
        v
    };
    let public = |mut v: VersionInfo| {
        v.visibility = Visibility::Public;
        v
    };
    write(store, |m| {
        for org in ["acme", "globex", "initech"] {
            m.create_org(org, 1)?;
        }
        m.insert_version(&public(described(
            version("acme", "mailer", "1.0.0", 1, b"m1"),
            "Sends e-mail through SMTP",
            "send-mail",
            &["email"],
        )))?;
        m.insert_version(&described(
            version("acme", "mailer", "2.0.0", 1, b"m2"),
            "Sends and schedules e-mail",
            "schedule",
            &["beta"],
        ))?;
        m.insert_version(&public(described(
            version("globex", "ledger", "1.0.0", 1, b"l1"),
            "Posts journal entries to the general ledger",
            "post-entry",
            &["finance", "email"],
        )))?;
        m.insert_version(&described(
            version("globex", "payroll", "0.1.0", 1, b"p1"),
            "Runs payroll",
            "pay",
            &["finance"],
        ))
    });
    // Whole words and the starts of words, any case, in name, description or operations.
    assert_eq!(
        search("initech", "", None, None),
        ["acme/mailer", "globex/ledger"]
    );
    assert_eq!(search("initech", "MAIL", None, None), ["acme/mailer"]);
    assert_eq!(search("initech", "gen led", None, None), ["globex/ledger"]);
    assert_eq!(
        search("initech", "post-entry", None, None),
        ["globex/ledger"]
    );
    assert!(
        search("initech", "ail", None, None).is_empty(),
        "not inside a word"
    );
    assert!(
        search("initech", "mail ledger", None, None).is_empty(),
        "every word"
    );
    // What an organisation sees: its own private versions, other organisations' public ones;
    // the text of the version its listing shows (acme's newest is the private 2.0.0).
    assert_eq!(search("acme", "schedules", None, None), ["acme/mailer"]);
    assert!(search("initech", "schedules", None, None).is_empty());
    assert_eq!(
        search("globex", "", None, None),
        ["acme/mailer", "globex/ledger", "globex/payroll"]
    );
    assert!(search("initech", "payroll", None, None).is_empty());
    // Tags of any version it sees; the publisher is the organisation.
    assert_eq!(search("acme", "", Some("beta"), None), ["acme/mailer"]);
    assert!(search("initech", "", Some("beta"), None).is_empty());
    assert_eq!(
        search("initech", "", Some("email"), None),
        ["acme/mailer", "globex/ledger"]
    );
    assert_eq!(
        search("globex", "", Some("finance"), Some("globex")),
        ["globex/ledger", "globex/payroll"]
    );
    assert!(search("initech", "", None, Some("initech")).is_empty());
    // Pages, by organisation then name.
    let page = |after: Option<(&str, &str)>, limit| {
        read(store, |m| {
            m.search("globex", &Search::default(), after, limit)
        })
    };
    assert_eq!(page(None, 1), [("acme".to_string(), "mailer".to_string())]);
    assert_eq!(
        page(Some(("acme", "mailer")), 5),
        [
            ("globex".to_string(), "ledger".to_string()),
            ("globex".to_string(), "payroll".to_string())
        ]
    );
    assert!(page(Some(("globex", "payroll")), 5).is_empty());
    // State changes move what a listing shows: a blocked newest version gives way to the
    // newest that is not.
    write(store, |m| {
        m.set_version_state("acme", "mailer", "2.0.0", VersionState::Blocked)
    });
    assert!(search("acme", "schedules", None, None).is_empty());
    assert_eq!(search("acme", "smtp", None, None), ["acme/mailer"]);
    // A connector with no versions left has no entry.
    let keys = read(store, |m| m.revision_keys("globex", "payroll"));
    write(store, |m| m.delete_revision(&keys[0]));
    assert!(search("globex", "payroll", None, None).is_empty());
    assert_eq!(
        search("globex", "", Some("finance"), None),
        ["globex/ledger"]
    );
}

fn installs_are_scoped_and_paged(store: &dyn MetadataStore) {
    let v = version("acme", "echo", "1.0.0", 1, b"one");
    let ids = write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("globex", 1)?;
        m.insert_version(&v)?;
        let mut ids = Vec::new();
        for org in ["acme", "globex", "acme", "acme"] {
            ids.push(m.insert_install(org, "ops", &v, 5)?);
        }
        Ok(ids)
    });
    let first = read(store, |m| m.install("acme", ids[0])).unwrap();
    assert_eq!(
        (first.package_org.as_str(), first.name.as_str()),
        ("acme", "echo")
    );
    assert_eq!((&first.version, first.revision), (&v.version, v.revision));
    assert!(first.customisations.is_empty() && first.outbound.is_empty());
    assert_eq!(first.update_available, None);
    assert_eq!(read(store, |m| m.install("acme", ids[1])), None, "globex's");
    // Pages by id, scoped.
    let page = read(store, |m| m.installs("acme", 0, 2));
    assert_eq!(
        page.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    let rest = read(store, |m| m.installs("acme", ids[2], 10));
    assert_eq!(rest.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[3]]);
    assert_eq!(
        read(store, |m| m.installs_of_package("acme", "echo")).len(),
        4
    );
    // Customisations with and without who changed them; grants; the version.
    let custom = BTreeMap::from([("greeting".to_string(), "hey".to_string())]);
    write(store, |m| {
        m.set_customisations("acme", ids[0], &custom, Some(("ops", 9)))?;
        m.set_outbound("acme", ids[0], &["https://*.example.com".into()])?;
        m.set_install_version("acme", ids[0], &"2.0.0".parse().unwrap(), 3)?;
        // Another organisation's install is out of reach.
        m.set_customisations("acme", ids[1], &custom, Some(("mallory", 9)))
    });
    let changed = read(store, |m| m.install("acme", ids[0])).unwrap();
    assert_eq!(changed.customisations, custom);
    assert_eq!(
        (changed.modified_by.as_deref(), changed.modified_at),
        (Some("ops"), Some(9))
    );
    assert_eq!(changed.outbound, ["https://*.example.com"]);
    assert_eq!(
        (changed.version.to_string().as_str(), changed.revision),
        ("2.0.0", 3)
    );
    assert!(
        read(store, |m| m.install("globex", ids[1]))
            .unwrap()
            .customisations
            .is_empty()
    );
    write(store, |m| {
        m.set_customisations("acme", ids[0], &BTreeMap::new(), None)
    });
    let cleared = read(store, |m| m.install("acme", ids[0])).unwrap();
    assert!(cleared.customisations.is_empty() && cleared.modified_by.is_none());
}

fn instances_keep_sealed_secrets_apart(store: &dyn MetadataStore) {
    let v = version("acme", "echo", "1.0.0", 1, b"one");
    let (install, ids) = write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("globex", 1)?;
        m.insert_version(&v)?;
        let install = m.insert_install("acme", "ops", &v, 1)?;
        let a = m.insert_instance(&instance("acme", install, "a"))?;
        let b = m.insert_instance(&instance("acme", install, "b"))?;
        m.set_sealed_secrets("acme", a, &["token".to_string()], b"sealed-a")?;
        Ok((install, [a, b]))
    });
    assert_ne!(ids[0], ids[1]);
    let a = read(store, |m| m.instance("acme", ids[0])).unwrap();
    assert_eq!(
        a,
        Instance {
            id: ids[0],
            secret_keys: vec!["token".to_string()],
            ..instance("acme", install, "a")
        }
    );
    assert_eq!(read(store, |m| m.instance("globex", ids[0])), None);
    assert_eq!(
        read(store, |m| m.sealed_secrets("acme", ids[0])),
        Some(b"sealed-a".to_vec())
    );
    assert_eq!(
        read(store, |m| m.sealed_secrets("acme", ids[1])),
        Some(Vec::new())
    );
    assert_eq!(read(store, |m| m.sealed_secrets("globex", ids[0])), None);
    assert_eq!(read(store, |m| m.instance_count()), 2);
    let page = read(store, |m| m.instances("acme", ids[0], 10));
    assert_eq!(page.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[1]]);
}

fn flows_steps_and_bindings(store: &dyn MetadataStore) {
    let v = version("acme", "echo", "1.0.0", 1, b"one");
    let mut theirs = version("globex", "echo", "1.0.0", 1, b"one");
    theirs.visibility = Visibility::Public;
    let (flow, inst, other_install, other_inst) = write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("globex", 1)?;
        m.insert_version(&v)?;
        m.insert_version(&theirs)?;
        let install = m.insert_install("acme", "ops", &v, 1)?;
        let inst = m.insert_instance(&instance("acme", install, "a"))?;
        // acme also installed globex's package of the same bytes.
        let other_install = m.insert_install("acme", "ops", &theirs, 1)?;
        let other_inst = m.insert_instance(&instance("acme", other_install, "b"))?;
        let flow = m.insert_flow("acme", "relay", "ops", 3)?;
        m.insert_step(flow, 0, &step("first", inst, v.digest))?;
        m.insert_step(flow, 1, &step("second", other_inst, theirs.digest))?;
        Ok((flow, inst, other_install, other_inst))
    });
    assert!(read(store, |m| m.flow_name_taken("acme", "relay")));
    assert!(!read(store, |m| m.flow_name_taken("globex", "relay")));
    let stored = read(store, |m| m.flow("acme", flow)).unwrap();
    assert_eq!(
        stored
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["first", "second"],
        "steps keep their order"
    );
    assert_eq!(stored.steps[0], step("first", inst, v.digest));
    assert_eq!(read(store, |m| m.flow("globex", flow)), None);
    assert_eq!(read(store, |m| m.flows("acme", 0, 10)).len(), 1);
    // Steps found through an install and through a package: the package is the install's,
    // not whoever else holds the same bytes.
    let through = read(store, |m| m.steps_through_install("acme", other_install));
    assert_eq!(through.len(), 1);
    assert_eq!(
        (
            through[0].name.as_str(),
            through[0].instance,
            through[0].package_org.as_str()
        ),
        ("second", other_inst, "globex")
    );
    let of_acme = read(store, |m| m.steps_through_package("acme", "echo"));
    assert_eq!(
        of_acme.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["first"]
    );
    // Rebinding moves one step.
    let moved = Digest::of(b"moved");
    write(store, |m| m.bind_step(flow, "first", other_inst, &moved));
    let rebound = read(store, |m| m.flow("acme", flow)).unwrap();
    assert_eq!(
        (rebound.steps[0].instance, rebound.steps[0].digest),
        (other_inst, moved)
    );
    assert_eq!(rebound.steps[1], stored.steps[1]);
}

fn recordings_canaries_and_worlds(store: &dyn MetadataStore) {
    use gantry_host::model::{Canary, CanaryState, Recording};
    // A revision's world: as recorded, empty when never recorded, none without the revision.
    let world = vec!["export gantry:connector/connector".to_string()];
    write(store, |m| {
        m.create_org("acme", 1)?;
        m.insert_version(&version("acme", "echo", "1.0.0", 1, b"one"))?;
        m.insert_version(&version("acme", "echo", "1.0.0", 2, b"two"))?;
        m.set_world("acme", "echo", "1.0.0", 2, &world)
    });
    assert_eq!(
        read(store, |m| m.world("acme", "echo", "1.0.0", 2)),
        Some(world)
    );
    assert_eq!(
        read(store, |m| m.world("acme", "echo", "1.0.0", 1)),
        Some(Vec::new())
    );
    assert_eq!(read(store, |m| m.world("acme", "echo", "1.0.0", 3)), None);

    // Run ids: reserved ones are taken as given, later ones come after them.
    let flow = write(store, |m| m.insert_flow("acme", "relay", "ops", 2));
    let (first, second) = write(store, |m| Ok((m.reserve_run_id()?, m.reserve_run_id()?)));
    assert!(second > first);
    let run = |id| Run {
        id,
        flow_id: flow,
        status: RunStatus::Failed,
        started_at: 5,
        duration_us: 10,
        steps: Vec::new(),
        output: None,
        error: None,
    };
    assert_eq!(write(store, |m| m.insert_run("acme", &run(second))), second);
    let next = write(store, |m| m.insert_run("acme", &run(0)));
    assert!(next > second, "{next} after {second}");

    // Recordings: the newest `keep` of a step, newest first, scoped and paged.
    write(store, |m| m.set_flow_record("acme", flow, true));
    assert!(read(store, |m| m.flow("acme", flow)).unwrap().record);
    let recording = |n: i64| Recording {
        id: 0,
        flow: Some(flow),
        step: Some("call".into()),
        run: Some(n),
        operation: "echo".into(),
        digest: Digest::of(b"one"),
        at: n,
        input: serde_json::value::to_raw_value(&json!({"n": n})).unwrap(),
        output: None,
        error: Some("boom".into()),
        exchanges: Vec::new(),
        incomplete: None,
    };
    let ids = write(store, |m| {
        (1..=4)
            .map(|n| m.insert_recording("acme", &recording(n), 3))
            .collect::<Result<Vec<_>>>()
    });
    let kept = read(store, |m| m.recordings("acme", flow, "call", i64::MAX, 10));
    assert_eq!(
        kept.iter().map(|r| (r.id, r.run)).collect::<Vec<_>>(),
        [(ids[3], Some(4)), (ids[2], Some(3)), (ids[1], Some(2))]
    );
    assert_eq!(kept[0].input.get(), r#"{"n":4}"#);
    let older = read(store, |m| m.recordings("acme", flow, "call", ids[2], 10));
    assert_eq!(older.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    assert!(
        read(store, |m| m.recordings(
            "globex",
            flow,
            "call",
            i64::MAX,
            10
        ))
        .is_empty()
    );
    assert!(read(store, |m| m.recordings("acme", flow, "other", i64::MAX, 10)).is_empty());

    // Canaries: one per step, replaced by the next put, listed by flow, scoped.
    let canary = |state| Canary {
        flow,
        step: "call".into(),
        stable_instance: 1,
        stable_digest: Digest::of(b"one"),
        candidate_instance: 2,
        candidate_digest: Digest::of(b"two"),
        candidate: "acme/echo@1.0.0".into(),
        candidate_revision: 2,
        percent: 10,
        max_error_rate: 0.05,
        min_runs: 20,
        auto_promote: true,
        state,
        started_by: "ops".into(),
        started_at: 6,
        ended_at: None,
        stable_runs: 3,
        stable_errors: 0,
        candidate_runs: 1,
        candidate_errors: 1,
        candidate_run_ids: vec![next],
        candidate_failed_runs: vec![next],
    };
    assert_eq!(read(store, |m| m.canary("acme", flow, "call")), None);
    write(store, |m| {
        m.put_canary("acme", &canary(CanaryState::Running))
    });
    write(store, |m| {
        m.put_canary("acme", &canary(CanaryState::RolledBack))
    });
    assert_eq!(
        read(store, |m| m.canary("acme", flow, "call")),
        Some(canary(CanaryState::RolledBack))
    );
    assert_eq!(
        read(store, |m| m.flow_canaries("acme", flow)),
        [canary(CanaryState::RolledBack)]
    );
    assert!(read(store, |m| m.flow_canaries("globex", flow)).is_empty());
}

fn runs_come_newest_first(store: &dyn MetadataStore) {
    let run = |flow| Run {
        id: 0,
        flow_id: flow,
        status: RunStatus::Succeeded,
        started_at: 4,
        duration_us: 1500,
        steps: Vec::new(),
        output: Some(
            serde_json::value::to_raw_value(&json!({"n": 12345678901234567890u64})).unwrap(),
        ),
        error: None,
    };
    let (flow, ids) = write(store, |m| {
        m.create_org("acme", 1)?;
        let flow = m.insert_flow("acme", "relay", "ops", 3)?;
        let other = m.insert_flow("acme", "other", "ops", 3)?;
        let mut ids = Vec::new();
        for f in [flow, other, flow, flow] {
            ids.push(m.insert_run("acme", &run(f))?);
        }
        Ok((flow, ids))
    });
    let runs = read(store, |m| m.runs("acme", flow, i64::MAX, 2));
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[3], ids[2]]
    );
    assert_eq!(
        runs[0].output.as_ref().unwrap().get(),
        r#"{"n":12345678901234567890}"#,
        "kept as written"
    );
    assert_eq!(runs[0].duration_us, 1500);
    let older = read(store, |m| m.runs("acme", flow, ids[2], 10));
    assert_eq!(older.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(read(store, |m| m.runs("globex", flow, i64::MAX, 10)).is_empty());
}

/// Console sessions: found by hash, deleted at sign-out, swept once ended.
fn sessions_are_kept_by_hash_and_swept(store: &dyn MetadataStore) {
    let token = write(store, |m| {
        m.create_org("acme", 1)?;
        m.insert_token(
            &TokenInfo {
                id: 0,
                org: Some("acme".into()),
                role: Role::Admin,
                label: "a".into(),
                created_by: "ops".into(),
                created_at: 1,
                last_used_at: None,
                expires_at: None,
                revoked_at: None,
            },
            "token-hash",
        )
    });
    let session = |expires_at| Session {
        token_id: token,
        csrf: "form".into(),
        created_at: 10,
        expires_at,
    };
    write(store, |m| m.insert_session("s1", &session(100), 10));
    write(store, |m| m.insert_session("s2", &session(200), 10));
    assert_eq!(read(store, |m| m.session("s1")), Some(session(100)));
    assert!(read(store, |m| m.session("s3")).is_none());
    assert!(
        store
            .write(|m| m.insert_session("s1", &session(300), 10))
            .is_err(),
        "one per hash"
    );
    // A session opened at 150 sweeps those that ended by then.
    write(store, |m| m.insert_session("s3", &session(400), 150));
    assert!(read(store, |m| m.session("s1")).is_none());
    assert_eq!(read(store, |m| m.session("s2")), Some(session(200)));
    write(store, |m| m.delete_session("s2"));
    assert!(read(store, |m| m.session("s2")).is_none());
    assert!(read(store, |m| m.session("s3")).is_some());
}

fn tokens_and_the_audit_log(store: &dyn MetadataStore) {
    let token = |org: Option<&str>, role, label: &str| TokenInfo {
        id: 0,
        org: org.map(str::to_string),
        role,
        label: label.into(),
        created_by: "ops".into(),
        created_at: 5,
        last_used_at: Some(99),
        expires_at: None,
        revoked_at: None,
    };
    let ci = TokenInfo {
        expires_at: Some(50),
        ..token(Some("acme"), Role::Publisher, "ci")
    };
    let (id, platform) = write(store, |m| {
        m.create_org("acme", 1)?;
        m.create_org("globex", 1)?;
        let id = m.insert_token(&ci, "hash-1")?;
        let platform = m.insert_token(&token(None, Role::Platform, "root"), "hash-p")?;
        Ok((id, platform))
    });
    let stored = read(store, |m| m.token("hash-1")).unwrap();
    assert_eq!(
        stored,
        TokenInfo {
            id,
            last_used_at: None,
            ..ci.clone()
        },
        "kept as given, but for its id and last use"
    );
    assert_eq!(read(store, |m| m.token_by_id(id)), Some(stored.clone()));
    assert_eq!(read(store, |m| m.token("hash-2")), None);
    assert!(
        store
            .write(|m| m.insert_token(&token(Some("globex"), Role::Admin, "x"), "hash-1"))
            .is_err(),
        "a hash names one token"
    );
    assert!(
        store
            .write(|m| m.insert_token(&token(Some("acme"), Role::Platform, "x"), "hash-3"))
            .is_err(),
        "a platform token has no organisation"
    );
    assert!(
        store
            .write(|m| m.insert_token(&token(None, Role::Admin, "x"), "hash-4"))
            .is_err(),
        "an organisation's token has one"
    );
    let ids = |org: Option<&str>, after| {
        read(store, |m| m.tokens(org, after, 10))
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Some("acme"), 0), [id]);
    assert_eq!(ids(None, 0), [platform], "platform tokens apart");
    assert!(ids(Some("globex"), 0).is_empty());
    assert!(ids(Some("acme"), id).is_empty());
    write(store, |m| m.revoke_token(id, 70));
    write(store, |m| m.revoke_token(id, 80));
    write(store, |m| m.set_tokens_used(&[(id, 60), (platform, 10)]));
    write(store, |m| m.set_tokens_used(&[(id, 55)]));
    let stored = read(store, |m| m.token("hash-1")).unwrap();
    assert_eq!(stored.revoked_at, Some(70), "the first revocation stands");
    assert_eq!(
        stored.last_used_at,
        Some(60),
        "an earlier use does not go back"
    );
    let entry = |org: &str, action: &str| AuditEntry {
        id: 0,
        org: org.into(),
        actor: "ops".into(),
        at: 7,
        action: action.into(),
        subject: "install 1".into(),
        before: json!(null),
        after: json!({"k": [1, 2]}),
    };
    write(store, |m| {
        for (org, action) in [("acme", "a"), ("globex", "b"), ("acme", "c")] {
            m.append_audit(&entry(org, action))?;
        }
        Ok(())
    });
    let log = read(store, |m| m.audit_log("acme", 0, 10));
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    assert_eq!(
        log[0],
        AuditEntry {
            id: log[0].id,
            ..entry("acme", "a")
        }
    );
    assert_eq!(read(store, |m| m.audit_log("acme", log[0].id, 10)).len(), 1);
}

fn blobs_are_content_addressed(store: &dyn BlobStore) {
    let bytes = b"component bytes";
    let digest = Digest::of(bytes);
    assert_eq!(store.get(&digest).unwrap(), None);
    store.put(&digest, bytes).unwrap();
    store.put(&digest, bytes).unwrap(); // idempotent
    assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&bytes[..]));
    assert!(
        store.put(&Digest::of(b"other"), bytes).is_err(),
        "bytes must match their digest"
    );
    assert_eq!(store.digests().unwrap(), vec![digest]);
    assert_eq!(store.sweep().unwrap(), vec![digest]);
    store.delete(&digest).unwrap();
    store.delete(&digest).unwrap(); // absent is not an error
    assert_eq!(store.get(&digest).unwrap(), None);
    assert!(store.sweep().unwrap().is_empty());
}

/// The SQLite and PostgreSQL indexes answer every search as the in-memory store's plain scan
/// does, over a generated marketplace: words common and rare, prefixes, tags, publishers, and
/// every page.
#[test]
fn the_sql_indexes_agree_with_a_plain_scan() {
    use gantry_bench::market::{self, COMMON, Shape, TAGS};
    let shape = Shape {
        orgs: 12,
        connectors: 300,
        versions_per_connector: 4,
    };
    let sqlite = sqlite();
    let postgres = postgres();
    let memory = memory();
    for backend in [&sqlite, &postgres, &memory] {
        market::generate(&*backend.store, shape, 11).unwrap();
    }
    let mut searches = vec![Search::default()];
    for text in [
        COMMON[0],
        COMMON[5],
        "ka",
        "k",
        &market::rare_word(3),
        "sync records",
        "zzz",
    ] {
        searches.push(Search {
            text: Some(text.to_string()),
            ..Search::default()
        });
    }
    for tag in [TAGS[0], TAGS[7], "none"] {
        searches.push(Search {
            tag: Some(tag.into()),
            ..Search::default()
        });
        searches.push(Search {
            text: Some(COMMON[1].into()),
            tag: Some(tag.into()),
            publisher: None,
        });
    }
    searches.push(Search {
        publisher: Some(market::org(3)),
        ..Search::default()
    });
    for viewer in [market::org(0), market::org(5), "outsider".to_string()] {
        for search in &searches {
            // Every page of 7 against the whole answer at once.
            let pages = |store: &dyn MetadataStore| {
                let mut all: Vec<(String, String)> = Vec::new();
                loop {
                    let after = all.last().map(|(o, n)| (o.as_str(), n.as_str()));
                    let page = read(store, |m| m.search(&viewer, search, after, 7));
                    let done = page.len() < 7;
                    all.extend(page);
                    if done {
                        return all;
                    }
                }
            };
            let expected = read(&*memory.store, |m| m.search(&viewer, search, None, 1000));
            assert_eq!(
                pages(&*sqlite.store),
                expected,
                "sqlite: {viewer} {search:?}"
            );
            assert_eq!(
                pages(&*postgres.store),
                expected,
                "postgres: {viewer} {search:?}"
            );
        }
    }
    // The generated marketplace gives these searches something to find.
    let found = |search: &Search| {
        read(&*memory.store, |m| {
            m.search(&market::org(0), search, None, 1000)
        })
        .len()
    };
    assert!(found(&searches[1]) > 10 && found(&searches[1]) < shape.connectors);
}
