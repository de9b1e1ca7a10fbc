//! `gantry-host`: Gantry's connector host as a library.
//!
//! Three lifetimes, three types:
//! - once per process: [`Runtime`] — the wasmtime engine, the linker of host capabilities, the
//!   epoch ticker and the precompiled-artifact cache;
//! - once per digest: [`Connector`] — a compiled, pre-instantiated component and its
//!   [`Description`], loaded by [`Runtime::load`];
//! - once per call: a fresh store and sandbox inside [`Runtime::invoke`], bounded by [`Limits`].
//!
//! [`Bindings`] maps names to connectors and swaps them atomically (hot swap). [`Registry`]
//! holds what is published, installed, configured and bound, persistently, by organisation.

mod api;
mod auth;
mod bindings;
mod blob;
mod cache;
mod call;
mod capability;
mod connector;
mod digest;
mod durable;
mod flow;
mod json;
mod limits;
mod metadata;
mod outbound;
mod policy;
mod registry;
mod runtime;
mod sqlite;
mod swap;
mod turns;
mod vault;

pub use api::{ApiConfig, ApiError, router, serve};
pub use auth::{Principal, Role};
pub use blob::{BlobStore, FsBlobStore};
pub use call::{CallError, CallOutput, ConnectorError};
pub use capability::{CallContext, LogLine, Secrets};
pub use connector::{
    ConfigKey, Connector, Description, Operation, OperationSummary, Origin, SecretKey, Summary,
    bounds as describe_bounds,
};
pub use digest::{Digest, ParseDigestError};
pub use flow::{
    Flow, FlowLimits, Run, RunError, RunStatus, Scope, Step, StepRun, StepSpec, map_input,
};
pub use json::KEPT_DEPTH;
pub use limits::{BODY_CHUNK_BYTES, FIELDS_BYTES, InvalidLimits, Limits, Resource};
pub use metadata::{Access, BoundStep, Metadata, MetadataStore, Pins};
pub use outbound::OutboundError;
pub use policy::{
    Origin as OutboundOrigin, OriginPattern, OutboundConfig, OutboundPolicy, forbidden_address,
};
pub use registry::{
    AuditEntry, Error as RegistryError, FaultHook, FaultPoint, Install, Instance, ListedVersion,
    Listing, LoadedLimits, Page, PublishOutcome, PublishRequest, Registry, RegistryConfig, Search,
    UpdateMode, VersionInfo, VersionState, VersionSummary, Visibility, parse_version,
    validate_label, validate_name,
};
pub use runtime::{
    Allocator, Inspection, LoadError, Runtime, RuntimeConfig, RuntimeError, RuntimeStats,
};
pub use sqlite::SqliteStore;
pub use swap::{Bindings, BoundCallError};
pub use turns::SHORT_CALL;
