//! The Extism counterpart of Gantry's `echo` and `json-transform` sample connectors, for the
//! peer comparison: the same work (the very same `json-transform-core` code) behind Extism's ABI.

use extism_pdk::{Error, FnResult, plugin_fn};

/// Return the input unchanged.
#[plugin_fn]
pub fn echo(input: Vec<u8>) -> FnResult<Vec<u8>> {
    Ok(input)
}

/// `json-transform`'s `pick` operation.
#[plugin_fn]
pub fn pick(input: String) -> FnResult<String> {
    json_transform_core::run("pick", &input).map_err(|e| Error::msg(format!("{e:?}")).into())
}
