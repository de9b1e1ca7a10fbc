//! Each sample connector runs; `json-transform` gives the right outputs and rejects bad input.

use crate::support::{connector, json, runtime};
use gantry_host::runtime::ConnectorError;
use gantry_host::{CallContext, CallError};
use serde_json::json;

async fn transform(
    operation: &str,
    input: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let rt = runtime();
    let c = rt.load(&connector("json-transform")).await.unwrap();
    rt.invoke(&c, operation, &input.to_string(), &CallContext::default())
        .await
        .map(|out| json(&out.output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_its_input() {
    let rt = runtime();
    let echo = rt.load(&connector("echo")).await.unwrap();
    let d = echo.description();
    assert_eq!(
        (d.name.as_str(), d.version.to_string().as_str()),
        ("echo", "1.0.0")
    );
    assert!(d.operation("echo").is_some());
    let input = r#"{"hello":"world","n":[1,2,3]}"#;
    let out = rt
        .invoke(&echo, "echo", input, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, input);
    assert_eq!(out.digest, *echo.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_v2_wraps_its_input() {
    let rt = runtime();
    let v2 = rt.load(&connector("echo-v2")).await.unwrap();
    assert_eq!(v2.description().version.to_string(), "2.0.0");
    let out = rt
        .invoke(&v2, "echo", r#"{"a":1}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(
        json(&out.output),
        json!({"version": "2.0.0", "echo": {"a": 1}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_operations_are_refused_and_input_that_is_not_json_is_reported() {
    let rt = runtime();
    let echo = rt.load(&connector("echo")).await.unwrap();
    let err = rt
        .invoke(&echo, "nope", "{}", &CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::UnknownOperation { available, .. } if available.contains(&"echo".to_string())),
        "{err}"
    );
    // Echo answers with what it was given: not JSON, so the input is judged and found wrong.
    let err = rt
        .invoke(&echo, "echo", "{not json", &CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m.contains("line 1")),
        "{err}"
    );
    // A connector that refuses input which is not JSON gets the same, precise, error.
    let transform = rt.load(&connector("json-transform")).await.unwrap();
    let err = rt
        .invoke(&transform, "pick", "[1, 2", &CallContext::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, CallError::InvalidInput(_)), "{err:?}");
    // Valid JSON the input schema refuses is refused before the guest runs, naming where.
    let err = rt
        .invoke(&transform, "pick", "[1, 2]", &CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m.starts_with("at `/`")),
        "{err:?}"
    );
    // Valid JSON the schema accepts and the connector refuses stays the connector's own error.
    let err = rt
        .invoke(
            &transform,
            "template",
            r#"{"template": "{{open", "data": {}}"#,
            &CallContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::InvalidInput(_))),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_describes_real_schemas() {
    let rt = runtime();
    let c = rt.load(&connector("json-transform")).await.unwrap();
    let names: Vec<_> = c
        .description()
        .operations
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["pick", "rename", "filter", "template"]);
    let filter = c.description().operation("filter").unwrap();
    assert_eq!(filter.input_schema["required"], json!(["items", "where"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_pick() {
    let doc = json!({"user": {"name": "Ada", "email": "ada@example.com"}, "orders": [{"id": 7}, {"id": 9}], "x": 1});
    let out = transform(
        "pick",
        json!({"document": doc, "paths": ["user.name", "orders.1.id", "missing"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({"user": {"name": "Ada"}, "orders": {"1": {"id": 9}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_rename() {
    let out = transform(
        "rename",
        json!({"document": {"a": 1, "b": 2}, "mapping": {"a": "alpha"}}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"alpha": 1, "b": 2}));
    let err = transform(
        "rename",
        json!({"document": {"a": 1, "b": 2}, "mapping": {"a": "b"}}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CallError::Guest(ConnectorError::InvalidInput(m)) if m.contains("twice"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_filter() {
    let items = json!([{"n": 1, "tag": "red"}, {"n": 5, "tag": "blue"}, {"n": 10}]);
    let gt = transform(
        "filter",
        json!({"items": items, "where": {"path": "n", "op": "gt", "value": 2}}),
    )
    .await
    .unwrap();
    assert_eq!(gt, json!({"items": [{"n": 5, "tag": "blue"}, {"n": 10}]}));
    let exists = transform(
        "filter",
        json!({"items": items, "where": {"path": "tag", "op": "exists"}}),
    )
    .await
    .unwrap();
    assert_eq!(exists["items"].as_array().unwrap().len(), 2);
    let contains = transform(
        "filter",
        json!({"items": items, "where": {"path": "tag", "op": "contains", "value": "lu"}}),
    )
    .await
    .unwrap();
    assert_eq!(contains, json!({"items": [{"n": 5, "tag": "blue"}]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_template() {
    let out = transform("template", json!({"template": "Hi {{ user.name }}, you have {{count}} orders", "data": {"user": {"name": "Ada"}, "count": 3}}))
        .await
        .unwrap();
    assert_eq!(out, json!({"text": "Hi Ada, you have 3 orders"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_rejects_bad_input_as_invalid_input() {
    let bad = [
        ("pick", json!({"paths": ["a"]})),
        ("pick", json!({"document": {}, "paths": "a"})),
        ("rename", json!({"document": [], "mapping": {}})),
        (
            "filter",
            json!({"items": [], "where": {"path": "a", "op": "like"}}),
        ),
        (
            "filter",
            json!({"items": [{"a": 1}], "where": {"path": "a", "op": "gt", "value": "x"}}),
        ),
        ("template", json!({"template": "{{missing}}", "data": {}})),
        ("template", json!({"template": "{{open", "data": {}})),
        ("pick", json!([1, 2])),
    ];
    // Refused by the input schema before the guest runs, or by the connector itself: the
    // same code either way.
    for (operation, input) in bad {
        let err = transform(operation, input.clone()).await.unwrap_err();
        assert!(
            matches!(
                err,
                CallError::Guest(ConnectorError::InvalidInput(_)) | CallError::InvalidInput(_)
            ),
            "{operation} {input}: {err:?}"
        );
    }
}
