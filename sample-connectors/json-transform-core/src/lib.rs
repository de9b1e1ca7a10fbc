//! The JSON reshaping behind the `json-transform` connector, as plain Rust with no WebAssembly
//! bindings, so that the component, the benchmark's native baseline and the Extism peer plugin
//! all run exactly the same code.
//!
//! Operations (each input is one JSON object; paths are dot-separated, numeric segments index
//! arrays, e.g. `orders.0.id`):
//! - `pick`: `{document, paths: [..]}` → a document holding only those paths.
//! - `rename`: `{document, mapping: {old: new}}` → the document with top-level keys renamed.
//! - `filter`: `{items: [..], where: {path, op, value}}` → `{items: [..]}` that match;
//!   `op` is one of `eq ne gt gte lt lte contains exists`.
//! - `template`: `{template: "Hi {{user.name}}", data}` → `{text}`; a missing path is an error.

use serde_json::{Map, Value, json};

/// Why an operation could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// The input does not fit the operation.
    InvalidInput(String),
    /// There is no operation of that name.
    UnknownOperation(String),
}

/// The operation names, in the order `describe()` lists them.
pub const OPERATIONS: [&str; 4] = ["pick", "rename", "filter", "template"];

/// Run `operation` on `input` (a JSON object as text) and return the output as JSON text.
pub fn run(operation: &str, input: &str) -> Result<String, TransformError> {
    let input: Value =
        serde_json::from_str(input).map_err(|e| invalid(format!("input is not JSON: {e}")))?;
    if !input.is_object() {
        return Err(invalid("input must be a JSON object"));
    }
    let output = match operation {
        "pick" => pick(&input)?,
        "rename" => rename(&input)?,
        "filter" => filter(&input)?,
        "template" => template(&input)?,
        other => {
            return Err(TransformError::UnknownOperation(format!(
                "no operation `{other}`"
            )));
        }
    };
    Ok(output.to_string())
}

fn invalid(message: impl Into<String>) -> TransformError {
    TransformError::InvalidInput(message.into())
}

fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |node, segment| match node {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Write `value` at `path` in `doc`, creating objects on the way.
fn insert(doc: &mut Value, path: &str, value: Value) {
    let mut node = doc;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let map = node.as_object_mut().expect("just made an object");
        if segments.peek().is_none() {
            map.insert(segment.into(), value);
            return;
        }
        node = map
            .entry(segment)
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn field<'a>(input: &'a Value, name: &str) -> Result<&'a Value, TransformError> {
    input
        .get(name)
        .ok_or_else(|| invalid(format!("missing field `{name}`")))
}

fn pick(input: &Value) -> Result<Value, TransformError> {
    let document = field(input, "document")?;
    let paths = field(input, "paths")?
        .as_array()
        .ok_or_else(|| invalid("`paths` must be an array of strings"))?;
    let mut out = Value::Object(Map::new());
    for path in paths {
        let path = path
            .as_str()
            .ok_or_else(|| invalid("`paths` must be an array of strings"))?;
        if path.is_empty() {
            return Err(invalid("a path must not be empty"));
        }
        if let Some(value) = lookup(document, path) {
            insert(&mut out, path, value.clone());
        }
    }
    Ok(out)
}

fn rename(input: &Value) -> Result<Value, TransformError> {
    let document = field(input, "document")?
        .as_object()
        .ok_or_else(|| invalid("`document` must be an object"))?;
    let mapping = field(input, "mapping")?
        .as_object()
        .ok_or_else(|| invalid("`mapping` must be an object of strings"))?;
    let mut out = Map::new();
    for (key, value) in document {
        let key = match mapping.get(key) {
            Some(Value::String(new)) => new.clone(),
            Some(_) => return Err(invalid(format!("`mapping.{key}` must be a string"))),
            None => key.clone(),
        };
        if out.insert(key.clone(), value.clone()).is_some() {
            return Err(invalid(format!("renaming produces the key `{key}` twice")));
        }
    }
    Ok(Value::Object(out))
}

fn compare(actual: Option<&Value>, op: &str, expected: &Value) -> Result<bool, TransformError> {
    let number = |v: &Value| v.as_f64();
    Ok(match op {
        "exists" => actual.is_some(),
        "eq" => actual == Some(expected),
        "ne" => actual != Some(expected),
        "gt" | "gte" | "lt" | "lte" => {
            let rhs =
                number(expected).ok_or_else(|| invalid(format!("`{op}` needs a numeric value")))?;
            match actual.and_then(number) {
                None => false,
                Some(lhs) => match op {
                    "gt" => lhs > rhs,
                    "gte" => lhs >= rhs,
                    "lt" => lhs < rhs,
                    _ => lhs <= rhs,
                },
            }
        }
        "contains" => match (actual, expected) {
            (Some(Value::String(s)), Value::String(needle)) => s.contains(needle.as_str()),
            (Some(Value::Array(items)), needle) => items.contains(needle),
            _ => false,
        },
        other => return Err(invalid(format!("unknown operator `{other}`"))),
    })
}

fn filter(input: &Value) -> Result<Value, TransformError> {
    let items = field(input, "items")?
        .as_array()
        .ok_or_else(|| invalid("`items` must be an array"))?;
    let condition = field(input, "where")?;
    let path = condition["path"]
        .as_str()
        .ok_or_else(|| invalid("`where.path` must be a string"))?;
    let op = condition["op"]
        .as_str()
        .ok_or_else(|| invalid("`where.op` must be a string"))?;
    let expected = condition.get("value").unwrap_or(&Value::Null);
    const OPERATORS: [&str; 8] = ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists"];
    if !OPERATORS.contains(&op) {
        return Err(invalid(format!(
            "unknown operator `{op}`; use one of {}",
            OPERATORS.join(" ")
        )));
    }
    if matches!(op, "gt" | "gte" | "lt" | "lte") && !expected.is_number() {
        return Err(invalid(format!("`{op}` needs a numeric value")));
    }
    let mut kept = Vec::new();
    for item in items {
        if compare(lookup(item, path), op, expected)? {
            kept.push(item.clone());
        }
    }
    Ok(json!({ "items": kept }))
}

fn template(input: &Value) -> Result<Value, TransformError> {
    let text = field(input, "template")?
        .as_str()
        .ok_or_else(|| invalid("`template` must be a string"))?;
    let data = field(input, "data")?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| invalid("unclosed `{{` in template"))?;
        let path = after[..end].trim();
        match lookup(data, path) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => return Err(invalid(format!("template refers to missing path `{path}`"))),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(json!({ "text": out }))
}
