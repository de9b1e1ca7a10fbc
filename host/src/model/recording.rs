//! Recordings: what a step run (or a `gantry invoke --record`) received, answered and
//! exchanged over HTTP, redacted — the material a replay runs a candidate against.

use super::Digest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A body on tape: text when it is UTF-8, else hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TapeBody {
    Text(String),
    Hex(String),
}

impl TapeBody {
    /// `bytes` as text, or as hex when they are not UTF-8.
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => TapeBody::Text(text.to_string()),
            Err(_) => TapeBody::Hex(hex::encode(bytes)),
        }
    }

    /// The bytes it stands for (a bad hex body stands for none).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            TapeBody::Text(text) => text.as_bytes().to_vec(),
            TapeBody::Hex(h) => hex::decode(h).unwrap_or_default(),
        }
    }
}

/// One outbound exchange as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TapedExchange {
    pub method: String,
    pub url: String,
    pub request_body: TapeBody,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: TapeBody,
}

/// One recorded call: its input and output as written (secrets redacted), or its error, and
/// its outbound exchanges. A flow's recordings name their flow, step and run; a file written by
/// `gantry invoke --record` has the same shape without them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recording {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub flow: Option<i64>,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub run: Option<i64>,
    pub operation: String,
    #[schema(value_type = String)]
    pub digest: Digest,
    /// When (ms since the epoch).
    pub at: i64,
    #[schema(value_type = Object)]
    pub input: Box<RawValue>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    /// The call's error code and message, when it failed.
    pub error: Option<String>,
    pub exchanges: Vec<TapedExchange>,
    /// Why the recording is not whole (a cap was reached), if it is not: a replay of it may
    /// meet requests it has no answer for.
    pub incomplete: Option<String>,
}
