//! A loaded connector (lifetime: the digest): the compiled component, pre-instantiated against
//! the linker, and the [`Description`] its `describe()` returned when it was loaded.

use crate::model::{ConfigKey, Description, Digest, Operation, SecretKey, bounds};
use crate::sandbox::Sandbox;
use crate::wit::{self as bindings, PluginPre};
use serde::Serialize;
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

fn within(what: &str, text: &str, limit: usize) -> Result<(), String> {
    if text.len() > limit {
        return Err(format!("{what} is {} bytes; at most {limit}", text.len()));
    }
    Ok(())
}

fn at_most<T>(what: &str, items: &[T], limit: usize) -> Result<(), String> {
    if items.len() > limit {
        return Err(format!("{} {what}; at most {limit}", items.len()));
    }
    Ok(())
}

fn name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} has an empty name"));
    }
    within(
        &format!("the name of {what} `{}`", name.escape_debug()),
        name,
        bounds::NAME_BYTES,
    )
}

/// The total bytes of text in `info`.
fn text_bytes(info: &bindings::ConnectorInfo) -> usize {
    let ops: usize = info
        .operations
        .iter()
        .map(|o| o.name.len() + o.description.len() + o.input_schema.len() + o.output_schema.len())
        .sum();
    let config: usize = info
        .config
        .iter()
        .map(|c| {
            c.name.len() + c.description.len() + c.default_value.as_ref().map_or(0, String::len)
        })
        .sum();
    let secrets: usize = info
        .secrets
        .iter()
        .map(|s| s.name.len() + s.description.len())
        .sum();
    let hosts: usize = info.outbound_hosts.iter().map(String::len).sum();
    info.name.len() + info.version.len() + info.description.len() + ops + config + secrets + hosts
}

impl TryFrom<bindings::ConnectorInfo> for Description {
    type Error = String;

    fn try_from(info: bindings::ConnectorInfo) -> Result<Self, String> {
        let total = text_bytes(&info);
        if total > bounds::TOTAL_BYTES {
            return Err(format!(
                "describe() holds {total} bytes of text; at most {}",
                bounds::TOTAL_BYTES
            ));
        }
        if info.name.is_empty() {
            return Err("the connector's name is empty".into());
        }
        within("the connector's name", &info.name, bounds::NAME_BYTES)?;
        within(
            "the connector's description",
            &info.description,
            bounds::DESCRIPTION_BYTES,
        )?;
        at_most("operations", &info.operations, bounds::OPERATIONS)?;
        at_most("config keys", &info.config, bounds::CONFIG_KEYS)?;
        at_most("secrets", &info.secrets, bounds::SECRETS)?;
        at_most(
            "outbound hosts",
            &info.outbound_hosts,
            bounds::OUTBOUND_HOSTS,
        )?;
        let version = semver::Version::parse(&info.version)
            .map_err(|e| format!("version `{}` is not semver: {e}", info.version))?;
        let mut seen = BTreeSet::new();
        let mut operations = Vec::with_capacity(info.operations.len());
        for op in info.operations {
            name("an operation", &op.name)?;
            within(
                &format!("the description of operation `{}`", op.name),
                &op.description,
                bounds::ITEM_DESCRIPTION_BYTES,
            )?;
            if !seen.insert(op.name.clone()) {
                return Err(format!("operation `{}` is declared twice", op.name));
            }
            let schema = |which: &str, text: &str| -> Result<serde_json::Value, String> {
                let what = format!("the {which} schema of operation `{}`", op.name);
                within(&what, text, bounds::SCHEMA_BYTES)?;
                let schema: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))?;
                let depth = crate::json::value_nesting(&schema);
                if depth > crate::json::KEPT_DEPTH {
                    return Err(format!(
                        "{what} nests {depth} levels deep; at most {}",
                        crate::json::KEPT_DEPTH
                    ));
                }
                Ok(schema)
            };
            operations.push(Operation {
                input_schema: schema("input", &op.input_schema)?,
                output_schema: schema("output", &op.output_schema)?,
                name: op.name,
                description: op.description,
            });
        }
        for c in &info.config {
            name("a config key", &c.name)?;
            within(
                &format!("the description of config key `{}`", c.name),
                &c.description,
                bounds::ITEM_DESCRIPTION_BYTES,
            )?;
            if let Some(default) = &c.default_value {
                within(
                    &format!("the default of config key `{}`", c.name),
                    default,
                    bounds::DEFAULT_VALUE_BYTES,
                )?;
            }
        }
        for secret in &info.secrets {
            name("a secret", &secret.name)?;
            within(
                &format!("the description of secret `{}`", secret.name),
                &secret.description,
                bounds::ITEM_DESCRIPTION_BYTES,
            )?;
        }
        for host in &info.outbound_hosts {
            crate::sandbox::policy::OriginPattern::parse(host)
                .map_err(|e| format!("outbound host {e}"))?;
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
    declared_hosts: std::sync::Arc<[crate::sandbox::policy::OriginPattern]>,
    /// Its operations' schemas, compiled.
    schemas: super::schemas::Schemas,
    pub(crate) pre: PluginPre<Sandbox>,
    origin: Origin,
    /// Imports of interfaces the sandbox links but never grants.
    ungranted_imports: Vec<String>,
    /// The interfaces it exports and imports, `export …` / `import …`, sorted.
    world: Vec<String>,
}

/// Interfaces the sandbox links (toolchains import them) but never grants: no directory is
/// preopened, no socket can be made.
const NEVER_GRANTED: [&str; 2] = ["wasi:filesystem/", "wasi:sockets/"];

/// Whether the import `name` is of an interface the sandbox never grants.
pub(crate) fn never_granted(name: &str) -> bool {
    NEVER_GRANTED.iter().any(|p| name.starts_with(p))
}

impl Connector {
    pub(crate) fn new(
        digest: Digest,
        size: usize,
        description: Description,
        schemas: super::schemas::Schemas,
        pre: PluginPre<Sandbox>,
        origin: Origin,
        (imports, exports): (Vec<String>, Vec<String>),
    ) -> Self {
        let label = format!("{}@{}", description.name, description.version).into();
        let mut world: Vec<String> = exports
            .iter()
            .map(|e| format!("export {e}"))
            .chain(imports.iter().map(|i| format!("import {i}")))
            .collect();
        world.sort();
        Self {
            ungranted_imports: imports
                .into_iter()
                .filter(|name| never_granted(name))
                .collect(),
            world,
            digest_text: digest.to_string().into(),
            declared_hosts: crate::sandbox::policy::parse_lenient(&description.outbound_hosts)
                .into(),
            digest,
            size,
            description,
            schemas,
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

    /// The interfaces it imports that the sandbox never grants (`wasi:filesystem`,
    /// `wasi:sockets`): calls into them always fail.
    pub fn ungranted_imports(&self) -> &[String] {
        &self.ungranted_imports
    }

    /// The interfaces it exports and imports (`export gantry:connector/connector@0.1.0`,
    /// `import wasi:http/outgoing-handler@0.2.12`, …), sorted: the WIT world it was built
    /// against, as far as it uses it.
    pub fn world(&self) -> &[String] {
        &self.world
    }

    /// Check the JSON text `output` against the output schema of `operation` (calls check
    /// their input against the input schema; output only on request, e.g. `gantry check`).
    pub fn check_output(&self, operation: &str, output: &str) -> Result<(), String> {
        self.schemas.check_output(operation, output)
    }

    pub(crate) fn schemas(&self) -> &super::schemas::Schemas {
        &self.schemas
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
    pub(crate) fn declared_hosts(
        &self,
    ) -> &std::sync::Arc<[crate::sandbox::policy::OriginPattern]> {
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
