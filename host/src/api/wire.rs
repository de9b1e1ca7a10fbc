//! The bodies of the API's requests and answers that are not model types, shared by the server
//! and its clients: the `gantry` CLI writes and reads these types, never `Value` paths, so a
//! field renamed on one side is a compile error on the other.

pub use super::error::{ErrorBody, ErrorDetail};
use crate::model::{
    Digest, OrgInfo, PublishOutcome, PublishStage, Role, StepSpec, TokenInfo, VersionInfo,
    VersionState,
};
use crate::sandbox::LogLine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// `POST /v1/connectors/{name}/versions/{version}` answers what the publish did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Published {
    pub outcome: PublishOutcome,
    pub version: VersionInfo,
}

/// One line of a watched publish (sent with `Accept: application/x-ndjson`): the upload
/// received, where the publish has got to, then how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum PublishEvent {
    /// The upload was accepted; the publish now finishes, or fails whole, even if the publisher
    /// goes away.
    Received { bytes: u64 },
    /// The stage the publish is at: at each change and once a second.
    Progress {
        stage: PublishStage,
        elapsed_ms: u64,
    },
    /// Published: `status` is what the plain request would have answered (201 or 200).
    Done {
        status: u16,
        published: Box<Published>,
    },
    /// Refused or failed: the status and error the plain request would have answered.
    Failed { status: u16, error: ErrorDetail },
}

/// `POST /v1/connectors/{name}/versions/{version}/state`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    pub state: VersionState,
}

/// `POST /v1/installs`: take `org/name@version` into the caller's organisation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub org: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    #[schema(
        pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$"
    )]
    pub version: String,
}

/// `POST /v1/installs/{id}/rebind`: move every step bound through the install to `instance`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebindInstallRequest {
    #[serde(deserialize_with = "crate::model::id")]
    pub instance: i64,
}

/// `POST /v1/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    #[serde(deserialize_with = "crate::model::id")]
    pub install: i64,
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")]
    pub name: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Write-only: never answered, logged or audited.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// `POST /v1/instances/{id}/invoke/{operation}` answers the output exactly as the connector
/// wrote it (a number beyond f64, a lone surrogate escape survive), with the digest that ran.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invoked<'a> {
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub output: &'a RawValue,
    #[schema(value_type = String)]
    pub digest: Digest,
    pub duration_us: u64,
    pub logs: Cow<'a, [LogLine]>,
}

/// `POST /v1/flows`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")]
    pub name: String,
    #[schema(min_items = 1)]
    pub steps: Vec<StepSpec>,
    /// Record each step run (input, output, outbound exchanges; secrets redacted), for
    /// replays.
    #[serde(default)]
    pub record: bool,
}

/// `PUT /v1/flows/{id}/record`: switch recording on or off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    pub record: bool,
}

/// `POST /v1/flows/{id}/steps/{step}/rebind`: to `instance`, or (absent) to what the step's own
/// instance runs now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebindStepRequest {
    #[serde(default, deserialize_with = "crate::model::optional_id")]
    pub instance: Option<i64>,
}

/// `POST /v1/tokens` and `POST /v1/orgs/{org}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")]
    pub label: String,
    /// Seconds until the token expires (at most a hundred years); it never does when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3_155_760_000_u64)]
    pub expires_in_secs: Option<u64>,
}

/// A new token: its secret is shown once, never stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `POST /v1/orgs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub id: String,
    /// The label of its first admin token (default `admin`).
    #[serde(default)]
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")]
    pub admin_label: Option<String>,
}

/// A new organisation and its first admin token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewOrg {
    pub org: OrgInfo,
    pub admin: NewToken,
}

/// `POST /v1/backup`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A new directory on the server's machine (absolute path).
    pub to: String,
}

/// `text` as one URL path segment (a step name in `/v1/flows/{id}/steps/{step}/…`): every byte
/// but the unreserved ones percent-encoded.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A time (ms since the epoch) as an HTTP date, or `-`: how the CLI and the console show one.
pub fn when(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        }
        None => "-".into(),
    }
}

/// A value's name as the API writes it (`customisations-lost`, `admin`).
pub fn kebab(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => "-".into(),
    }
}
