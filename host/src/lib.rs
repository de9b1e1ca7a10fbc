//! `gantry-host`: Gantry's connector host as a library.
//!
//! Two halves, each a stack of layers that point one way (a layer uses only those below it):
//!
//! - **the runtime** — [`sandbox`] (what a call may do: capabilities, limits, the outbound
//!   policy and client) under [`runtime`] (the wasmtime engine, loading a component once per
//!   digest as a [`Connector`], and running each call in a fresh, bounded store);
//! - **the lifecycle** — [`model`] (the domain as plain data, depending on nothing else of
//!   Gantry) under [`store`] (metadata and blob backends, behind traits) under [`registry`]
//!   (the seeds' rules: publishing, installs, instances, flows, tokens, and the pin table
//!   calls resolve through) under [`api`] (the HTTP API).
//!
//! The registry is where the halves meet: it resolves what a call runs and hands it to the
//! runtime. Where a new thing goes: a rule in `registry/` (shared rules in `registry/rules.rs`),
//! a backend in `store/` (it must pass the store conformance suite), a route in
//! `api/routes/`, a new WIT version in `wit.rs` and `runtime/`.

pub mod api;
mod durable;
#[doc(hidden)]
pub mod fuzzing;
mod json;
pub mod model;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod store;
mod wit;

pub use api::{ApiConfig, ApiError, ServeOptions, router, serve};
pub use json::KEPT_DEPTH;
pub use model::{Description, Digest};
pub use registry::{Registry, RegistryConfig};
pub use runtime::{CallError, CallOutput, Connector, Runtime, RuntimeConfig};
pub use sandbox::{CallContext, Limits};
