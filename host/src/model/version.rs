//! Published versions and the marketplace: who may see a version, its lifecycle state, what a
//! publish did, and how a listing shows it.

use super::{Description, Digest, Summary};
use serde::{Deserialize, Serialize};

/// Who may see a published version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    /// Only the publishing organisation; may be republished (a new revision).
    Private,
    /// Every organisation, in the marketplace; immutable.
    Public,
}

/// Lifecycle state of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    Active,
    /// Runs for what is bound to it; refused for new bindings; flagged in listings.
    Deprecated,
    /// Refused at run time (a security recall).
    Blocked,
}

/// A published version (one revision of it), with what it describes itself as: its whole
/// [`Description`], or the [`Summary`] a listing shows. `publisher` is the token label of
/// whoever published it; another organisation sees the publishing organisation's name there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo<D = Description> {
    pub org: String,
    pub name: String,
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    pub revision: u32,
    #[schema(value_type = String, example = "sha256:…")]
    pub digest: Digest,
    pub size: u64,
    pub visibility: Visibility,
    pub state: VersionState,
    pub publisher: String,
    pub published_at: i64,
    pub tags: Vec<String>,
    pub description: D,
}

impl<D> VersionInfo<D> {
    /// `org/name@version`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.org, self.name, self.version)
    }

    /// As `viewer` may see it: another organisation does not see who in the publishing
    /// organisation published it (a token label says more than a marketplace should).
    pub(crate) fn seen_by(mut self, viewer: &str) -> Self {
        if self.org != viewer {
            self.publisher = self.org.clone();
        }
        self
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PublishOutcome {
    /// A new version.
    Created,
    /// A private version republished with other bytes: a new revision.
    NewRevision,
    /// The same bytes were already published: nothing changed.
    Unchanged,
}

/// Where a publish has got to, for a publisher watching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PublishStage {
    /// Compiling the component and reading its `describe()` (most of a heavy component's
    /// publish: seconds for an 18 MB one).
    Compiling,
    /// Storing the bytes and recording the version.
    Storing,
}

/// A request to publish component bytes as `name@version` of an organisation.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub name: String,
    pub version: String,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    pub bytes: Vec<u8>,
}

/// A connector in the marketplace: its newest version and every version's state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Listing {
    pub org: String,
    pub name: String,
    /// Its newest version, with the description's [`Summary`] (no schemas).
    #[schema(inline)]
    pub latest: ListedVersion,
    pub versions: Vec<VersionSummary>,
}

/// A version as the marketplace lists it: a [`VersionInfo`] whose description leaves out the
/// operations' schemas (`GET /v1/connectors/{org}/{name}/versions` has them), so a listing
/// stays small whatever the connectors declare.
pub type ListedVersion = VersionInfo<Summary>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionSummary {
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    pub revision: u32,
    #[schema(value_type = String, example = "sha256:…")]
    pub digest: Digest,
    pub visibility: Visibility,
    pub state: VersionState,
    pub deprecated: bool,
}

/// A marketplace search; empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Search {
    /// Words matched against name, description and operation names.
    pub text: Option<String>,
    pub tag: Option<String>,
    pub publisher: Option<String>,
}
