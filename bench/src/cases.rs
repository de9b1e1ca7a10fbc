//! The inputs every bench and the report measure, and the native functions they are compared
//! with: echo of 100 B and 10 KB, and `json-transform`'s `pick` on a ~1 KB order document.

/// One measured case: which connector and operation, on which input.
#[derive(Debug, Clone)]
pub struct Case {
    /// Short name for tables, e.g. `echo-100B`.
    pub name: String,
    /// Sample connector that runs it (as named in `sample-connectors/`).
    pub connector: String,
    pub operation: String,
    /// A JSON document.
    pub input: String,
    /// The same work as a plain Rust function, where there is one.
    pub native: Option<fn(&str) -> String>,
}

/// The three standard cases.
pub fn standard() -> Vec<Case> {
    vec![
        Case {
            name: "echo-100B".into(),
            connector: "echo".into(),
            operation: "echo".into(),
            input: echo_input(100),
            native: Some(native_echo),
        },
        Case {
            name: "echo-10KB".into(),
            connector: "echo".into(),
            operation: "echo".into(),
            input: echo_input(10 * 1024),
            native: Some(native_echo),
        },
        Case {
            name: "json-pick-1KB".into(),
            connector: "json-transform".into(),
            operation: "pick".into(),
            input: pick_input(),
            native: Some(native_pick),
        },
    ]
}

/// `echo`'s work: the guest receives its own copy of the input and returns it.
pub fn native_echo(input: &str) -> String {
    input.to_string()
}

/// `json-transform`'s `pick`, the very code the component runs.
pub fn native_pick(input: &str) -> String {
    json_transform_core::run("pick", input).expect("the pick input is valid")
}

/// A JSON object of exactly `size` bytes (at least 16): `{"payload":"xxxx…"}`.
pub fn echo_input(size: usize) -> String {
    let overhead = r#"{"payload":""}"#.len();
    let fill = size.saturating_sub(overhead);
    format!(r#"{{"payload":"{}"}}"#, "x".repeat(fill))
}

/// `pick` of four paths out of an order document of about 1 KB.
pub fn pick_input() -> String {
    let lines: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            serde_json::json!({
                "sku": format!("SKU-{i:04}"),
                "description": "Stainless steel bolt, M8",
                "quantity": i + 1,
                "unit_price": 1.25 + f64::from(i),
            })
        })
        .collect();
    serde_json::json!({
        "document": {
            "id": "ord_8842",
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
            "shipping": {"street": "12 Analytical Row", "city": "London", "postcode": "N1 7AA"},
            "lines": lines,
            "total": 118.0,
        },
        "paths": ["id", "customer.name", "lines.0.sku", "total"],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_have_the_sizes_their_names_say() {
        assert_eq!(echo_input(100).len(), 100);
        assert_eq!(echo_input(10 * 1024).len(), 10 * 1024);
        let pick = pick_input().len();
        assert!((900..=1300).contains(&pick), "pick input is {pick} bytes");
        let picked: serde_json::Value = serde_json::from_str(&native_pick(&pick_input())).unwrap();
        assert_eq!(picked["customer"]["name"], "Ada Lovelace");
        assert_eq!(picked["lines"]["0"]["sku"], "SKU-0000");
        assert_eq!(picked["total"], 118.0);
    }
}
