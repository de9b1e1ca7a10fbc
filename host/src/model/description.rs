//! What a connector says about itself through `describe()`, and the bounds it is held to.

use serde::{Deserialize, Serialize};

/// One operation a connector offers, with JSON Schemas of its input and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Operation {
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    #[schema(value_type = Object)]
    pub output_schema: serde_json::Value,
}

/// A configuration key a connector reads through `wasi:config/store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub default_value: Option<String>,
    pub required: bool,
}

/// A credential a connector reads through `secrets.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretKey {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// What a connector says about itself, checked when it is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Description {
    pub name: String,
    #[schema(value_type = String)]
    pub version: semver::Version,
    pub description: String,
    pub operations: Vec<Operation>,
    pub config: Vec<ConfigKey>,
    pub secrets: Vec<SecretKey>,
    pub outbound_hosts: Vec<String>,
}

/// An operation as a listing shows it: no schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationSummary {
    pub name: String,
    pub description: String,
}

/// A [`Description`] without its operations' schemas: what the marketplace shows of each
/// connector (the schemas are in the version itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub name: String,
    #[schema(value_type = String)]
    pub version: semver::Version,
    pub description: String,
    pub operations: Vec<OperationSummary>,
    pub config: Vec<ConfigKey>,
    pub secrets: Vec<SecretKey>,
    pub outbound_hosts: Vec<String>,
}

impl From<&Description> for Summary {
    fn from(d: &Description) -> Self {
        Self {
            name: d.name.clone(),
            version: d.version.clone(),
            description: d.description.clone(),
            operations: d
                .operations
                .iter()
                .map(|op| OperationSummary {
                    name: op.name.clone(),
                    description: op.description.clone(),
                })
                .collect(),
            config: d.config.clone(),
            secrets: d.secrets.clone(),
            outbound_hosts: d.outbound_hosts.clone(),
        }
    }
}

impl Description {
    /// The operation called `name`, if the connector has one.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }
}

/// Bounds of what `describe()` may say. A description is stored with every version and shown
/// to every organisation in the marketplace, so it is bounded before anything is stored: in
/// all, per item, and in how deep a schema nests (see [`crate::KEPT_DEPTH`]).
pub mod bounds {
    /// All the text of a description together, schemas included.
    pub const TOTAL_BYTES: usize = 512 << 10;
    pub const OPERATIONS: usize = 128;
    pub const CONFIG_KEYS: usize = 32;
    pub const SECRETS: usize = 32;
    pub const OUTBOUND_HOSTS: usize = 32;
    /// Names of operations, config keys and secrets.
    pub const NAME_BYTES: usize = 128;
    /// The connector's own description.
    pub const DESCRIPTION_BYTES: usize = 4096;
    /// The description of an operation, config key or secret.
    pub const ITEM_DESCRIPTION_BYTES: usize = 512;
    pub const DEFAULT_VALUE_BYTES: usize = 1024;
    /// One JSON Schema (input or output of one operation).
    pub const SCHEMA_BYTES: usize = 64 << 10;
}
