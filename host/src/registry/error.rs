//! The lifecycle's errors: one variant per rule, each with a stable [`code`](Error::code) that
//! the API maps to an HTTP status in one place. A failure below the lifecycle (the store, the
//! vault, the operating system) keeps its cause as the error's [`source`](std::error::Error).

use crate::model::{InvalidName, InvalidPage, InvalidVersion};
use crate::runtime::LoadError;
use crate::store::StoreError;
use std::sync::Arc;

/// The cause of a storage failure.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// What went wrong in a registry operation. Nothing is stored when an operation fails.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error(transparent)]
    InvalidVersion(#[from] InvalidVersion),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid input: {0}")]
    InvalidPage(#[from] InvalidPage),
    #[error("the component describes itself as {found}, but was published as {expected}")]
    DescribeMismatch { expected: String, found: String },
    /// An overwrite would leave instances without a credential or config key the new version
    /// requires.
    #[error("{0}")]
    CredentialsNeeded(String),
    /// A breaking change without the version bump that announces one.
    #[error(
        "{version} breaks what uses {against} but is not a major version (a minor one in 0.x): \
         {}; publish it as a new major version", .reasons.join("; ")
    )]
    Breaking {
        version: String,
        against: String,
        reasons: Vec<String>,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "the component imports {}, which Gantry never grants: build without them (e.g. no \
         std::fs or std::net in Rust), or ask the operator to accept components whose \
         toolchain imports them anyway", .0.join(", ")
    )]
    UngrantedImports(Vec<String>),
    /// Other bytes under a public version's name.
    #[error(
        "conflict: {version} is public and immutable ({digest}); publish a new version instead"
    )]
    Immutable { version: String, digest: String },
    /// Deleting a version something still pins.
    #[error("conflict: {version} is pinned by {installs} install(s) and {steps} flow step(s)")]
    Pinned {
        version: String,
        installs: u64,
        steps: u64,
    },
    /// An overwrite to a version without an operation a bound step uses.
    #[error(
        "conflict: {version} lacks operations bound flows use ({}); install it alongside and \
         rebind instead", .uses.join("; ")
    )]
    MissingOperations { version: String, uses: Vec<String> },
    /// A name that must be unique within its organisation.
    #[error("conflict: a {what} named `{name}` exists")]
    NameTaken { what: &'static str, name: String },
    #[error("{0} is deprecated: it runs for existing bindings but cannot be bound anew")]
    Deprecated(String),
    #[error("{0} is blocked and cannot run")]
    Blocked(String),
    #[error("{0}")]
    AcknowledgementRequired(String),
    #[error(
        "{0} is public: a public version is never deleted (its digest stays bound to it); \
         deprecate or block it instead"
    )]
    PublicPermanent(String),
    #[error("storage failure: {message}")]
    Storage {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("the secrets key: {0}")]
    SecretsKey(String),
    /// The metadata or blob store cannot be reached (down or restarting); nothing was
    /// changed, and the same request may succeed later.
    #[error("storage unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not-found",
            Error::InvalidName(_) => "invalid-name",
            Error::InvalidVersion(_) => "invalid-version",
            Error::InvalidInput(_) | Error::InvalidPage(_) => "invalid-input",
            Error::DescribeMismatch { .. } => "describe-mismatch",
            Error::Breaking { .. } => "breaking-change",
            Error::CredentialsNeeded(_) => "credentials-needed",
            Error::Load(e) => e.code(),
            Error::UngrantedImports(_) => "ungranted-imports",
            Error::Immutable { .. }
            | Error::Pinned { .. }
            | Error::MissingOperations { .. }
            | Error::NameTaken { .. } => "conflict",
            Error::Deprecated(_) => "deprecated",
            Error::Blocked(_) => "blocked",
            Error::AcknowledgementRequired(_) => "acknowledgement-required",
            Error::PublicPermanent(_) => "public-permanent",
            Error::Storage { .. } => "storage",
            Error::SecretsKey(_) => "secrets-key",
            Error::Unavailable { .. } => "unavailable",
        }
    }

    /// A storage failure with no underlying error.
    pub fn storage(message: impl Into<String>) -> Self {
        Error::Storage {
            message: message.into(),
            source: None,
        }
    }

    /// A storage failure caused by `source`.
    pub fn storage_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let message = message.into();
        let message = if message.is_empty() {
            source.to_string()
        } else {
            format!("{message}: {source}")
        };
        Error::Storage {
            message,
            source: Some(Arc::new(source)),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Failed { message, source } => Error::Storage { message, source },
            StoreError::Unavailable { message, source } => Error::Unavailable { message, source },
            StoreError::Aborted => Error::storage("a unit was aborted"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut => {
                Error::Unavailable {
                    message: e.to_string(),
                    source: Some(Arc::new(e)),
                }
            }
            _ => Error::storage_from("", e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::storage_from("stored JSON", e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
