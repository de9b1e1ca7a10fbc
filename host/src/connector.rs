//! A loaded connector (lifetime: the digest): the compiled component, pre-instantiated against
//! the linker, and the [`Description`] its `describe()` returned when it was loaded.

use crate::bindings::{self, PluginPre};
use crate::capability::Sandbox;
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Where a connector's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Compiled from the component bytes by this process.
    Compiled,
    /// Loaded from the precompiled-artifact cache.
    Cache,
}

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

impl Description {
    /// The operation called `name`, if the connector has one.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }
}

impl TryFrom<bindings::ConnectorInfo> for Description {
    type Error = String;

    fn try_from(info: bindings::ConnectorInfo) -> Result<Self, String> {
        if info.name.is_empty() {
            return Err("the connector's name is empty".into());
        }
        let version = semver::Version::parse(&info.version)
            .map_err(|e| format!("version `{}` is not semver: {e}", info.version))?;
        let mut seen = BTreeSet::new();
        let mut operations = Vec::with_capacity(info.operations.len());
        for op in info.operations {
            if op.name.is_empty() {
                return Err("an operation has an empty name".into());
            }
            if !seen.insert(op.name.clone()) {
                return Err(format!("operation `{}` is declared twice", op.name));
            }
            let schema = |which: &str, text: &str| {
                serde_json::from_str(text).map_err(|e| {
                    format!(
                        "the {which} schema of operation `{}` is not JSON: {e}",
                        op.name
                    )
                })
            };
            operations.push(Operation {
                input_schema: schema("input", &op.input_schema)?,
                output_schema: schema("output", &op.output_schema)?,
                name: op.name,
                description: op.description,
            });
        }
        Ok(Description {
            name: info.name,
            version,
            description: info.description,
            operations,
            config: info
                .config
                .into_iter()
                .map(|c| ConfigKey {
                    name: c.name,
                    description: c.description,
                    default_value: c.default_value,
                    required: c.required,
                })
                .collect(),
            secrets: info
                .secrets
                .into_iter()
                .map(|s| SecretKey {
                    name: s.name,
                    description: s.description,
                    required: s.required,
                })
                .collect(),
            outbound_hosts: info.outbound_hosts,
        })
    }
}

/// A connector ready to run: hold the `Arc` to keep it loaded.
pub struct Connector {
    digest: Digest,
    size: usize,
    description: Description,
    label: std::sync::Arc<str>,
    digest_text: std::sync::Arc<str>,
    /// `outbound_hosts`, parsed once for every call's policy.
    declared_hosts: std::sync::Arc<[crate::policy::OriginPattern]>,
    pub(crate) pre: PluginPre<Sandbox>,
    origin: Origin,
}

impl Connector {
    pub(crate) fn new(
        digest: Digest,
        size: usize,
        description: Description,
        pre: PluginPre<Sandbox>,
        origin: Origin,
    ) -> Self {
        let label = format!("{}@{}", description.name, description.version).into();
        Self {
            digest_text: digest.to_string().into(),
            declared_hosts: crate::policy::parse_lenient(&description.outbound_hosts).into(),
            digest,
            size,
            description,
            label,
            pre,
            origin,
        }
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Whether the code was compiled by this process or taken from the cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// `name@version`, for logs.
    pub(crate) fn label(&self) -> &std::sync::Arc<str> {
        &self.label
    }

    /// The outbound origins the connector declares, parsed.
    pub(crate) fn declared_hosts(&self) -> &std::sync::Arc<[crate::policy::OriginPattern]> {
        &self.declared_hosts
    }

    /// `sha256:<hex>`, for logs (kept so a call does not format it again).
    pub(crate) fn digest_text(&self) -> &std::sync::Arc<str> {
        &self.digest_text
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.description.name)
            .field("version", &self.description.version)
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}
