//! Flows (ordered steps, each pinned to the exact digest it was bound to) and their recorded
//! runs.

use super::Digest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A step as a caller writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")]
    pub name: String,
    #[serde(deserialize_with = "super::id")]
    pub instance: i64,
    pub operation: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A bound step: its spec and the digest it is pinned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    pub instance: i64,
    pub operation: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = String)]
    pub digest: Digest,
    /// What the digest is: `org/name@version` and its revision (as the registry describes a
    /// flow; a store leaves them empty).
    #[serde(default)]
    pub connector: Option<String>,
    #[serde(default)]
    pub revision: Option<u32>,
    /// The step's install has a newer version or revision available, or runs a newer one than
    /// the step is pinned to: an update or a rebind would move it.
    #[serde(default)]
    pub out_of_date: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flow {
    pub id: i64,
    pub org: String,
    pub name: String,
    pub steps: Vec<Step>,
    /// Each step run is recorded (input, output, outbound exchanges, secrets redacted), for
    /// replays against a candidate.
    #[serde(default)]
    pub record: bool,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// What one step of a run did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRun {
    pub name: String,
    #[schema(value_type = String)]
    pub digest: Digest,
    /// What the digest was when the step ran: `org/name@version`, its revision, and whether a
    /// newer version or revision was available to the step's install.
    #[serde(default)]
    pub connector: Option<String>,
    #[serde(default)]
    pub revision: Option<u32>,
    #[serde(default)]
    pub out_of_date: bool,
    /// The arm of the step's canary this run took, while one was splitting its runs.
    #[serde(default)]
    pub arm: Option<super::Arm>,
    pub duration_us: u64,
    /// The step's output exactly as the connector wrote it.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    pub error: Option<RunError>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub step: String,
    pub code: String,
    pub message: String,
}

/// A recorded run of a flow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub flow_id: i64,
    pub status: RunStatus,
    pub started_at: i64,
    pub duration_us: u64,
    pub steps: Vec<StepRun>,
    /// The last step's output, as the connector wrote it, when the run succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    pub error: Option<RunError>,
}

impl Run {
    /// [`Run::output`] parsed, for callers that want a tree.
    pub fn output_value(&self) -> Option<Value> {
        self.output
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}
