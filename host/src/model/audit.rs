//! The audit log.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One entry of the audit log. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub org: String,
    pub actor: String,
    pub at: i64,
    pub action: String,
    pub subject: String,
    /// What changed, before: the fields that changed (an object), a list (an install's
    /// outbound origins), or null when it was created.
    #[schema(value_type = serde_json::Value)]
    pub before: Value,
    /// What changed, after, as `before`; null when it was removed.
    #[schema(value_type = serde_json::Value)]
    pub after: Value,
}
