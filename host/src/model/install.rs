//! Installs (a package version taken into an organisation, with its customisations) and
//! instances (its configuration and sealed credentials).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A package version taken into an organisation, with its customisations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Install {
    pub id: i64,
    pub org: String,
    pub package_org: String,
    pub name: String,
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    /// The revision of `version` it runs: a private version republished makes a newer one,
    /// which the install takes only through an explicit update.
    pub revision: u32,
    /// Overlay on the connector's default config.
    pub customisations: BTreeMap<String, String>,
    pub modified_by: Option<String>,
    pub modified_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    /// Outbound origins granted to this install (`scheme://host[:port]`, `*` wildcards). A
    /// request must match one of these and one the connector declares.
    pub outbound: Vec<String>,
    /// The newest active version above this one, if any.
    #[schema(value_type = Option<String>)]
    pub update_available: Option<semver::Version>,
    /// A newer revision of `version` (a private republish), if there is one.
    pub revision_available: Option<u32>,
}

impl Install {
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.package_org, self.name, self.version)
    }
}

/// How an install moves to another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateMode {
    /// Move the install; drop its customisations (which must be acknowledged when there are
    /// any); keep its instances; rebind every flow step bound through it.
    Overwrite,
    /// Install the new version next to the old one; nothing existing changes.
    Alongside,
}

/// An update of an install: to `version`, in `mode` — what the registry, the API
/// (`POST /v1/installs/{id}/update`) and the CLI all take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[schema(
        pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$"
    )]
    pub version: String,
    pub mode: UpdateMode,
    /// The risks of its update plan this update accepts: an update goes ahead only when it
    /// accepts every one its plan names (`GET /v1/installs/{id}/update-plan`) — for an
    /// overwrite all of them, for an install alongside (which moves nothing) a downgrade.
    #[serde(default)]
    pub acknowledge: Vec<Risk>,
    /// The same as acknowledging `customisations-lost` (the field came first).
    #[serde(default)]
    pub acknowledge_customisations_lost: bool,
    /// Alongside: give the new install the old one's customisations (those of config keys the
    /// new version still declares). Its outbound grants always go with it.
    #[serde(default)]
    pub carry_customisations: bool,
}

impl Update {
    /// Whether this update accepts `risk`.
    pub fn accepts(&self, risk: Risk) -> bool {
        self.acknowledge.contains(&risk)
            || (risk == Risk::CustomisationsLost && self.acknowledge_customisations_lost)
    }
}

/// A risk an update carries, named so that it can be acknowledged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// An overwrite drops the install's customisations.
    CustomisationsLost,
    /// The new version breaks something the installed one offered.
    BreakingChanges,
    /// A change the comparison cannot judge.
    UnknownChanges,
    /// Instances lack a newly required config key or secret.
    MissingCredentials,
    /// The new version calls hosts the installed one did not.
    NewOutboundHosts,
    /// The new version is lower than the installed one.
    Downgrade,
}

/// Configuration and credentials for an install: an "authenticated connection". Secrets are
/// write-only: only their keys are ever returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: i64,
    pub org: String,
    pub install_id: i64,
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub secret_keys: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}
