//! The check that a connector's output is one JSON document, made on every call.
//!
//! `serde_json` decides what is JSON: [`check`] accepts exactly what
//! `serde_json::from_str::<IgnoredAny>` accepts, and its errors are `serde_json`'s. In front of
//! it sits [`quick`], a validator for the documents connectors usually return, which skips
//! through a long string with `memchr` (SIMD) where `serde_json` goes 8 bytes at a time. The
//! check was the part of a call's overhead that grew with its output; with `quick`,
//! `gantry bench` puts Gantry at 1.16–1.19× the hand-rolled host for echo of 10 KB, about
//! where it is at 100 B (1.12–1.16×).
//! `quick` only ever says "valid" or "ask serde_json": what it does not handle (a `\u` escape,
//! nesting deeper than 64, any error) goes to `serde_json`, so it cannot reject a document
//! `serde_json` accepts, and a test holds it to never accepting one `serde_json` rejects.

use serde::de::IgnoredAny;
use serde_json::Value;

/// Deepest nesting of a document Gantry keeps (a schema, a step's input template, a step's
/// output in a run record). Kept inside records a few levels deeper, such a document stays
/// far within what `serde_json` reads back (127 levels) and what the API's clients parse, so
/// every stored record can be read again: one tenant's document can never make a listing or a
/// history unreadable.
pub const KEPT_DEPTH: usize = 64;

/// How deep a JSON text nests: the most arrays and objects open at once (0 for a scalar).
/// Meant for valid JSON; on anything else it still ends, with a count of brackets outside
/// strings.
pub(crate) fn nesting(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                // Skip the string: to the next quote not escaped.
                at += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[at.min(bytes.len())..]) {
                        Some(k) if bytes[at + k] == b'\\' => at += k + 2,
                        Some(k) => {
                            at += k + 1;
                            break;
                        }
                        None => return deepest,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// How deep a `Value` nests (0 for a scalar), without recursion.
pub(crate) fn value_nesting(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// The kinds of JSON value, named as JSON Schema's `type` names them (`integer` aside: telling
/// it from `number` takes the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

/// The kind of the one document `text` holds, read from its first byte — meaningful only for a
/// text [`check`] accepts.
pub(crate) fn kind_of(text: &str) -> Option<Kind> {
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    Some(match first {
        b'{' => Kind::Object,
        b'[' => Kind::Array,
        b'"' => Kind::String,
        b't' | b'f' => Kind::Boolean,
        b'n' => Kind::Null,
        b'-' | b'0'..=b'9' => Kind::Number,
        _ => return None,
    })
}

/// The kind of a parsed value.
pub(crate) fn kind_of_value(value: &Value) -> Kind {
    match value {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Boolean,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

/// `Ok` when `text` is one JSON document (whitespace around it allowed), or why not.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    if quick(text.as_bytes()) {
        return Ok(());
    }
    serde_json::from_str::<IgnoredAny>(text).map(|_| ())
}

/// Deepest nesting [`quick`] follows (one bit per level); deeper documents go to `serde_json`.
const MAX_DEPTH: u32 = 64;

/// `true` only if `bytes` is one JSON document; `false` means "not known": ask `serde_json`.
fn quick(bytes: &[u8]) -> bool {
    let mut r = Reader { bytes, at: 0 };
    // Open containers, innermost in the lowest bit: 1 for an object, 0 for an array.
    let (mut open, mut depth) = (0u64, 0u32);
    loop {
        // A value.
        r.skip_whitespace();
        match r.peek() {
            Some(b'{') => {
                r.at += 1;
                r.skip_whitespace();
                if r.eat(b'}') {
                    // An empty object is a whole value: on to what follows it.
                } else {
                    if depth == MAX_DEPTH || !r.key() {
                        return false;
                    }
                    (open, depth) = (open << 1 | 1, depth + 1);
                    continue;
                }
            }
            Some(b'[') => {
                r.at += 1;
                r.skip_whitespace();
                if !r.eat(b']') {
                    if depth == MAX_DEPTH {
                        return false;
                    }
                    (open, depth) = (open << 1, depth + 1);
                    continue;
                }
            }
            Some(b'"') => {
                r.at += 1;
                if !r.string_rest() {
                    return false;
                }
            }
            Some(b't') => {
                if !r.literal(b"true") {
                    return false;
                }
            }
            Some(b'f') => {
                if !r.literal(b"false") {
                    return false;
                }
            }
            Some(b'n') => {
                if !r.literal(b"null") {
                    return false;
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                if !r.number() {
                    return false;
                }
            }
            _ => return false,
        }
        // After a value: the next element, the end of containers, or the end of the document.
        loop {
            r.skip_whitespace();
            if depth == 0 {
                return r.at == bytes.len();
            }
            let in_object = open & 1 == 1;
            match r.peek() {
                Some(b',') => {
                    r.at += 1;
                    if in_object && !r.key() {
                        return false;
                    }
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ => return false,
            }
            r.at += 1;
            (open, depth) = (open >> 1, depth - 1);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// An object key and its colon: `"…" :`.
    fn key(&mut self) -> bool {
        self.skip_whitespace();
        if !self.eat(b'"') || !self.string_rest() {
            return false;
        }
        self.skip_whitespace();
        self.eat(b':')
    }

    /// The rest of a string whose opening quote was read.
    fn string_rest(&mut self) -> bool {
        loop {
            let rest = &self.bytes[self.at..];
            let Some(end) = find_special(rest) else {
                return false;
            };
            self.at += end + 1;
            match rest[end] {
                b'"' => return true,
                // Only the one-character escapes; `\u` is left to serde_json.
                b'\\' => match self.peek() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
                    _ => return false,
                },
                _ => return false, // a control character
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        self.at += if found { word.len() } else { 0 };
        found
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        // Whatever follows (`01`, `1.2.3`) is for the caller to accept or not.
        true
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

/// Where the plain run at the start of `rest` (inside a string) ends: at its closing quote, an
/// escape, or a control character (which a JSON string may not hold).
///
/// Most keys and values are short: their first [`SHORT`] bytes are looked at 8 at a time (as
/// serde_json does); the rest of a longer string goes to memchr, which uses SIMD.
fn find_special(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = rest.get(at..at + 8) {
        let found = special_bytes(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
        if at == SHORT {
            let tail = &rest[at..];
            let mut end = memchr::memchr2(b'"', b'\\', tail)?;
            if has_control(&tail[..end]) {
                end = tail.iter().position(|&b| b < 0x20)?;
            }
            return Some(at + end);
        }
    }
    let tail = &rest[at..];
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|end| at + end)
}

/// Bytes of a string looked at 8 at a time before memchr takes over.
const SHORT: usize = 64;

/// The high bit of each byte of `chunk` that is `"`, `\` or below 0x20 — exact for the lowest
/// such byte (the one that counts), perhaps not above it (Mycroft's zero-byte test).
fn special_bytes(chunk: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = has_zero(chunk ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(chunk ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & (ONES << 7)
}

/// Whether `bytes` holds a control character. A minimum over chunks, so that it compiles to
/// SIMD.
fn has_control(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .any(|chunk| chunk.iter().fold(u8::MAX, |min, &b| min.min(b)) < 0x20)
}

/// `text` as a `Value`, for checking against a schema. `serde_json` accepts as a document
/// ([`check`]) more than it can put into a `Value`: a lone surrogate escape (`"\ud800"`, which
/// JavaScript's `JSON.stringify` writes) and a number beyond `f64` (`1e400`). For the check
/// only, such a document is read with each lone surrogate as U+FFFD and each such number as the
/// largest `f64` of its sign; what the connector receives is the text as it was. A document
/// nesting deeper than [`READ_DEPTH`] cannot be read (found by the `json` fuzz target: the
/// error used to be the first one met, a misleading "number out of range").
pub(crate) fn value_for_checking(text: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(first) => {
            check(text)?;
            let depth = nesting(text);
            if depth > READ_DEPTH {
                // What stops it, whatever else `first` met on the way.
                return Err(serde::de::Error::custom(format!(
                    "recursion limit exceeded: it nests {depth} levels, at most {READ_DEPTH} are read"
                )));
            }
            serde_json::from_str(&tamed(text)).map_err(|_| first)
        }
    }
}

/// The deepest `serde_json` reads into a value: its recursion limit of 128 stops the 128th
/// level opening (found by the `json` fuzz target: a document nesting exactly 128 levels was
/// refused with `serde_json`'s bare "recursion limit exceeded"). [`check`] walks any depth.
pub(crate) const READ_DEPTH: usize = 127;

/// `text` (valid JSON) with lone surrogate escapes as `\ufffd` and numbers beyond `f64` as
/// `±1.7976931348623157e308`.
fn tamed(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let hex = |at: usize| {
        text.get(at..at + 4)
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                // Through the string, escape by escape.
                out.push('"');
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    if bytes[at] == b'\\' && bytes.get(at + 1) == Some(&b'u') {
                        let unit = hex(at + 2).unwrap_or(0);
                        let paired = (0xD800..0xDC00).contains(&unit)
                            && bytes.get(at + 6) == Some(&b'\\')
                            && bytes.get(at + 7) == Some(&b'u')
                            && hex(at + 8).is_some_and(|low| (0xDC00..0xE000).contains(&low));
                        if paired {
                            out.push_str(&text[at..at + 12]);
                            at += 12;
                        } else if (0xD800..0xE000).contains(&unit) {
                            out.push_str("\\ufffd");
                            at += 6;
                        } else {
                            out.push_str(&text[at..at + 6]);
                            at += 6;
                        }
                    } else if bytes[at] == b'\\' {
                        out.push_str(&text[at..at + 2]);
                        at += 2;
                    } else {
                        let len = text[at..].chars().next().map_or(1, char::len_utf8);
                        out.push_str(&text[at..at + len]);
                        at += len;
                    }
                }
                out.push('"');
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < bytes.len()
                    && matches!(bytes[at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    at += 1;
                }
                let number = &text[start..at];
                match number.parse::<f64>() {
                    Ok(n) if n.is_infinite() && n < 0.0 => out.push_str("-1.7976931348623157e308"),
                    Ok(n) if n.is_infinite() => out.push_str("1.7976931348623157e308"),
                    _ => out.push_str(number),
                }
            }
            _ => {
                let len = text[at..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[at..at + len]);
                at += len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_the_documents_connectors_return() {
        for doc in [
            "{}",
            "[]",
            " \n{\"a\": 1}\t",
            r#"{"payload":"xxxxxxxx"}"#,
            r#"{"a":[1,-2,3.5,-0.25e10,6E-3,7e+2,0],"b":{"c":null,"d":true,"e":false},"f":""}"#,
            r#"["esc \" \\ \/ \b \f \n \r \t", "ünïcödé ✓", [[[]]], [{}]]"#,
            "\"just a string\"",
            "12345",
            "-0",
            "null",
        ] {
            assert!(quick(doc.as_bytes()), "quick rejected {doc}");
            assert!(serde_accepts(doc), "serde rejected {doc}");
        }
    }

    #[test]
    fn rejects_what_is_not_json_and_serde_agrees() {
        for doc in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "[1}",
            "{\"a\":1]",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "-",
            "+1",
            "--1",
            "tru",
            "nul",
            "truex",
            "\"open",
            "\"tab\tinside\"",
            "\"bad \\x escape\"",
            "{} {}",
            "1 2",
            "NaN",
            "'single'",
        ] {
            assert!(!quick(doc.as_bytes()), "quick accepted {doc:?}");
            assert!(!serde_accepts(doc), "serde accepted {doc:?}");
            assert!(check(doc).is_err(), "check accepted {doc:?}");
        }
    }

    #[test]
    fn the_first_byte_tells_a_documents_kind() {
        for text in [
            " {\"a\": 1}",
            "[]",
            "\r\n\"s\"",
            "true",
            "false",
            "null",
            "-0.5",
            "7",
            "1e400",
        ] {
            let value = value_for_checking(text).unwrap();
            assert_eq!(kind_of(text), Some(kind_of_value(&value)), "{text:?}");
        }
        assert_eq!(kind_of("   "), None);
        assert_eq!(kind_of("'a'"), None);
    }

    #[test]
    fn a_document_too_deep_to_read_says_so() {
        // Found by the `json` fuzz target: a number beyond `f64` before the depth was the
        // error given.
        let text = format!("[1e400,{}{}]", "[".repeat(130), "]".repeat(130));
        assert!(check(&text).is_ok(), "a document, however deep");
        let e = value_for_checking(&text).unwrap_err();
        assert!(e.to_string().starts_with("recursion limit exceeded"), "{e}");
        let within = format!("[1e400,{}{}]", "[".repeat(120), "]".repeat(120));
        assert!(value_for_checking(&within).is_ok());
        // At the edge: 127 levels are read, 128 are not, and the error says why.
        let nested = |depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(value_for_checking(&nested(READ_DEPTH)).is_ok());
        let e = value_for_checking(&nested(READ_DEPTH + 1)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("recursion limit exceeded: it nests 128 levels, at most 127"),
            "{e}"
        );
    }

    #[test]
    fn leaves_unicode_escapes_and_deep_nesting_to_serde() {
        let escaped = r#"{"s":"\u00e9 \ud83d\ude00"}"#;
        assert!(!quick(escaped.as_bytes()));
        assert!(check(escaped).is_ok());

        let nested = |depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(!quick(nested(65).as_bytes()));
        assert!(check(&nested(65)).is_ok());
        assert!(quick(nested(64).as_bytes()));

        let unbalanced = format!("{}1{}", "[".repeat(65), "]".repeat(64));
        assert!(check(&unbalanced).is_err());
    }

    #[test]
    fn nesting_counts_open_containers_outside_strings() {
        for (doc, depth) in [
            ("1", 0),
            ("\"[[[\"", 0),
            ("[]", 1),
            (r#"{"a":[{"b":[1,2]},[]]}"#, 4),
            (r#"["]\"[{", {"k\\": [["x"]]}]"#, 4),
            (r#"[[["\\\"]]]"]]]"#, 3),
        ] {
            assert_eq!(nesting(doc), depth, "{doc}");
            let value: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(value_nesting(&value), depth, "{doc}");
        }
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(nesting(&deep), 100_000);
    }

    #[test]
    fn finds_a_control_character_anywhere_in_a_long_string() {
        let long = "x".repeat(10_000);
        assert!(quick(format!("\"{long}\"").as_bytes()));
        for at in [0, 1, 63, 64, 65, 4095, 9_999] {
            let mut bytes = format!("\"{long}\"").into_bytes();
            bytes[1 + at] = b'\n';
            assert!(!quick(&bytes), "missed a newline at {at}");
        }
    }

    /// A tiny deterministic generator (xorshift), so the test needs no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn value(rng: &mut Rng, depth: u32, out: &mut String) {
        let ws = [" ", "", "\n", "\t", "\r", ""];
        out.push_str(ws[rng.below(ws.len())]);
        match rng.below(if depth > 4 { 6 } else { 8 }) {
            0 => out.push_str("null"),
            1 => out.push_str(["true", "false"][rng.below(2)]),
            2 => out.push_str(
                ["0", "-1", "12.5", "3e7", "-0.0E-2", "99999999999999999999"][rng.below(6)],
            ),
            3 | 4 => {
                let parts = ["abc", "\\n", "\\\"", "é", " ", "\\u0041", "\\/", "✓"];
                out.push('"');
                for _ in 0..rng.below(5) {
                    out.push_str(parts[rng.below(parts.len())]);
                }
                out.push('"');
            }
            5 => out.push_str(&format!("\"{}\"", "x".repeat(rng.below(200)))),
            6 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    value(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"k{i}\""));
                    out.push_str(ws[rng.below(ws.len())]);
                    out.push(':');
                    value(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
        out.push_str(ws[rng.below(ws.len())]);
    }

    /// Generated documents, and mutations of them (a byte dropped, doubled or replaced by one
    /// that matters to JSON): `quick` never accepts what serde_json rejects, and accepts every
    /// valid document it is meant to handle.
    #[test]
    fn agrees_with_serde_json_on_generated_documents() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let significant = b"{}[],:\"\\ \n\t0123456789-+.eEtrufalsn\x01x";
        let (mut accepted, mut mutated_accepted) = (0, 0);
        for _ in 0..20_000 {
            let mut doc = String::new();
            value(&mut rng, 0, &mut doc);
            let mut bytes = doc.into_bytes();
            let mutate = rng.below(2) == 1 && !bytes.is_empty();
            if mutate {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, bytes[at]),
                    _ => bytes[at] = significant[rng.below(significant.len())],
                }
            }
            // Mutations may split a multi-byte character: only valid UTF-8 is a `&str`.
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let serde = serde_accepts(text);
            let fast = quick(text.as_bytes());
            assert!(
                !fast || serde,
                "quick accepted what serde_json rejects: {text:?}"
            );
            assert_eq!(check(text).is_ok(), serde, "check disagrees on {text:?}");
            if !mutate {
                assert!(serde, "the generator made invalid JSON: {text:?}");
                if !text.contains("\\u") {
                    assert!(fast, "quick did not handle {text:?}");
                }
                accepted += 1;
            } else if fast {
                mutated_accepted += 1;
            }
        }
        assert!(accepted > 5_000, "too few valid documents: {accepted}");
        assert!(
            mutated_accepted > 100,
            "mutations never stayed valid: {mutated_accepted}"
        );
    }

    #[test]
    fn what_serde_json_cannot_hold_in_a_value_is_tamed_for_checking_only() {
        let text = r#"{"s": "\ud800 half", "pair": "\ud83d\ude00", "esc": "\\ud800", "big": 1e400, "neg": -1e999, "n": [1, 2.5e3]}"#;
        assert!(serde_json::from_str::<Value>(text).is_err());
        let value = value_for_checking(text).unwrap();
        assert_eq!(value["s"], "\u{fffd} half");
        assert_eq!(value["pair"], "😀");
        assert_eq!(value["esc"], "\\ud800", "an escaped backslash is no escape");
        assert_eq!(value["big"], f64::MAX);
        assert_eq!(value["neg"], f64::MIN);
        assert_eq!(value["n"], serde_json::json!([1, 2500.0]));
        assert!(value_for_checking("{oops").is_err());
        assert!(value_for_checking(r#"{"a": 1} x"#).is_err());
    }
}
