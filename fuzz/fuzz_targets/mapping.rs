//! Flow input mapping (`${input…}`, `${steps.NAME…}`), within the bounds the registry keeps
//! (templates and outputs at most `KEPT_DEPTH` deep): never a panic; what it writes is one
//! JSON document; a template that refers to nothing comes out as itself.

#![no_main]

use gantry_host::KEPT_DEPTH;
use gantry_host::fuzzing::{json_check, json_nesting, map_input};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|input: (&str, &str, &str, &str)| {
    let (template, flow_input, name, output) = input;
    if json_nesting(template) > KEPT_DEPTH {
        return;
    }
    let Ok(template) = serde_json::from_str::<Value>(template) else {
        return;
    };
    let raw = |text: &str| {
        (json_nesting(text) <= KEPT_DEPTH)
            .then(|| RawValue::from_string(text.to_string()).ok())
            .flatten()
    };
    let (flow_input, output) = (raw(flow_input), raw(output));
    let steps: Vec<(&str, &RawValue)> = output.as_deref().map(|o| (name, o)).into_iter().collect();
    let Ok(text) = map_input(&template, flow_input.as_deref(), &steps) else {
        return;
    };
    json_check(&text).unwrap_or_else(|e| panic!("mapped to {text:?}, not JSON: {e}"));
    if !template.to_string().contains("${") {
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, template, "a template without references changed");
    }
});
