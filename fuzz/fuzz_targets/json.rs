//! The output check of every call, differential against `serde_json`: the same verdict on
//! every text, never a panic; a document it accepts can be read for schema checks, and its
//! nesting counted without parsing is the nesting `serde_json` walks through, its kind told by
//! its first byte the kind of the value read.

#![no_main]

use gantry_host::fuzzing::{
    JSON_READ_DEPTH, json_check, json_for_checking, json_kinds, json_nesting, value_nesting,
};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = json_check(text).is_ok();
    let serde = serde_json::from_str::<IgnoredAny>(text).is_ok();
    assert_eq!(ours, serde, "the verdicts differ on {text:?}");
    let nesting = json_nesting(text);
    if ours {
        // Read for schema checks: any document serde_json's recursion limit lets it read.
        let value = match json_for_checking(text) {
            Ok(value) => Some(value),
            Err(e) => {
                let deep = nesting > JSON_READ_DEPTH
                    && e.to_string().starts_with("recursion limit exceeded");
                assert!(
                    deep,
                    "a document the check accepts does not read: {e}: {text:?}"
                );
                None
            }
        };
        // An input schema asking only for a kind reads it from the first byte: the kind of
        // the value read.
        if let Some(value) = &value {
            let (by_first_byte, read) = json_kinds(text, value);
            assert_eq!(by_first_byte.as_deref(), Some(read.as_str()), "{text:?}");
        }
        // Walked into `Depth`, a number beyond `f64` or a lone surrogate escape is an error
        // (skipped, they are not); then the value read for checking, which keeps one member of
        // each name, bounds it.
        match (serde_json::from_str::<Depth>(text), &value) {
            (Ok(Depth(depth)), _) => assert_eq!(nesting, depth, "nesting of {text:?}"),
            (Err(_), Some(value)) => assert!(nesting >= value_nesting(value), "{text:?}"),
            (Err(_), None) => {}
        }
    }
});

/// How deep a document nests, as `serde_json` walks it (every member, duplicates included).
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_unit<E>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(d)) = seq.next_element()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Depth(d))) = map.next_entry()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }
}
