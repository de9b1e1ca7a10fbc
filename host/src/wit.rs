//! Host-side bindings for Gantry's world, `gantry:connector/plugin` (see `wit/world.wit`).
//!
//! WASI and wasi:http come from wasmtime-wasi and wasmtime-wasi-http; `wasi:config/store` is
//! linked from wasmtime-wasi-config (its generated module is private, so the copy generated here
//! only describes the types and is never linked).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "gantry:connector/plugin",
    imports: {
        "gantry:connector/http.send": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:cli": wasmtime_wasi::p2::bindings::cli,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
    require_store_data_send: true,
});

pub use exports::gantry::connector::connector::{ConnectorError, ConnectorInfo};
