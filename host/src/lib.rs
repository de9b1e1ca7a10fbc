//! `gantry-host`: Gantry's connector host as a library.
//!
//! Three lifetimes, three types:
//! - once per process: [`Runtime`] — the wasmtime engine, the linker of host capabilities, the
//!   epoch ticker and the precompiled-artifact cache;
//! - once per digest: [`Connector`] — a compiled, pre-instantiated component and its
//!   [`Description`], loaded by [`Runtime::load`];
//! - once per call: a fresh store and sandbox inside [`Runtime::invoke`], bounded by [`Limits`].
//!
//! [`Bindings`] maps names to connectors and swaps them atomically (hot swap).

mod bindings;
mod cache;
mod call;
mod capability;
mod connector;
mod digest;
mod limits;
mod runtime;
mod swap;

pub use call::{CallError, CallOutput, ConnectorError};
pub use capability::{CallContext, LogLine, Secrets};
pub use connector::{ConfigKey, Connector, Description, Operation, Origin, SecretKey};
pub use digest::{Digest, ParseDigestError};
pub use limits::{InvalidLimits, Limits};
pub use runtime::{
    Allocator, Inspection, LoadError, Runtime, RuntimeConfig, RuntimeError, RuntimeStats,
};
pub use swap::{Bindings, BoundCallError};
