//! `worldbank`: the World Bank Indicators API v2 (<https://api.worldbank.org/v2>) through
//! Gantry's `http.send` import.
//!
//! Every API v2 response is a two-element JSON array — paging metadata, then the records — or a
//! one-element array holding a `message` when a parameter is invalid. Operations:
//! - `countries` `{page?, per_page?}` → `{page, pages, per_page, total, countries: [..]}`
//! - `country` `{code}` → one country, or `not-found`
//! - `indicator` `{country, indicator, date?: "2000" | "2000:2010", page?, per_page?}` →
//!   `{page, pages, per_page, total, indicator, country, points: [{date, value}]}`
//!
//! Configuration: `base_url` (default `https://api.worldbank.org/v2`).

use gantry_sdk::http::{self, HttpError, Request};
use gantry_sdk::{ConfigKey, ConnectorError, ConnectorInfo, Guest, OperationInfo};
use serde_json::{Value, json};

struct WorldBank;

const DEFAULT_BASE: &str = "https://api.worldbank.org/v2";

fn invalid(m: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidInput(m.into())
}

fn upstream(m: impl Into<String>) -> ConnectorError {
    ConnectorError::Upstream(m.into())
}

fn op(name: &str, description: &str, input: Value, output: Value) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        input_schema: input.to_string(),
        output_schema: output.to_string(),
    }
}

/// A query parameter that must be a short code of letters, digits and dots.
fn code(input: &Value, field: &str, max: usize) -> Result<String, ConnectorError> {
    let value = input[field]
        .as_str()
        .ok_or_else(|| invalid(format!("`{field}` must be a string")))?;
    if value.is_empty()
        || value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        return Err(invalid(format!(
            "`{field}` must be 1 to {max} letters, digits or dots"
        )));
    }
    Ok(value.to_string())
}

fn paging(input: &Value) -> Result<(u64, u64), ConnectorError> {
    let page = input
        .get("page")
        .map_or(Some(1), Value::as_u64)
        .filter(|p| *p >= 1);
    let per_page = input
        .get("per_page")
        .map_or(Some(50), Value::as_u64)
        .filter(|p| (1..=1000).contains(p));
    match (page, per_page) {
        (Some(page), Some(per_page)) => Ok((page, per_page)),
        _ => Err(invalid(
            "`page` must be ≥ 1 and `per_page` between 1 and 1000",
        )),
    }
}

fn date_range(input: &Value) -> Result<Option<String>, ConnectorError> {
    let Some(date) = input.get("date") else {
        return Ok(None);
    };
    let date = date
        .as_str()
        .ok_or_else(|| invalid("`date` must be a string like 2000 or 2000:2010"))?;
    let year = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match date.split_once(':') {
        Some((from, to)) => year(from) && year(to) && from <= to,
        None => year(date),
    };
    if !ok {
        return Err(invalid(
            "`date` must be a year or a range of years like 2000:2010",
        ));
    }
    Ok(Some(date.to_string()))
}

/// GET `path` (relative to the base URL) and split the API's `[paging, records]` answer.
fn get(path: &str, query: &str) -> Result<(Value, Vec<Value>), ConnectorError> {
    let base = gantry_sdk::config("base_url").unwrap_or_else(|| DEFAULT_BASE.to_string());
    let url = format!("{}/{path}?format=json&{query}", base.trim_end_matches('/'));
    gantry_sdk::log::log(gantry_sdk::Level::Debug, &format!("GET {path}?{query}"));
    let response = http::send(&Request {
        method: "GET".into(),
        url,
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    })
    .map_err(|e| match e {
        HttpError::Denied(m) => upstream(format!("the host refused the request: {m}")),
        HttpError::InvalidRequest(m) => ConnectorError::Internal(format!("bad request: {m}")),
        HttpError::Timeout => upstream("the World Bank API did not answer in time"),
        HttpError::TooLarge => upstream("the World Bank API answer is too large"),
        HttpError::Transport(m) => upstream(format!("cannot reach the World Bank API: {m}")),
    })?;
    match response.status {
        200 => {}
        404 => return Err(ConnectorError::NotFound(format!("{path} does not exist"))),
        429 => {
            return Err(ConnectorError::RateLimited(
                "the World Bank API asks to slow down".into(),
            ));
        }
        status => {
            return Err(upstream(format!(
                "the World Bank API answered HTTP {status}"
            )));
        }
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|_| upstream("the World Bank API answered something that is not JSON"))?;
    match body {
        Value::Array(mut parts) if parts.len() == 2 && parts[1].is_array() => {
            let records = parts
                .pop()
                .and_then(|r| r.as_array().cloned())
                .unwrap_or_default();
            Ok((parts.pop().unwrap_or(Value::Null), records))
        }
        // `[{"page":1,...}, null]`: a valid query with no records.
        Value::Array(parts) if parts.len() == 2 && parts[1].is_null() => {
            Ok((parts[0].clone(), Vec::new()))
        }
        Value::Array(parts) if parts.first().is_some_and(|p| p.get("message").is_some()) => {
            let message = parts[0]["message"][0]["value"]
                .as_str()
                .unwrap_or("invalid parameter");
            Err(ConnectorError::NotFound(format!(
                "the World Bank API says: {}",
                message.trim()
            )))
        }
        _ => Err(upstream(
            "the World Bank API answered an unexpected JSON shape",
        )),
    }
}

/// Numbers in paging metadata come as numbers or strings (`"per_page": "50"`).
fn number(meta: &Value, field: &str) -> Value {
    match &meta[field] {
        Value::String(s) => s.parse::<u64>().map(Value::from).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn page_of(meta: &Value) -> serde_json::Map<String, Value> {
    ["page", "pages", "per_page", "total"]
        .into_iter()
        .map(|f| (f.to_string(), number(meta, f)))
        .collect()
}

fn country_record(c: &Value) -> Value {
    let text = |v: &Value| v.as_str().map(str::trim).unwrap_or_default().to_string();
    json!({
        "id": text(&c["id"]),
        "iso2": text(&c["iso2Code"]),
        "name": text(&c["name"]),
        "region": text(&c["region"]["value"]),
        "income_level": text(&c["incomeLevel"]["value"]),
        "capital": text(&c["capitalCity"]),
        "longitude": c["longitude"].as_str().and_then(|s| s.parse::<f64>().ok()),
        "latitude": c["latitude"].as_str().and_then(|s| s.parse::<f64>().ok()),
    })
}

impl Guest for WorldBank {
    fn describe() -> ConnectorInfo {
        let paging = json!({"page": {"type": "integer", "minimum": 1},
                            "per_page": {"type": "integer", "minimum": 1, "maximum": 1000}});
        let country = json!({"type": "object", "properties": {
            "id": {"type": "string"}, "iso2": {"type": "string"}, "name": {"type": "string"},
            "region": {"type": "string"}, "income_level": {"type": "string"}, "capital": {"type": "string"},
            "longitude": {"type": ["number", "null"]}, "latitude": {"type": ["number", "null"]}}});
        let mut countries_input = json!({"type": "object", "properties": paging.clone()});
        countries_input["additionalProperties"] = json!(false);
        let mut indicator_props = paging.clone();
        indicator_props["country"] = json!({"type": "string", "pattern": "^[A-Za-z0-9]{2,3}$"});
        indicator_props["indicator"] =
            json!({"type": "string", "examples": ["NY.GDP.MKTP.CD", "SP.POP.TOTL"]});
        indicator_props["date"] = json!({"type": "string", "pattern": "^[0-9]{4}(:[0-9]{4})?$"});
        ConnectorInfo {
            name: "worldbank".into(),
            version: "1.0.0".into(),
            description: "World Bank Indicators API v2: countries and development indicators"
                .into(),
            operations: vec![
                op(
                    "countries",
                    "List countries, one page at a time",
                    countries_input,
                    json!({"type": "object", "properties": {"countries": {"type": "array", "items": country}}}),
                ),
                op(
                    "country",
                    "One country by ISO code",
                    json!({"type": "object", "required": ["code"], "properties": {
                       "code": {"type": "string", "pattern": "^[A-Za-z0-9]{2,3}$"}}}),
                    country.clone(),
                ),
                op(
                    "indicator",
                    "Values of an indicator for a country over a date range",
                    json!({"type": "object", "required": ["country", "indicator"], "properties": indicator_props}),
                    json!({"type": "object", "properties": {"points": {"type": "array", "items": {
                       "type": "object", "properties": {"date": {"type": "string"}, "value": {"type": ["number", "null"]}}}}}}),
                ),
            ],
            config: vec![ConfigKey {
                name: "base_url".into(),
                description: "Base URL of the API".into(),
                default_value: Some(DEFAULT_BASE.into()),
                required: false,
            }],
            secrets: Vec::new(),
            // The public API, and a local stand-in for development and tests (which still needs
            // an install grant and the operator's permission for loopback addresses).
            outbound_hosts: vec![
                "https://api.worldbank.org".into(),
                "http://127.0.0.1:*".into(),
            ],
        }
    }

    fn invoke(operation: String, input: String) -> Result<String, ConnectorError> {
        let input: Value =
            serde_json::from_str(&input).map_err(|e| invalid(format!("input is not JSON: {e}")))?;
        if !input.is_object() {
            return Err(invalid("input must be a JSON object"));
        }
        let output = match operation.as_str() {
            "countries" => {
                let (page, per_page) = paging(&input)?;
                let (meta, records) = get("country", &format!("page={page}&per_page={per_page}"))?;
                let mut out = page_of(&meta);
                out.insert(
                    "countries".into(),
                    records.iter().map(country_record).collect(),
                );
                Value::Object(out)
            }
            "country" => {
                let code = code(&input, "code", 3)?;
                let (_, records) = get(&format!("country/{code}"), "")?;
                records
                    .first()
                    .map(country_record)
                    .ok_or_else(|| ConnectorError::NotFound(format!("no country `{code}`")))?
            }
            "indicator" => {
                let country = code(&input, "country", 3)?;
                let indicator = code(&input, "indicator", 64)?;
                let (page, per_page) = paging(&input)?;
                let mut query = format!("page={page}&per_page={per_page}");
                if let Some(date) = date_range(&input)? {
                    query.push_str(&format!("&date={date}"));
                }
                let (meta, records) =
                    get(&format!("country/{country}/indicator/{indicator}"), &query)?;
                let mut out = page_of(&meta);
                let first = records.first();
                out.insert(
                    "indicator".into(),
                    json!({
                        "id": first.map_or(json!(indicator), |r| r["indicator"]["id"].clone()),
                        "name": first.map_or(Value::Null, |r| r["indicator"]["value"].clone()),
                    }),
                );
                out.insert(
                    "country".into(),
                    first.map_or(json!(country), |r| r["country"]["value"].clone()),
                );
                out.insert(
                    "points".into(),
                    records
                        .iter()
                        .map(|r| json!({"date": r["date"], "value": r["value"]}))
                        .collect(),
                );
                Value::Object(out)
            }
            other => return Err(ConnectorError::NotFound(format!("no operation `{other}`"))),
        };
        Ok(output.to_string())
    }
}

gantry_sdk::export_connector!(WorldBank);
