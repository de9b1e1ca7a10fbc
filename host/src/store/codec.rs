//! What the SQL stores share: how values are kept in columns (enums as their text, documents
//! as JSON) and the column lists their rows are read by.

use super::{Result, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A unit enum as the text it serialises to (`"deprecated"`).
pub(super) fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => unreachable!("unit enums serialise as strings"),
    }
}

/// A unit enum from the text it serialises to.
pub(super) fn from_text<T: for<'de> Deserialize<'de>>(text: String) -> serde_json::Result<T> {
    serde_json::from_value(Value::String(text))
}

/// A document as stored.
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::caused("cannot store JSON", e))
}

/// A stored document.
///
/// Without serde_json's nesting limit (128): a row holds documents that were each parsed once
/// under that limit before they were stored, then kept inside a record a few levels deeper —
/// too shallow to threaten the stack, but over the limit when rows were written before Gantry
/// bounded what it keeps at 64 levels ([`crate::json::KEPT_DEPTH`]). Read with the limit, one
/// such row made every listing that touched it fail.
pub(super) fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    T::deserialize(&mut de).and_then(|value| de.end().map(|()| value))
}

pub(super) const VERSION_COLUMNS: &str = "org, name, version, revision, digest, size, \
    visibility, state, publisher, published_at, tags, description";

/// [`VERSION_COLUMNS`] with the summary in place of the description.
pub(super) const LISTED_COLUMNS: &str = "org, name, version, revision, digest, size, \
    visibility, state, publisher, published_at, tags, summary";

pub(super) const INSTALL_COLUMNS: &str = "id, org, pkg_org, name, version, customisations, \
    modified_by, modified_at, created_by, created_at, outbound, revision";

pub(super) const INSTANCE_COLUMNS: &str =
    "id, org, install_id, name, config, secret_keys, created_by, created_at";

pub(super) const TOKEN_COLUMNS: &str =
    "id, org, role, label, created_by, created_at, last_used_at, expires_at, revoked_at";

/// Steps with the instance and install they are bound through (`s`, `i`, `n`) and their flow
/// (`f`).
pub(super) const BOUND_STEPS: &str = "SELECT s.flow_id, s.name, s.operation, s.instance_id, \
    s.digest, n.pkg_org, n.name FROM steps s JOIN flows f ON f.id = s.flow_id \
    JOIN instances i ON i.id = s.instance_id JOIN installs n ON n.id = i.install_id";
