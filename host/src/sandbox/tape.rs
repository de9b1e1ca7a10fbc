//! A call's outbound HTTP on tape: [`Tape::record`] keeps every exchange the call makes
//! (method, URL, request body, status, response headers and body — within caps, with the call's
//! secrets redacted), [`Tape::replay`] answers the call's requests from such a recording and
//! sends nothing (a request the recording lacks is refused and reported).
//!
//! Redaction: every occurrence of a secret value of the call (of at least
//! [`MIN_REDACTED_LEN`] bytes) in a URL, a body or a header value becomes [`REDACTED`], and the
//! headers that carry credentials by name (`authorization`, `cookie`, …) are redacted whole.
//! Request headers are not kept at all.

use super::Secrets;
use crate::model::{Digest, Recording, TapeBody, TapedExchange};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::{Mutex, PoisonError};

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";
/// Shorter secret values are not searched for (a one-letter "secret" would redact every such
/// letter); the credential headers are redacted whatever they hold.
pub const MIN_REDACTED_LEN: usize = 4;

/// Response headers redacted whole, whatever they hold.
const CREDENTIAL_HEADERS: [&str; 4] = ["set-cookie", "authorization", "www-authenticate", "cookie"];

/// Caps of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapeLimits {
    /// Exchanges kept per call; a call that makes more is recorded as incomplete.
    pub exchanges: usize,
    /// Bytes of one request or response body kept; a longer one makes the recording
    /// incomplete.
    pub body_bytes: usize,
}

impl Default for TapeLimits {
    fn default() -> Self {
        Self {
            exchanges: 16,
            body_bytes: 256 << 10,
        }
    }
}

enum Mode {
    Record(TapeLimits),
    Replay(Vec<TapedExchange>),
}

#[derive(Default)]
struct State {
    kept: Vec<TapedExchange>,
    used: Vec<bool>,
    unmatched: Vec<String>,
    incomplete: Option<String>,
}

/// What a tape holds after its call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Played {
    /// Record: the exchanges, redacted.
    pub exchanges: Vec<TapedExchange>,
    /// Replay: the requests (`METHOD URL`, redacted) the recording had no answer for.
    pub unmatched: Vec<String>,
    /// Record: why the recording is not whole (a cap), if it is not.
    pub incomplete: Option<String>,
}

/// One call's outbound HTTP, recorded or replayed.
pub struct Tape {
    mode: Mode,
    secrets: Vec<String>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("replay", &matches!(self.mode, Mode::Replay(_)))
            .finish_non_exhaustive()
    }
}

impl Tape {
    /// A tape that records the exchanges of a call with `secrets`.
    pub fn record(secrets: &Secrets, limits: TapeLimits) -> Self {
        Self::new(Mode::Record(limits), secrets)
    }

    /// A tape that answers a call with `secrets` from `exchanges`, sending nothing.
    pub fn replay(exchanges: Vec<TapedExchange>, secrets: &Secrets) -> Self {
        Self::new(Mode::Replay(exchanges), secrets)
    }

    fn new(mode: Mode, secrets: &Secrets) -> Self {
        let mut secrets: Vec<String> = secrets
            .values()
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
            .map(str::to_string)
            .collect();
        // Longest first, so a secret that contains another is redacted whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            mode,
            secrets,
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn replaying(&self) -> bool {
        matches!(self.mode, Mode::Replay(_))
    }

    /// `text` with every secret value of the call redacted.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    fn body(&self, bytes: &[u8]) -> TapeBody {
        match TapeBody::of(bytes) {
            TapeBody::Text(text) => TapeBody::Text(self.redact(&text)),
            // A secret inside binary bytes is found by its bytes.
            TapeBody::Hex(_) => TapeBody::Hex(hex::encode(
                self.secrets.iter().fold(bytes.to_vec(), |bytes, secret| {
                    replace_bytes(&bytes, secret.as_bytes(), REDACTED.as_bytes())
                }),
            )),
        }
    }

    /// Record: keep one exchange (redacted), unless a cap says the recording is incomplete.
    pub(crate) fn keep(
        &self,
        request: &http::request::Parts,
        request_body: &[u8],
        response: &http::response::Parts,
        response_body: &[u8],
    ) {
        let Mode::Record(limits) = &self.mode else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.kept.len() >= limits.exchanges {
            state.incomplete = Some(format!("more than {} exchanges", limits.exchanges));
            return;
        }
        if request_body.len().max(response_body.len()) > limits.body_bytes {
            state.incomplete = Some(format!("a body over {} bytes", limits.body_bytes));
            return;
        }
        let response_headers = response
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                let value = if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                    REDACTED.to_string()
                } else {
                    self.redact(&value)
                };
                (name.to_string(), value)
            })
            .collect();
        let exchange = TapedExchange {
            method: request.method.to_string(),
            url: self.redact(&request.uri.to_string()),
            request_body: self.body(request_body),
            status: response.status.as_u16(),
            response_headers,
            response_body: self.body(response_body),
        };
        state.kept.push(exchange);
    }

    /// Replay: the recorded answer to a request (matched on method, URL and body, redacted with
    /// this call's secrets the way the recording was), or `None` — reported as unmatched.
    pub(crate) fn answer(
        &self,
        request: &http::request::Parts,
        body: &[u8],
    ) -> Option<(http::response::Parts, Bytes)> {
        let Mode::Replay(recorded) = &self.mode else {
            return None;
        };
        let (method, url) = (
            request.method.to_string(),
            self.redact(&request.uri.to_string()),
        );
        let body = self.body(body);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.used.len() < recorded.len() {
            state.used.resize(recorded.len(), false);
        }
        let matching =
            |e: &&TapedExchange| e.method == method && e.url == url && e.request_body == body;
        // The first unused match; a repeated request gets the last answer again.
        let found = recorded
            .iter()
            .enumerate()
            .filter(|(_, e)| matching(e))
            .find(|(i, _)| !state.used[*i])
            .or_else(|| recorded.iter().enumerate().rfind(|(_, e)| matching(e)));
        let Some((i, exchange)) = found else {
            state.unmatched.push(format!("{method} {url}"));
            return None;
        };
        state.used[i] = true;
        let mut response = http::Response::builder().status(exchange.status);
        for (name, value) in &exchange.response_headers {
            response = response.header(name, value);
        }
        let response = response.body(()).ok()?;
        Some((
            response.into_parts().0,
            Bytes::from(exchange.response_body.bytes()),
        ))
    }

    /// What the tape holds now.
    pub fn played(&self) -> Played {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Played {
            exchanges: state.kept.clone(),
            unmatched: state.unmatched.clone(),
            incomplete: state.incomplete.clone(),
        }
    }
}

impl Tape {
    /// The recording of the call this tape was on: its input and its output (or error), with
    /// the call's secrets redacted like the exchanges, and the exchanges it kept. `at`: when
    /// the call started (ms since the epoch).
    pub fn recording(
        &self,
        operation: &str,
        digest: Digest,
        at: i64,
        input: &str,
        outcome: Result<&str, String>,
    ) -> Recording {
        let json = |text: &str| {
            let redacted = self.redact(text);
            RawValue::from_string(redacted.clone()).unwrap_or_else(|_| {
                // Not JSON (a call refused its input): kept as a JSON string.
                serde_json::value::to_raw_value(&redacted).expect("a string serialises")
            })
        };
        let played = self.played();
        let (output, error) = match outcome {
            Ok(output) => (Some(json(output)), None),
            Err(error) => (None, Some(self.redact(&error))),
        };
        Recording {
            id: 0,
            flow: None,
            step: None,
            run: None,
            operation: operation.to_string(),
            digest,
            at,
            input: json(input),
            output,
            error,
            exchanges: played.exchanges,
            incomplete: played.incomplete,
        }
    }
}

/// `haystack` with every `needle` replaced by `with`.
fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secrets() -> Secrets {
        Secrets::new(BTreeMap::from([
            ("token".to_string(), "sekrit-value".to_string()),
            ("pin".to_string(), "12".to_string()),
        ]))
    }

    fn parts(uri: &str) -> (http::request::Parts, http::response::Parts) {
        let request = http::Request::post(uri).body(()).unwrap().into_parts().0;
        let response = http::Response::builder()
            .status(200)
            .header("set-cookie", "session=abc")
            .header("x-echo", "sekrit-value!")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        (request, response)
    }

    #[test]
    fn recording_redacts_every_secret_value_and_credential_header() {
        let tape = Tape::record(&secrets(), TapeLimits::default());
        let (request, response) = parts("http://api.test/x?key=sekrit-value");
        tape.keep(
            &request,
            b"{\"k\":\"sekrit-value\"}",
            &response,
            b"ok sekrit-value 12",
        );
        let played = tape.played();
        let text = serde_json::to_string(&played.exchanges).unwrap();
        assert!(!text.contains("sekrit-value"), "{text}");
        assert!(!text.contains("session=abc"), "{text}");
        assert_eq!(played.exchanges[0].url, "http://api.test/x?key=[redacted]");
        // Too short to search for: kept as is.
        assert!(text.contains("12"));
    }

    #[test]
    fn replay_answers_matching_requests_and_reports_the_rest() {
        let recorder = Tape::record(&secrets(), TapeLimits::default());
        let (request, response) = parts("http://api.test/a?key=sekrit-value");
        recorder.keep(&request, b"body", &response, b"answer");
        let recorded = recorder.played().exchanges;
        // Replayed with other secrets: the URL matches once both are redacted.
        let other = Secrets::new(BTreeMap::from([("token".into(), "other-value".into())]));
        let tape = Tape::replay(recorded, &other);
        let (request, _) = parts("http://api.test/a?key=other-value");
        let (head, body) = tape.answer(&request, b"body").unwrap();
        assert_eq!((head.status.as_u16(), &body[..]), (200, &b"answer"[..]));
        assert!(tape.answer(&request, b"other body").is_none());
        let (elsewhere, _) = parts("http://elsewhere.test/");
        assert!(tape.answer(&elsewhere, b"").is_none());
        assert_eq!(
            tape.played().unmatched,
            [
                "POST http://api.test/a?key=[redacted]",
                "POST http://elsewhere.test/"
            ]
        );
    }

    #[test]
    fn caps_make_a_recording_incomplete() {
        let tape = Tape::record(
            &secrets(),
            TapeLimits {
                exchanges: 1,
                body_bytes: 8,
            },
        );
        let (request, response) = parts("http://api.test/");
        tape.keep(&request, b"", &response, b"0123456789");
        assert!(tape.played().incomplete.unwrap().contains("8 bytes"));
        let tape = Tape::record(
            &secrets(),
            TapeLimits {
                exchanges: 1,
                body_bytes: 8,
            },
        );
        tape.keep(&request, b"", &response, b"ok");
        tape.keep(&request, b"", &response, b"ok");
        assert_eq!(tape.played().exchanges.len(), 1);
        assert!(tape.played().incomplete.unwrap().contains("1 exchanges"));
    }
}
