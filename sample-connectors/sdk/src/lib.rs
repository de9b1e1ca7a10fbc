//! Guest-side bindings for Gantry's `gantry:connector/plugin` world, generated once here so
//! that every connector crate compiles them only once.
//!
//! A connector implements [`Guest`] and exports it with [`export_connector!`]:
//!
//! ```ignore
//! use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};
//! struct Echo;
//! impl Guest for Echo {
//!     fn describe() -> ConnectorInfo { /* ... */ }
//!     fn invoke(operation: String, input: String) -> Result<String, ConnectorError> { Ok(input) }
//! }
//! gantry_sdk::export_connector!(Echo);
//! ```

wit_bindgen::generate!({
    path: "wit",
    world: "gantry:connector/plugin",
    pub_export_macro: true,
    export_macro_name: "export_connector",
    default_bindings_module: "gantry_sdk",
    generate_all,
});

pub use exports::gantry::connector::connector::Guest;
pub use gantry::connector::types::{
    ConfigKey, ConnectorError, ConnectorInfo, Level, OperationInfo, SecretKey,
};
pub use gantry::connector::{http, log, secrets};

/// Read a configuration value through the standard `wasi:config/store` interface.
pub fn config(key: &str) -> Option<String> {
    wasi::config::store::get(key).ok().flatten()
}

/// An operation with a permissive object schema for input and output, for brevity.
pub fn operation(name: &str, description: &str) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        input_schema: r#"{"type":"object"}"#.into(),
        output_schema: r#"{"type":"object"}"#.into(),
    }
}

/// A `ConnectorInfo` with no config, secrets or outbound hosts.
pub fn info(
    name: &str,
    version: &str,
    description: &str,
    operations: Vec<OperationInfo>,
) -> ConnectorInfo {
    ConnectorInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
        operations,
        config: Vec::new(),
        secrets: Vec::new(),
        outbound_hosts: Vec::new(),
    }
}
