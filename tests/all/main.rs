//! Integration tests: real components built from `sample-connectors/`, one test binary with a
//! module per feature.

mod api;
mod authoring;
mod cache;
mod canary;
mod cli;
mod connectors;
mod console;
mod languages;
mod load;
mod nodes;
mod operations;
mod outbound;
mod platform;
mod registry;
mod replay;
mod sandbox;
mod services;
mod soak;
mod store;
mod support;
mod swap;
mod tenants;
