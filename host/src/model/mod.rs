//! The domain: what the lifecycle is about — published versions and what they describe,
//! installs, instances, flows and their runs, tokens, the audit log — as plain data. This
//! module depends on no other part of Gantry: the store keeps these types, the registry
//! applies the rules to them, the API shows them.

mod audit;
mod canary;
mod description;
mod digest;
mod flow;
mod id;
mod install;
mod market;
mod names;
mod page;
mod recording;
mod token;
mod version;

pub use audit::AuditEntry;
pub use canary::{Arm, Canary, CanaryState};
pub use description::{
    ConfigKey, Description, Operation, OperationSummary, SecretKey, Summary, bounds,
};
pub use digest::{Digest, ParseDigestError};
pub use flow::{Flow, Run, RunError, RunStatus, Step, StepRun, StepSpec};
pub use id::{id, optional_id};
pub use install::{Install, Instance, Risk, Update, UpdateMode};
pub(crate) use market::current_each;
pub use market::{Audience, IndexEntry, listed_latest, words};
pub(crate) use names::version_key;
pub use names::{InvalidName, InvalidVersion, parse_version, validate_label, validate_name};
pub(crate) use page::limit as query_limit;
pub use page::{InvalidPage, Page};
pub use recording::{Recording, TapeBody, TapedExchange};
pub use token::{OrgInfo, Principal, Role, Session, TokenInfo};
pub use version::{
    ListedVersion, Listing, PublishOutcome, PublishRequest, PublishStage, Search, VersionInfo,
    VersionState, VersionSummary, Visibility,
};
