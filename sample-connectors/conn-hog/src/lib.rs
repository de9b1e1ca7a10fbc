//! Hostile: `run {"authority": "host:port", "count": N}` starts N wasi:http requests at once to
//! that (granted) origin and waits for them all, holding every connection open. Proves the
//! per-call cap on outbound connections: the call fails with `resource-limit`.

use gantry_sdk::wasi::http::outgoing_handler;
use gantry_sdk::wasi::http::types::{Fields, OutgoingRequest, Scheme};
use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};
use serde_json::Value;

struct ConnHog;

impl Guest for ConnHog {
    fn describe() -> ConnectorInfo {
        let mut info = gantry_sdk::info(
            "conn-hog",
            "1.0.0",
            "Opens as many outbound connections as it can",
            vec![gantry_sdk::operation(
                "run",
                "Start `count` requests at once",
            )],
        );
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn invoke(_operation: String, input: String) -> Result<String, ConnectorError> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?;
        let authority = input["authority"].as_str().unwrap_or("127.0.0.1:9");
        let count = input["count"].as_u64().unwrap_or(100);
        let mut pending = Vec::new();
        for _ in 0..count {
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some(authority));
            let _ = request.set_path_with_query(Some("/"));
            match outgoing_handler::handle(request, None) {
                Ok(response) => pending.push(response),
                Err(e) => return Err(ConnectorError::Upstream(format!("{e:?}"))),
            }
        }
        let mut failed = 0;
        for response in &pending {
            response.subscribe().block();
            if !matches!(response.get(), Some(Ok(Ok(_)))) {
                failed += 1;
            }
        }
        Ok(format!(
            r#"{{"started":{},"failed":{failed}}}"#,
            pending.len()
        ))
    }
}

gantry_sdk::export_connector!(ConnHog);
