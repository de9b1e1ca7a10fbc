//! The registry and the lifecycle rules of the seeds (Choreo, Patchworks), tenancy, bad input,
//! durability and secrets — through the `gantry-host` library, on a real SQLite file.

use crate::support::{connector, files_under, runtime};
use gantry_host::model::{
    Page, PublishOutcome, PublishRequest, Risk, RunStatus, Search, StepSpec, Update, UpdateMode,
    VersionState, Visibility,
};
use gantry_host::registry::compat::Severity;
use gantry_host::registry::{Error as RegistryError, FaultPoint};
use gantry_host::store::StoreError;
use gantry_host::{Registry, RegistryConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn open(dir: &Path) -> Registry {
    Registry::open(
        RegistryConfig {
            data_dir: dir.to_path_buf(),
            faults: None,
            blobs: None,
            metadata: None,
            ..RegistryConfig::default()
        },
        runtime().clone(),
    )
    .unwrap()
}

/// The same component with a custom section appended: other bytes, same behaviour and
/// `describe()` — what a rebuild of the same version looks like.
fn rebuilt(bytes: &[u8], marker: &str) -> Vec<u8> {
    let name = b"gantry-test-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(marker.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(payload.len() as u8); // LEB128 size (< 128)
    out.extend_from_slice(&payload);
    out
}

fn request(name: &str, version: &str, visibility: Visibility, bytes: Vec<u8>) -> PublishRequest {
    PublishRequest {
        name: name.into(),
        version: version.into(),
        visibility,
        tags: vec!["demo".into()],
        bytes,
    }
}

/// An update to `version` in `mode`, accepting `acknowledge`.
fn update_to(version: &str, mode: UpdateMode, acknowledge: &[Risk]) -> Update {
    Update {
        version: version.into(),
        mode,
        acknowledge: acknowledge.to_vec(),
        acknowledge_customisations_lost: false,
        carry_customisations: false,
    }
}

/// The vendor's 3.0.0 of echo, which keeps only the `echo` operation.
async fn publish_echo_v3(reg: &Registry) {
    reg.publish(
        "vendor",
        "dev@vendor",
        request("echo", "3.0.0", Visibility::Public, connector("echo-v3")),
    )
    .await
    .unwrap();
}

fn no_map() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn step(name: &str, instance: i64, operation: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        instance,
        operation: operation.into(),
        input: json!("${input}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreo_private_republish_keeps_pinned_flows_until_rebound() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("acme").unwrap();
    let first = connector("echo");
    let (outcome, v1) = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, first.clone()),
        )
        .await
        .unwrap();
    assert_eq!((outcome, v1.revision), (PublishOutcome::Created, 1));

    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), no_map())
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "relay",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap();
    assert_eq!(flow.steps[0].digest, v1.digest);

    // Republish the same private version with other bytes: a new revision.
    let second = rebuilt(&first, "2");
    let (outcome, v1r2) = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, second.clone()),
        )
        .await
        .unwrap();
    assert_eq!((outcome, v1r2.revision), (PublishOutcome::NewRevision, 2));
    assert_ne!(v1r2.digest, v1.digest);
    let (outcome, _) = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, second),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::Unchanged, "same bytes: no-op");

    // The flow keeps running the old revision…
    let run = reg
        .run_flow("acme", flow.id, json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.steps[0].digest, v1.digest);
    assert_eq!(run.output_value(), Some(json!({"n": 1})));
    let ran = &run.steps[0];
    assert_eq!(
        (ran.connector.as_deref(), ran.revision, ran.out_of_date),
        (Some("acme/echo@1.0.0"), Some(1), true),
        "the run says what it ran, and that it was behind"
    );

    // …and so does a direct call of the instance: it runs what its install pins, which shows
    // the newer revision as available.
    let (ran, _) = reg
        .invoke_instance("acme", instance.id, "echo", "{}")
        .await
        .unwrap();
    assert_eq!(*ran.digest(), v1.digest);
    let install = reg.get_install("acme", install.id).unwrap();
    assert_eq!((install.revision, install.revision_available), (1, Some(2)));
    let plan = reg.update_plan("acme", install.id, "1.0.0").unwrap();
    assert_eq!((plan.from_revision, plan.to_revision), (1, 2));
    // Where used: the install, its instance and the step, all on revision 1.
    let used = reg.install_usage("acme", install.id).unwrap();
    assert_eq!(used.installs[0].revision, 1);
    assert_eq!(used.instances[0].instance, instance.id);
    assert_eq!(
        (used.steps[0].step.as_str(), used.steps[0].revision),
        ("e", Some(1))
    );
    let on = |revision| {
        reg.version_usage("acme", "acme", "echo", "1.0.0", Some(revision))
            .unwrap()
            .installs
            .len()
    };
    assert_eq!((on(1), on(2)), (1, 0));
    assert_eq!(
        reg.version_usage("globex", "acme", "echo", "1.0.0", None)
            .unwrap_err()
            .code(),
        "not-found",
        "another organisation's private version"
    );
    // The step says what it is pinned to, and that it is behind.
    let shown = &reg.get_flow("acme", flow.id).unwrap().steps[0];
    assert_eq!(
        (
            shown.connector.as_deref(),
            shown.revision,
            shown.out_of_date
        ),
        (Some("acme/echo@1.0.0"), Some(1), true)
    );
    assert!(plan.risks.is_empty(), "{:?}", plan.risks);
    // A rebind to what the instance runs changes nothing yet…
    let rebound = reg
        .rebind_step("acme", "ops@acme", flow.id, "e", None)
        .unwrap();
    assert_eq!(rebound.steps[0].digest, v1.digest);
    // …the explicit update moves the install and its steps; then the old revision, pinned by
    // nothing, is collected.
    let moved = reg
        .update(
            "acme",
            "ops@acme",
            install.id,
            &update_to("1.0.0", UpdateMode::Overwrite, &[]),
        )
        .unwrap();
    assert_eq!((moved.revision, moved.revision_available), (2, None));
    let shown = &reg.get_flow("acme", flow.id).unwrap().steps[0];
    assert_eq!((shown.revision, shown.out_of_date), (Some(2), false));
    assert_eq!((on(1), on(2)), (0, 1));
    let (ran, _) = reg
        .invoke_instance("acme", instance.id, "echo", "{}")
        .await
        .unwrap();
    assert_eq!(*ran.digest(), v1r2.digest);
    let run = reg
        .run_flow("acme", flow.id, json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(run.steps[0].digest, v1r2.digest);
    let blobs = files_under(&dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "old revision's blob removed: {blobs:?}");
    assert!(blobs[0].ends_with(v1r2.digest.hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreo_public_versions_are_immutable_and_deprecation_keeps_existing_flows() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("vendor").unwrap();
    reg.create_org("acme").unwrap();
    let v1_bytes = connector("echo");
    let (_, v1) = reg
        .publish(
            "vendor",
            "dev@vendor",
            request("echo", "1.0.0", Visibility::Public, v1_bytes.clone()),
        )
        .await
        .unwrap();
    let err = reg
        .publish(
            "vendor",
            "dev@vendor",
            request("echo", "1.0.0", Visibility::Public, rebuilt(&v1_bytes, "x")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    let err = reg
        .publish(
            "vendor",
            "dev@vendor",
            request(
                "echo",
                "1.0.0",
                Visibility::Private,
                rebuilt(&v1_bytes, "y"),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        "conflict",
        "a public version cannot be made private: {err}"
    );
    let (outcome, _) = reg
        .publish(
            "vendor",
            "dev@vendor",
            request("echo", "1.0.0", Visibility::Public, v1_bytes),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::Unchanged);

    let install = reg
        .install("acme", "ops@acme", "vendor", "echo", "1.0.0")
        .unwrap();
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), no_map())
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "relay",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap();

    // A new public version, and the old one deprecated.
    let (_, v2) = reg
        .publish(
            "vendor",
            "dev@vendor",
            request("echo", "2.0.0", Visibility::Public, connector("echo-v2")),
        )
        .await
        .unwrap();
    reg.set_state(
        "vendor",
        "dev@vendor",
        "echo",
        "1.0.0",
        VersionState::Deprecated,
    )
    .unwrap();

    let run = reg
        .run_flow("acme", flow.id, json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        run.steps[0].digest, v1.digest,
        "existing flows still run the old version"
    );

    let err = reg
        .install("acme", "ops@acme", "vendor", "echo", "1.0.0")
        .unwrap_err();
    assert_eq!(err.code(), "deprecated", "{err}");
    let err = reg
        .create_flow(
            "acme",
            "ops@acme",
            "new",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        "deprecated",
        "a new binding to it is refused: {err}"
    );
    let err = reg
        .rebind_step("acme", "ops@acme", flow.id, "e", None)
        .unwrap_err();
    assert_eq!(err.code(), "deprecated");

    let listings = reg
        .search("acme", &Search::default(), &Page::default())
        .unwrap();
    let echo = listings.iter().find(|l| l.name == "echo").unwrap();
    assert_eq!(echo.latest.version, v2.version);
    assert!(
        echo.versions
            .iter()
            .any(|v| v.version.to_string() == "1.0.0" && v.deprecated)
    );

    // Blocked: runs that need it fail with a clear error, recorded.
    reg.set_state(
        "vendor",
        "sec@vendor",
        "echo",
        "1.0.0",
        VersionState::Blocked,
    )
    .unwrap();
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert_eq!(error.code, "blocked");
    assert!(
        error.message.contains("vendor/echo@1.0.0"),
        "{}",
        error.message
    );
    assert_eq!(
        reg.runs("acme", flow.id, &Page::default()).unwrap().len(),
        2
    );

    // A public version is never deleted, pinned or not: its digest stays bound to it (deleting
    // and republishing other bytes would get round its immutability).
    for version in ["1.0.0", "2.0.0"] {
        let err = reg
            .delete_version("vendor", "dev@vendor", "echo", version)
            .unwrap_err();
        assert_eq!(err.code(), "public-permanent", "{err}");
    }
    assert_eq!(
        reg.versions("acme", "vendor", "echo", &Page::default())
            .unwrap()
            .len(),
        2
    );
    // In pages, oldest first.
    let page = |after: Option<&str>| {
        let page = Page {
            limit: Some(1),
            after: after.map(Into::into),
        };
        reg.versions("acme", "vendor", "echo", &page)
            .unwrap()
            .into_iter()
            .map(|v| v.version.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None), ["1.0.0"]);
    assert_eq!(page(Some("1.0.0")), ["2.0.0"]);
    assert!(page(Some("2.0.0")).is_empty());
    // A private version nothing pins can be deleted, and its blob goes with it.
    reg.publish(
        "vendor",
        "dev@vendor",
        request("echo", "3.0.0", Visibility::Private, connector("echo-v3")),
    )
    .await
    .unwrap();
    assert_eq!(files_under(&dir.path().join("blobs")).len(), 3);
    reg.delete_version("vendor", "dev@vendor", "echo", "3.0.0")
        .unwrap();
    assert_eq!(
        reg.versions("vendor", "vendor", "echo", &Page::default())
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        files_under(&dir.path().join("blobs")).len(),
        2,
        "3.0.0's blob removed"
    );
    let actions: Vec<_> = reg
        .audit_log("vendor", &Page::default())
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.iter().filter(|a| *a == "set-state").count() == 2,
        "{actions:?}"
    );
}

/// vendor publishes echo 1.0.0 and 2.0.0 (public); acme installs 1.0.0, customises it, creates
/// an instance with a credential and a flow through it.
async fn patchworks_setup(
    reg: &Registry,
) -> (
    gantry_host::model::Install,
    gantry_host::model::Instance,
    gantry_host::model::Flow,
) {
    reg.create_org("vendor").unwrap();
    reg.create_org("acme").unwrap();
    reg.publish(
        "vendor",
        "dev@vendor",
        request("echo", "1.0.0", Visibility::Public, connector("echo")),
    )
    .await
    .unwrap();
    let install = reg
        .install("acme", "ops@acme", "vendor", "echo", "1.0.0")
        .unwrap();
    assert_eq!(install.modified_by, None);
    let install = reg
        .customise(
            "acme",
            "alice@acme",
            install.id,
            BTreeMap::from([("greeting".into(), "hi".into())]),
        )
        .unwrap();
    assert_eq!(install.modified_by.as_deref(), Some("alice@acme"));
    assert!(install.modified_at.is_some());
    assert_eq!(install.update_available, None);

    let secrets = BTreeMap::from([("token".to_string(), "s3cr3t-token".to_string())]);
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), secrets)
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "ctx",
            vec![step("c", instance.id, "context")],
        )
        .unwrap();
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(
        run.output_value(),
        Some(json!({"greeting": "hi", "token_length": 12})),
        "{run:?}"
    );

    reg.publish(
        "vendor",
        "dev@vendor",
        request("echo", "2.0.0", Visibility::Public, connector("echo-v2")),
    )
    .await
    .unwrap();
    let install = reg.get_install("acme", install.id).unwrap();
    assert_eq!(
        install
            .update_available
            .as_ref()
            .map(|v| v.to_string())
            .as_deref(),
        Some("2.0.0")
    );
    (install, instance, flow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchworks_overwrite_needs_acknowledgement_keeps_instances_and_moves_flows() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (install, instance, flow) = patchworks_setup(&reg).await;

    let overwrite = |ack| Update {
        version: "2.0.0".into(),
        mode: UpdateMode::Overwrite,
        acknowledge_customisations_lost: ack,
        acknowledge: Vec::new(),
        carry_customisations: false,
    };
    let err = reg
        .update("acme", "ops@acme", install.id, &overwrite(false))
        .unwrap_err();
    assert_eq!(err.code(), "acknowledgement-required");
    assert!(err.to_string().contains("alice@acme"), "{err}");
    assert_eq!(
        reg.get_install("acme", install.id).unwrap(),
        install,
        "nothing changed"
    );

    let updated = reg
        .update("acme", "ops@acme", install.id, &overwrite(true))
        .unwrap();
    assert_eq!(updated.id, install.id);
    assert_eq!(updated.version.to_string(), "2.0.0");
    assert!(updated.customisations.is_empty(), "customisations dropped");
    assert_eq!(updated.update_available, None);
    assert_eq!(
        reg.instances("acme", &Page::default()).unwrap(),
        vec![instance.clone()],
        "instances kept"
    );

    let v2 = reg.version("acme", "vendor", "echo", "2.0.0").unwrap();
    assert_eq!(
        reg.get_flow("acme", flow.id).unwrap().steps[0].digest,
        v2.digest
    );
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    // v2 output, the default greeting (customisation gone), the same credential (no re-auth).
    assert_eq!(
        run.output_value(),
        Some(json!({"version": "2.0.0", "echo": {"greeting": "hello", "token_length": 12}}))
    );
    let entry = reg
        .audit_log("acme", &Page::default())
        .unwrap()
        .into_iter()
        .find(|e| e.action == "update-overwrite")
        .unwrap();
    assert_eq!(entry.before["customisations"], json!({"greeting": "hi"}));
    assert_eq!(entry.after["rebound_steps"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_goes_ahead_only_with_its_risks_acknowledged_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (customised, _, _) = patchworks_setup(&reg).await;
    publish_echo_v3(&reg).await;
    let update = |version: &str, mode, acknowledge: &[Risk], carry| Update {
        carry_customisations: carry,
        ..update_to(version, mode, acknowledge)
    };
    let refused = |result: Result<gantry_host::model::Install, RegistryError>, naming: &str| {
        let err = result.unwrap_err();
        assert_eq!(err.code(), "acknowledgement-required", "{err}");
        assert!(err.to_string().contains(naming), "{err}");
    };
    // An install no flow uses, moving to 3.0.0 (which drops two operations): the breaking
    // changes must be accepted by name, each listed.
    let plain = reg
        .install("acme", "ops@acme", "vendor", "echo", "1.0.0")
        .unwrap();
    refused(
        reg.update(
            "acme",
            "ops@acme",
            plain.id,
            &update(
                "3.0.0",
                UpdateMode::Overwrite,
                &[Risk::CustomisationsLost],
                false,
            ),
        ),
        "breaking-changes (operation delay: removed; operation context: removed)",
    );
    let moved = reg
        .update(
            "acme",
            "ops@acme",
            plain.id,
            &update(
                "3.0.0",
                UpdateMode::Overwrite,
                &[Risk::BreakingChanges],
                false,
            ),
        )
        .unwrap();
    assert_eq!(moved.version.to_string(), "3.0.0");
    // Going back down is a downgrade, whichever the mode.
    for mode in [UpdateMode::Overwrite, UpdateMode::Alongside] {
        refused(
            reg.update(
                "acme",
                "ops@acme",
                plain.id,
                &update("1.0.0", mode, &[], false),
            ),
            "downgrade (vendor/echo@1.0.0 is lower than vendor/echo@3.0.0)",
        );
    }
    let down = reg
        .update(
            "acme",
            "ops@acme",
            plain.id,
            &update("1.0.0", UpdateMode::Overwrite, &[Risk::Downgrade], false),
        )
        .unwrap();
    assert_eq!(down.version.to_string(), "1.0.0");
    // Alongside carries the grants, and the customisations when asked; the old install is
    // untouched.
    reg.grant_outbound(
        "acme",
        "admin@acme",
        customised.id,
        vec!["https://api.example.com".into()],
    )
    .unwrap();
    let next = reg
        .update(
            "acme",
            "ops@acme",
            customised.id,
            &update("2.0.0", UpdateMode::Alongside, &[], true),
        )
        .unwrap();
    assert_ne!(next.id, customised.id);
    assert_eq!(next.outbound, ["https://api.example.com"]);
    assert_eq!(next.customisations["greeting"], "hi");
    let old = reg.get_install("acme", customised.id).unwrap();
    assert_eq!(old.version.to_string(), "1.0.0");
    assert_eq!(old.customisations["greeting"], "hi");
}

/// The seed story with a plan: the vendor's 4.0.0 drops an operation a flow uses and adds a
/// required secret. The plan names the step and the instance; the overwrite is refused however
/// much is acknowledged (never a silently broken flow); alongside, a new instance with the new
/// credential and a rebind move the flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_update_that_needs_a_new_credential_is_planned_then_done_alongside() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (install, instance, context_flow) = patchworks_setup(&reg).await;
    let echo_flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "echo",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap();
    reg.publish(
        "vendor",
        "dev@vendor",
        request("echo", "4.0.0", Visibility::Public, connector("echo-v4")),
    )
    .await
    .unwrap();
    let plan = reg.update_plan("acme", install.id, "4.0.0").unwrap();
    assert_eq!(
        plan.risks,
        [
            Risk::CustomisationsLost,
            Risk::BreakingChanges,
            Risk::MissingCredentials
        ]
    );
    let lost: Vec<(&str, bool)> = plan
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.operation_removed))
        .collect();
    assert_eq!(lost, [("c", true), ("e", false)]);
    assert_eq!(plan.instances_lacking.len(), 1);
    assert_eq!(plan.instances_lacking[0].instance, instance.id);
    assert_eq!(plan.instances_lacking[0].missing, ["secret api_key"]);
    assert!(
        plan.changes
            .iter()
            .any(|c| c.subject == "secret api_key" && c.severity == Severity::Breaking)
    );
    // Every risk acknowledged, and still refused: first the step losing `context`, then — with
    // that step gone to another install — the instance lacking `api_key`.
    let all = Update {
        version: "4.0.0".into(),
        mode: UpdateMode::Overwrite,
        acknowledge: plan.risks.clone(),
        acknowledge_customisations_lost: false,
        carry_customisations: false,
    };
    let err = reg
        .update("acme", "ops@acme", install.id, &all)
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let other = reg
        .install("acme", "ops@acme", "vendor", "echo", "2.0.0")
        .unwrap();
    let spare = reg
        .create_instance("acme", "ops@acme", other.id, "spare", no_map(), no_map())
        .unwrap();
    reg.rebind_step("acme", "ops@acme", context_flow.id, "c", Some(spare.id))
        .unwrap();
    let err = reg
        .update("acme", "ops@acme", install.id, &all)
        .unwrap_err();
    assert_eq!(err.code(), "credentials-needed", "{err}");
    assert!(err.to_string().contains("lacks secret api_key"), "{err}");
    assert_eq!(
        reg.get_install("acme", install.id)
            .unwrap()
            .version
            .to_string(),
        "1.0.0",
        "nothing moved"
    );
    // Alongside: a new install, an instance with the credential, the step rebound to it.
    let next = reg
        .update(
            "acme",
            "ops@acme",
            install.id,
            &Update {
                mode: UpdateMode::Alongside,
                ..all.clone()
            },
        )
        .unwrap();
    let keyed = reg
        .create_instance(
            "acme",
            "ops@acme",
            next.id,
            "keyed",
            no_map(),
            BTreeMap::from([("api_key".to_string(), "k".to_string())]),
        )
        .unwrap();
    reg.rebind_step("acme", "ops@acme", echo_flow.id, "e", Some(keyed.id))
        .unwrap();
    let run = reg
        .run_flow("acme", echo_flow.id, json!({"hello": 4}))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output_value(), Some(json!({"hello": 4})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaking_change_needs_a_major_version() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("vendor").unwrap();
    let publish = |version: &str, sample: &str| {
        reg.publish(
            "vendor",
            "dev@vendor",
            request("echo", version, Visibility::Public, connector(sample)),
        )
    };
    publish("1.0.0", "echo").await.unwrap();
    // 1.1.0 drops `delay` and `context`: refused, each reason named, nothing stored.
    let err = publish("1.1.0", "echo-slim").await.unwrap_err();
    assert_eq!(err.code(), "breaking-change");
    let said = err.to_string();
    for reason in [
        "operation delay: removed",
        "operation context: removed",
        "uses 1.0.0",
    ] {
        assert!(said.contains(reason), "{said}");
    }
    assert_eq!(
        reg.versions("vendor", "vendor", "echo", &Page::default())
            .unwrap()
            .len(),
        1
    );
    // The same change as a new major version is what a major version is for.
    publish("3.0.0", "echo-v3").await.unwrap();
    // The gate compares with the newest lower version: with 3.0.0 published, 1.1.0 is still
    // weighed against 1.0.0.
    assert_eq!(
        publish("1.1.0", "echo-slim").await.unwrap_err().code(),
        "breaking-change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_that_would_break_a_bound_step_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (install, instance, flow) = patchworks_setup(&reg).await;
    publish_echo_v3(&reg).await;
    // The plan says so before anything changes: the step that loses its operation, what the
    // version drops, the customisations an overwrite loses (and who set them).
    let plan = reg.update_plan("acme", install.id, "3.0.0").unwrap();
    assert_eq!(
        (plan.from.as_str(), plan.to.as_str()),
        ("vendor/echo@1.0.0", "vendor/echo@3.0.0")
    );
    assert_eq!(
        plan.risks,
        [Risk::CustomisationsLost, Risk::BreakingChanges]
    );
    assert_eq!(plan.customisations_lost["greeting"], "hi");
    assert_eq!(plan.customised_by.as_deref(), Some("alice@acme"));
    assert_eq!(plan.steps.len(), 1);
    let moved = &plan.steps[0];
    assert_eq!(
        (
            moved.flow,
            moved.step.as_str(),
            moved.instance,
            moved.operation_removed
        ),
        (flow.id, "c", instance.id, true)
    );
    let breaking: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.severity == Severity::Breaking)
        .map(|c| format!("{}: {}", c.subject, c.reason))
        .collect();
    assert_eq!(
        breaking,
        ["operation delay: removed", "operation context: removed"]
    );
    assert!(plan.instances_lacking.is_empty() && plan.new_outbound_hosts.is_empty());
    // The world each was built against, as recorded at publish.
    for world in [&plan.from_world, &plan.to_world] {
        assert!(
            world.contains(&"export gantry:connector/connector@0.1.0".to_string()),
            "{world:?}"
        );
    }
    // 3.0.0 no longer reads its config or secrets, so no longer imports them.
    let config = "import wasi:config/store@0.2.0-rc.1".to_string();
    assert!(plan.from_world.contains(&config) && !plan.to_world.contains(&config));
    // To 2.0.0 nothing breaks; back down to 1.0.0 from there would be a downgrade.
    let plan = reg.update_plan("acme", install.id, "2.0.0").unwrap();
    assert_eq!(plan.risks, [Risk::CustomisationsLost]);
    assert!(plan.steps.iter().all(|s| !s.operation_removed));
    assert_eq!(
        reg.update_plan("acme", install.id, "9.9.9")
            .unwrap_err()
            .code(),
        "not-found"
    );
    assert_eq!(
        reg.update_plan("globex", install.id, "3.0.0")
            .unwrap_err()
            .code(),
        "not-found",
        "another organisation's install"
    );
    let overwrite = Update {
        version: "3.0.0".into(),
        mode: UpdateMode::Overwrite,
        acknowledge_customisations_lost: true,
        acknowledge: Vec::new(),
        carry_customisations: false,
    };
    let err = reg
        .update("acme", "ops@acme", install.id, &overwrite)
        .unwrap_err();
    assert_eq!(err.code(), "conflict");
    assert!(err.to_string().contains("step `c` uses `context`"), "{err}");
    assert_eq!(
        reg.get_install("acme", install.id)
            .unwrap()
            .version
            .to_string(),
        "1.0.0"
    );
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "nothing moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchworks_alongside_changes_nothing_until_steps_are_rebound() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (install, instance, flow) = patchworks_setup(&reg).await;
    let v1 = reg.version("acme", "vendor", "echo", "1.0.0").unwrap();

    let new = reg
        .update(
            "acme",
            "ops@acme",
            install.id,
            &Update {
                version: "2.0.0".into(),
                mode: UpdateMode::Alongside,
                acknowledge_customisations_lost: false,
                acknowledge: Vec::new(),
                carry_customisations: false,
            },
        )
        .unwrap();
    assert_ne!(new.id, install.id);
    assert_eq!(reg.installs("acme", &Page::default()).unwrap().len(), 2);
    let old = reg.get_install("acme", install.id).unwrap();
    assert_eq!(
        (old.version.to_string(), old.customisations.len()),
        ("1.0.0".into(), 1)
    );
    assert_eq!(
        reg.get_flow("acme", flow.id).unwrap().steps[0].digest,
        v1.digest
    );
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(
        run.output_value(),
        Some(json!({"greeting": "hi", "token_length": 12}))
    );

    // New instance of the new install (authenticated anew), then rebind the flow's steps.
    let secrets = BTreeMap::from([("token".to_string(), "new-token".to_string())]);
    let fresh = reg
        .create_instance("acme", "ops@acme", new.id, "main-v2", no_map(), secrets)
        .unwrap();
    assert_eq!(
        reg.rebind_install("acme", "ops@acme", install.id, fresh.id)
            .unwrap(),
        1
    );
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(
        run.output_value(),
        Some(json!({"version": "2.0.0", "echo": {"greeting": "hello", "token_length": 9}}))
    );
    assert_eq!(
        reg.get_instance("acme", instance.id).unwrap(),
        instance,
        "old instance untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_hides_private_things_of_other_organisations() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("acme").unwrap();
    reg.create_org("globex").unwrap();
    reg.publish(
        "acme",
        "dev@acme",
        request("echo", "1.0.0", Visibility::Private, connector("echo")),
    )
    .await
    .unwrap();
    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), no_map())
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "relay",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap();

    assert!(
        reg.search("globex", &Search::default(), &Page::default())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reg.search("acme", &Search::default(), &Page::default())
            .unwrap()
            .len(),
        1
    );
    let not_found =
        |r: Result<_, RegistryError>| assert_eq!(r.map(|_| ()).unwrap_err().code(), "not-found");
    not_found(
        reg.versions("globex", "acme", "echo", &Page::default())
            .map(|_| ()),
    );
    not_found(reg.version("globex", "acme", "echo", "1.0.0").map(|_| ()));
    not_found(
        reg.install("globex", "ops@globex", "acme", "echo", "1.0.0")
            .map(|_| ()),
    );
    not_found(reg.get_install("globex", install.id).map(|_| ()));
    not_found(reg.get_instance("globex", instance.id).map(|_| ()));
    not_found(reg.get_flow("globex", flow.id).map(|_| ()));
    not_found(reg.run_flow("globex", flow.id, json!({})).await.map(|_| ()));
    not_found(reg.runs("globex", flow.id, &Page::default()).map(|_| ()));
    not_found(
        reg.create_flow(
            "globex",
            "ops@globex",
            "steal",
            vec![step("e", instance.id, "echo")],
        )
        .map(|_| ()),
    );
    not_found(
        reg.rebind_step("globex", "ops@globex", flow.id, "e", None)
            .map(|_| ()),
    );
    assert!(
        reg.instances("globex", &Page::default())
            .unwrap()
            .is_empty()
    );
    assert!(reg.flows("globex", &Page::default()).unwrap().is_empty());
    assert!(
        reg.audit_log("globex", &Page::default())
            .unwrap()
            .is_empty()
    );
    not_found(
        reg.set_state("globex", "x", "echo", "1.0.0", VersionState::Blocked)
            .map(|_| ()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("acme").unwrap();
    let echo = connector("echo");
    let publish = |name: &str, version: &str, bytes: Vec<u8>| {
        reg.publish(
            "acme",
            "dev@acme",
            request(name, version, Visibility::Private, bytes),
        )
    };
    for version in ["1.0", "v1.0.0", "latest", ""] {
        assert_eq!(
            publish("echo", version, echo.clone())
                .await
                .unwrap_err()
                .code(),
            "invalid-version"
        );
    }
    let long = "e".repeat(300);
    for name in [
        "../echo",
        "echo/../../etc",
        "ec\0ho",
        long.as_str(),
        "Echo",
        "",
    ] {
        assert_eq!(
            publish(name, "1.0.0", echo.clone())
                .await
                .unwrap_err()
                .code(),
            "invalid-name",
            "{name:?}"
        );
    }
    let err = publish("other", "1.0.0", echo.clone()).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::DescribeMismatch { found, .. } if found == "echo@1.0.0"),
        "{err}"
    );
    assert_eq!(
        publish("echo", "1.0.1", echo.clone())
            .await
            .unwrap_err()
            .code(),
        "describe-mismatch"
    );
    assert_eq!(
        publish("echo", "1.0.0", b"junk".to_vec())
            .await
            .unwrap_err()
            .code(),
        "not-wasm"
    );
    let err = reg
        .publish(
            "nobody",
            "x",
            request("echo", "1.0.0", Visibility::Private, echo.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not-found");
    assert!(
        reg.search("acme", &Search::default(), &Page::default())
            .unwrap()
            .is_empty()
    );
    assert!(
        files_under(&dir.path().join("blobs")).is_empty(),
        "no blob stored"
    );

    publish("echo", "1.0.0", echo).await.unwrap();
    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), no_map())
        .unwrap();
    let err = reg
        .create_flow("acme", "ops@acme", "f", vec![step("e", 9999, "echo")])
        .unwrap_err();
    assert_eq!(err.code(), "not-found");
    let err = reg
        .create_flow(
            "acme",
            "ops@acme",
            "f",
            vec![step("e", instance.id, "nope")],
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid-input");
    let err = reg
        .create_instance(
            "acme",
            "ops@acme",
            install.id,
            "x",
            BTreeMap::from([("nope".into(), "1".into())]),
            no_map(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid-input");
    assert!(reg.flows("acme", &Page::default()).unwrap().is_empty());
    assert_eq!(reg.instances("acme", &Page::default()).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (flow_id, instance) = {
        let reg = open(dir.path());
        reg.create_org("acme").unwrap();
        reg.publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Public, connector("echo")),
        )
        .await
        .unwrap();
        let install = reg
            .install("acme", "ops@acme", "acme", "echo", "1.0.0")
            .unwrap();
        let secrets = BTreeMap::from([("token".to_string(), "abc".to_string())]);
        let instance = reg
            .create_instance("acme", "ops@acme", install.id, "main", no_map(), secrets)
            .unwrap();
        let flow = reg
            .create_flow(
                "acme",
                "ops@acme",
                "ctx",
                vec![step("c", instance.id, "context")],
            )
            .unwrap();
        reg.run_flow("acme", flow.id, json!({})).await.unwrap();
        (flow.id, instance)
    };
    let reg = open(dir.path());
    assert_eq!(
        reg.search(
            "acme",
            &Search {
                text: Some("echo".into()),
                ..Search::default()
            },
            &Page::default()
        )
        .unwrap()
        .len(),
        1
    );
    assert_eq!(reg.get_instance("acme", instance.id).unwrap(), instance);
    assert_eq!(
        reg.runs("acme", flow_id, &Page::default()).unwrap().len(),
        1
    );
    assert!(reg.audit_log("acme", &Page::default()).unwrap().len() >= 4);
    let run = reg.run_flow("acme", flow_id, json!({})).await.unwrap();
    assert_eq!(
        run.output_value(),
        Some(json!({"greeting": "hello", "token_length": 3})),
        "secrets decrypt after reopening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_publish_leaves_all_or_nothing() {
    for point in [FaultPoint::AfterBlobWrite, FaultPoint::BeforeCommit] {
        let dir = tempfile::tempdir().unwrap();
        let armed = Arc::new(AtomicBool::new(true));
        let hook = {
            let armed = armed.clone();
            Arc::new(move |at: FaultPoint| at == point && armed.load(Ordering::SeqCst))
        };
        let reg = Registry::open(
            RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                faults: Some(hook),
                blobs: None,
                metadata: None,
                ..RegistryConfig::default()
            },
            runtime().clone(),
        )
        .unwrap();
        reg.create_org("acme").unwrap();
        let err = reg
            .publish(
                "acme",
                "dev@acme",
                request("echo", "1.0.0", Visibility::Public, connector("echo")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "storage", "{point:?}: {err}");
        assert!(
            reg.versions("acme", "acme", "echo", &Page::default())
                .is_err(),
            "{point:?}: no row"
        );
        assert!(
            files_under(&dir.path().join("blobs")).is_empty(),
            "{point:?}: no orphan blob"
        );
        assert!(reg.audit_log("acme", &Page::default()).unwrap().is_empty());

        armed.store(false, Ordering::SeqCst);
        let (outcome, _) = reg
            .publish(
                "acme",
                "dev@acme",
                request("echo", "1.0.0", Visibility::Public, connector("echo")),
            )
            .await
            .unwrap();
        assert_eq!(outcome, PublishOutcome::Created);
        assert_eq!(files_under(&dir.path().join("blobs")).len(), 1);
    }

    // A crash between blob write and commit leaves an orphan file: reopening removes it.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let orphan = gantry_host::Digest::of(b"orphan");
    gantry_host::store::FsBlobStore::open(dir.path().join("blobs"))
        .unwrap()
        .put_blob(&orphan, b"orphan");
    assert_eq!(files_under(&dir.path().join("blobs")).len(), 1);
    drop(open(dir.path()));
    assert!(files_under(&dir.path().join("blobs")).is_empty());
}

trait PutBlob {
    fn put_blob(&self, digest: &gantry_host::Digest, bytes: &[u8]);
}

impl PutBlob for gantry_host::store::FsBlobStore {
    fn put_blob(&self, digest: &gantry_host::Digest, bytes: &[u8]) {
        gantry_host::store::BlobStore::put(self, digest, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_of_one_version_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(open(dir.path()));
    reg.create_org("acme").unwrap();
    let bytes = connector("echo");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (reg, bytes) = (reg.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            reg.publish(
                "acme",
                &format!("dev{i}@acme"),
                request("echo", "1.0.0", Visibility::Public, bytes),
            )
            .await
            .unwrap()
            .0
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == PublishOutcome::Created)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == PublishOutcome::Unchanged)
            .count(),
        19
    );
    assert_eq!(
        reg.versions("acme", "acme", "echo", &Page::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(reg.audit_log("acme", &Page::default()).unwrap().len(), 1);
    assert_eq!(files_under(&dir.path().join("blobs")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_appears_nowhere_but_inside_the_guest() {
    const SECRET: &str = "sup3r-s3cret-value-7f3a9c";
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("acme").unwrap();
    reg.publish(
        "acme",
        "dev@acme",
        request("echo", "1.0.0", Visibility::Private, connector("echo")),
    )
    .await
    .unwrap();
    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let secrets = BTreeMap::from([("token".to_string(), SECRET.to_string())]);
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), secrets)
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "ctx",
            vec![step("c", instance.id, "context")],
        )
        .unwrap();
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(
        run.output_value().unwrap()["token_length"],
        json!(SECRET.len()),
        "the guest got it"
    );

    let returned = [
        format!("{instance:?}"),
        serde_json::to_string(&instance).unwrap(),
        serde_json::to_string(&reg.instances("acme", &Page::default()).unwrap()).unwrap(),
        serde_json::to_string(&reg.audit_log("acme", &Page::default()).unwrap()).unwrap(),
        serde_json::to_string(&reg.runs("acme", flow.id, &Page::default()).unwrap()).unwrap(),
        serde_json::to_string(&reg.get_flow("acme", flow.id).unwrap()).unwrap(),
    ];
    for text in &returned {
        assert!(!text.contains(SECRET), "leaked in {text}");
    }
    assert!(returned[1].contains("token"), "the key is listed");
    let files = files_under(dir.path());
    // The scan below covers the database and its write-ahead log, where the instance row is.
    for name in ["gantry.db", "gantry.db-wal"] {
        assert!(
            files.contains(&dir.path().join(name)),
            "{name} is scanned: {files:?}"
        );
    }
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret found in {}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_appears_in_no_log_line_at_any_level() {
    const SECRET: &str = "log-probe-secret-91be4d";
    let logs = crate::support::captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.create_org("acme").unwrap();
    reg.publish(
        "acme",
        "dev@acme",
        request("echo", "1.0.0", Visibility::Private, connector("echo")),
    )
    .await
    .unwrap();
    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let secrets = BTreeMap::from([("token".to_string(), SECRET.to_string())]);
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), secrets)
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "ctx",
            vec![step("c", instance.id, "context")],
        )
        .unwrap();
    let run = reg.run_flow("acme", flow.id, json!({})).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);

    let logs = logs.text();
    assert!(
        logs.contains("flow run finished"),
        "the capture works: {logs}"
    );
    assert!(!logs.contains(SECRET), "secret in logs: {logs}");
}

/// Blobs in memory: stands in for an object store behind the `BlobStore` seam.
#[derive(Default)]
struct MemoryBlobs(std::sync::Mutex<std::collections::HashMap<gantry_host::Digest, Vec<u8>>>);

impl gantry_host::store::BlobStore for MemoryBlobs {
    fn put(&self, digest: &gantry_host::Digest, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().insert(*digest, bytes.to_vec());
        Ok(())
    }
    fn get(&self, digest: &gantry_host::Digest) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(digest).cloned())
    }
    fn delete(&self, digest: &gantry_host::Digest) -> std::io::Result<()> {
        self.0.lock().unwrap().remove(digest);
        Ok(())
    }
    fn sweep(&self) -> std::io::Result<Vec<gantry_host::Digest>> {
        self.digests()
    }

    fn digests(&self) -> std::io::Result<Vec<gantry_host::Digest>> {
        Ok(self.0.lock().unwrap().keys().copied().collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_blob_store_plugs_in() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(MemoryBlobs::default());
    let reg = Registry::open(
        RegistryConfig {
            data_dir: dir.path().to_path_buf(),
            faults: None,
            blobs: Some(blobs.clone()),
            metadata: None,
            ..RegistryConfig::default()
        },
        runtime().clone(),
    )
    .unwrap();
    reg.create_org("acme").unwrap();
    let (_, v) = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, connector("echo")),
        )
        .await
        .unwrap();
    assert!(blobs.0.lock().unwrap().contains_key(&v.digest));
    assert!(
        files_under(&dir.path().join("blobs")).is_empty(),
        "nothing on the local disk"
    );
    echo_flow(&reg, json!({"via": "memory"})).await;
}

/// Install acme's echo 1.0.0, make an instance and a one-step flow of it, and run the flow on
/// `input`; returns the instance and flow ids.
async fn echo_flow(reg: &Registry, input: serde_json::Value) -> (i64, i64) {
    let install = reg
        .install("acme", "ops@acme", "acme", "echo", "1.0.0")
        .unwrap();
    let instance = reg
        .create_instance("acme", "ops@acme", install.id, "main", no_map(), no_map())
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "ops@acme",
            "relay",
            vec![step("e", instance.id, "echo")],
        )
        .unwrap();
    let run = reg.run_flow("acme", flow.id, input.clone()).await.unwrap();
    assert_eq!(run.output_value(), Some(input));
    (instance.id, flow.id)
}

/// A metadata store in another place, with an outage switch: stands in for a PostgreSQL
/// backend behind the `MetadataStore` seam, and counts the units the registry runs.
pub(crate) struct RemoteMetadata {
    pub(crate) inner: gantry_host::store::SqliteStore,
    pub(crate) units: std::sync::atomic::AtomicUsize,
    pub(crate) down: AtomicBool,
}

impl gantry_host::store::MetadataStore for RemoteMetadata {
    fn unit(
        &self,
        access: gantry_host::store::Access,
        work: &mut dyn FnMut(&mut dyn gantry_host::store::Metadata) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::failed("the database is unreachable"));
        }
        self.units.fetch_add(1, Ordering::SeqCst);
        self.inner.unit(access, work)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_metadata_store_plugs_in() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let meta = Arc::new(RemoteMetadata {
        inner: gantry_host::store::SqliteStore::open(&elsewhere.path().join("meta.db")).unwrap(),
        units: Default::default(),
        down: AtomicBool::new(false),
    });
    let open_on = |meta: Arc<RemoteMetadata>| {
        Registry::open(
            RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                metadata: Some(meta),
                ..RegistryConfig::default()
            },
            runtime().clone(),
        )
    };
    let reg = open_on(meta.clone()).unwrap();
    reg.create_org("acme").unwrap();
    let token = reg
        .create_token(
            "acme",
            "admin@acme",
            gantry_host::model::Role::Operator,
            "ci",
            None,
        )
        .unwrap()
        .1;
    assert_eq!(reg.authenticate(&token).unwrap().unwrap().org, "acme");
    let echo = connector("echo");
    reg.publish(
        "acme",
        "dev@acme",
        request("echo", "1.0.0", Visibility::Private, echo.clone()),
    )
    .await
    .unwrap();
    let (instance, flow) = echo_flow(&reg, json!({"via": "elsewhere"})).await;
    assert!(meta.units.load(Ordering::SeqCst) >= 10);

    // Calls resolve from the pin table: once resolved, an instance call reads nothing, and a
    // flow run writes only its record — until a lifecycle change commits.
    let units = || meta.units.load(Ordering::SeqCst);
    let call = || async {
        let (_, result) = reg
            .invoke_instance("acme", instance, "echo", "{}")
            .await
            .unwrap();
        result.unwrap();
    };
    call().await;
    let before = units();
    for _ in 0..5 {
        call().await;
    }
    assert_eq!(units(), before, "no store round trip per call");
    reg.run_flow("acme", flow, json!({"n": 1})).await.unwrap();
    assert_eq!(units(), before + 1, "a run writes its record, nothing else");
    let install = reg.get_instance("acme", instance).unwrap().install_id;
    reg.grant_outbound("acme", "ops", install, vec!["https://example.com".into()])
        .unwrap();
    let before = units();
    call().await;
    assert!(
        units() > before,
        "a change makes the next call resolve anew"
    );
    assert!(
        !dir.path().join("gantry.db").exists(),
        "no metadata written past the store: {:?}",
        files_under(dir.path())
    );

    // An outage is a storage error, never a half-written publish or a crash.
    meta.down.store(true, Ordering::SeqCst);
    let blobs_before = files_under(&dir.path().join("blobs"));
    let err = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, rebuilt(&echo, "2")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "storage", "{err}");
    // What is resolved keeps running through the outage; what needs the store fails cleanly.
    let (_, result) = reg
        .invoke_instance("acme", instance, "echo", "{}")
        .await
        .unwrap();
    assert_eq!(result.unwrap().output, "{}");
    let err = reg
        .run_flow("acme", flow, json!({"n": 3}))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        "storage",
        "a run that cannot be recorded: {err}"
    );
    let err = reg.get_instance("acme", instance).unwrap_err();
    assert_eq!(err.code(), "storage", "{err}");
    assert_eq!(files_under(&dir.path().join("blobs")), blobs_before);
    meta.down.store(false, Ordering::SeqCst);

    // Everything is where the store keeps it: a new registry over it finds the flow and runs it.
    drop(reg);
    let reg = open_on(meta.clone()).unwrap();
    assert_eq!(
        reg.versions("acme", "acme", "echo", &Page::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        reg.runs("acme", flow, &Page::default()).unwrap().len(),
        2,
        "the first run and the one before the outage"
    );
    let run = reg.run_flow("acme", flow, json!({"n": 2})).await.unwrap();
    assert_eq!(run.output_value(), Some(json!({"n": 2})));
    assert!(
        reg.audit_log("acme", &Page::default())
            .unwrap()
            .iter()
            .any(|e| e.action == "create-flow")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_and_a_lost_key_is_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // A data directory an older Gantry made with the default umask.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let instance = {
        let reg = open(&data);
        reg.create_org("acme").unwrap();
        reg.publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, connector("echo")),
        )
        .await
        .unwrap();
        let install = reg
            .install("acme", "ops@acme", "acme", "echo", "1.0.0")
            .unwrap();
        let secrets = BTreeMap::from([("token".to_string(), "s3cret".to_string())]);
        let id = reg
            .create_instance("acme", "ops@acme", install.id, "main", no_map(), secrets)
            .unwrap()
            .id;
        assert_eq!(mode(&data), 0o700, "the data directory is tightened");
        for file in ["gantry.db", "gantry.db-wal", "secrets.key"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        id
    };

    // The key file is lost: opening refuses, and makes no new key that would seal new
    // credentials while the old ones stay unreadable.
    let key = data.join("secrets.key");
    let kept = root.path().join("secrets.key.backup");
    std::fs::rename(&key, &kept).unwrap();
    let open_err = |data: &Path| {
        Registry::open(
            RegistryConfig {
                data_dir: data.to_path_buf(),
                ..RegistryConfig::default()
            },
            runtime().clone(),
        )
        .expect_err("refused")
    };
    let err = open_err(&data);
    assert_eq!(err.code(), "secrets-key");
    assert!(err.to_string().contains("is missing"), "{err}");
    assert!(!key.exists(), "no new key was made");

    // Another key in its place is refused too.
    std::fs::write(&key, [9u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = open_err(&data);
    assert!(err.to_string().contains("were sealed with key"), "{err}");

    // The right key back: everything opens and the credential reaches the guest.
    std::fs::rename(&kept, &key).unwrap();
    let reg = open(&data);
    let (_, result) = reg
        .invoke_instance("acme", instance, "context", "{}")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&result.unwrap().output).unwrap()["token_length"],
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_keeps_a_bounded_set_of_connectors_loaded() {
    for limits in [
        // At most one loaded: the second connector called pushes the first out.
        gantry_host::registry::LoadedLimits {
            max: 1,
            idle: std::time::Duration::from_secs(600),
        },
        // None kept once idle: the next call drops what nobody called since.
        gantry_host::registry::LoadedLimits {
            max: 100,
            idle: std::time::Duration::ZERO,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let rt = crate::support::small_runtime(None);
        let reg = Registry::open(
            RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                loaded: limits,
                ..RegistryConfig::default()
            },
            rt.clone(),
        )
        .unwrap();
        reg.create_org("acme").unwrap();
        let mut instances = Vec::new();
        for (name, file) in [("echo", "echo"), ("json-transform", "json-transform")] {
            reg.publish(
                "acme",
                "dev",
                request(name, "1.0.0", Visibility::Private, connector(file)),
            )
            .await
            .unwrap();
            let install = reg.install("acme", "ops", "acme", name, "1.0.0").unwrap();
            let instance = reg
                .create_instance("acme", "ops", install.id, "i", no_map(), no_map())
                .unwrap();
            instances.push(instance.id);
        }
        let (echo, result) = reg
            .invoke_instance("acme", instances[0], "echo", "{}")
            .await
            .unwrap();
        let echo = {
            let digest = *echo.digest();
            drop(echo); // the call is over: only the registry may keep it loaded
            digest
        };
        result.unwrap();
        assert!(rt.is_loaded(&echo));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (jt, result) = reg
            .invoke_instance(
                "acme",
                instances[1],
                "pick",
                r#"{"paths":[],"document":{}}"#,
            )
            .await
            .unwrap();
        result.unwrap();
        let jt = {
            let digest = *jt.digest();
            drop(jt);
            digest
        };
        assert!(rt.is_loaded(&jt));
        assert!(!rt.is_loaded(&echo), "{limits:?}: echo is unloaded");
        // Its next call loads it again.
        let (_, result) = reg
            .invoke_instance("acme", instances[0], "echo", "{}")
            .await
            .unwrap();
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_runs_on_the_in_memory_stores() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(
        RegistryConfig {
            data_dir: dir.path().to_path_buf(),
            metadata: Some(Arc::new(gantry_host::store::MemoryStore::new())),
            blobs: Some(Arc::new(gantry_host::store::MemoryBlobStore::new())),
            ..RegistryConfig::default()
        },
        runtime().clone(),
    )
    .unwrap();
    reg.create_org("acme").unwrap();
    let echo = connector("echo");
    reg.publish(
        "acme",
        "dev@acme",
        request("echo", "1.0.0", Visibility::Private, echo.clone()),
    )
    .await
    .unwrap();
    let (_, flow) = echo_flow(&reg, json!({"kept": "in memory"})).await;
    // A private republish, then a rebind onto it: the superseded revision is collected.
    let (outcome, v2) = reg
        .publish(
            "acme",
            "dev@acme",
            request("echo", "1.0.0", Visibility::Private, rebuilt(&echo, "2")),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::NewRevision);
    let install = reg
        .installs("acme", &Page::default())
        .unwrap()
        .into_iter()
        .find(|i| i.name == "echo")
        .unwrap();
    reg.update(
        "acme",
        "ops",
        install.id,
        &update_to("1.0.0", UpdateMode::Overwrite, &[]),
    )
    .unwrap();
    let flow_now = reg.get_flow("acme", flow).unwrap();
    assert_eq!(flow_now.steps[0].digest, v2.digest);
    let run = reg.run_flow("acme", flow, json!({"n": 1})).await.unwrap();
    assert_eq!(
        (run.status, run.steps[0].digest),
        (RunStatus::Succeeded, v2.digest)
    );
    assert_eq!(
        reg.versions("acme", "acme", "echo", &Page::default())
            .unwrap()[0]
            .revision,
        2
    );
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| !f.starts_with(dir.path().join("blobs")) && !f.ends_with("gantry.db")),
        "nothing written past the stores: {:?}",
        files_under(dir.path())
    );
}

/// A registry sealing secrets with a key kept outside its data directory (`--secrets-key`)
/// uses that key, and a backup copies that key.
#[test]
fn a_secrets_key_outside_the_data_directory_is_used_and_backed_up() {
    let (data, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = keys.path().join("gantry.key");
    let reg = Registry::open(
        RegistryConfig {
            data_dir: data.path().to_path_buf(),
            secrets_key: Some(key.clone()),
            ..RegistryConfig::default()
        },
        runtime().clone(),
    )
    .unwrap();
    assert!(key.exists(), "the key is made where it was asked for");
    assert!(!data.path().join("secrets.key").exists());
    let to = keys.path().join("backup");
    reg.backup("ops", &to).unwrap();
    assert_eq!(
        std::fs::read(to.join("secrets.key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
}
