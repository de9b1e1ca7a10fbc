//! What a guest's `describe()` answers, checked as a load checks it and its schemas compiled
//! as a load compiles them: never a panic or a hang; a description that is kept can be
//! written and read back as itself (what the registry stores must stay readable).

#![no_main]

use arbitrary::Arbitrary;
use gantry_host::Description;
use gantry_host::fuzzing::{Described, describe};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Answer {
    name: String,
    version: (u8, u8, u8, Option<String>),
    raw_version: Option<String>,
    description: String,
    operations: Vec<(String, String, Schema, Schema)>,
    config: Vec<(String, String, Option<String>, bool)>,
    secrets: Vec<(String, String, bool)>,
    outbound_hosts: Vec<String>,
}

/// A schema as text: mostly shapes a JSON Schema compiler has to work at, with fuzzed parts.
#[derive(Arbitrary, Debug)]
enum Schema {
    Raw(String),
    Type(String),
    Pattern(String),
    Format(String),
    Ref(String),
    Object(String, String, u8),
    Nested(u8),
}

impl Schema {
    fn text(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap();
        match self {
            Schema::Raw(text) => text.clone(),
            Schema::Type(t) => format!(r#"{{"type":{}}}"#, quoted(t)),
            Schema::Pattern(p) => format!(r#"{{"type":"string","pattern":{}}}"#, quoted(p)),
            Schema::Format(f) => format!(r#"{{"type":"string","format":{}}}"#, quoted(f)),
            Schema::Ref(r) => format!(r#"{{"$ref":{}}}"#, quoted(r)),
            Schema::Object(key, t, max) => format!(
                r#"{{"type":"object","properties":{{{}:{{"type":{}}}}},"required":[{}],"maxProperties":{max}}}"#,
                quoted(key),
                quoted(t),
                quoted(key)
            ),
            Schema::Nested(depth) => {
                let depth = usize::from(*depth);
                format!("{}{{}}{}", r#"{"items":"#.repeat(depth), "}".repeat(depth))
            }
        }
    }
}

fuzz_target!(|answer: Answer| {
    let (major, minor, patch, pre) = &answer.version;
    let version = answer.raw_version.clone().unwrap_or_else(|| match pre {
        Some(pre) => format!("{major}.{minor}.{patch}-{pre}"),
        None => format!("{major}.{minor}.{patch}"),
    });
    let described = Described {
        name: answer.name,
        version,
        description: answer.description,
        operations: answer
            .operations
            .iter()
            .map(|(name, text, input, output)| {
                (name.clone(), text.clone(), input.text(), output.text())
            })
            .collect(),
        config: answer.config,
        secrets: answer.secrets,
        outbound_hosts: answer.outbound_hosts,
    };
    if let Ok(description) = describe(described) {
        let stored = serde_json::to_string(&description).expect("a description serialises");
        let read: Description =
            serde_json::from_str(&stored).expect("a stored description reads back");
        assert_eq!(read, description);
    }
});
