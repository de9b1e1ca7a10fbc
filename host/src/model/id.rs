//! Ids in JSON bodies: integers, which JSON Schema (and so the OpenAPI document) lets a client
//! write as `7` or `7.0` alike — a client generated from the document, or one in a language
//! whose numbers are all floats, may send either.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// An id as a JSON number with no fractional part.
struct JsonId(i64);

impl<'de> Deserialize<'de> for JsonId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Id;
        impl Visitor<'_> for Id {
            type Value = JsonId;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer id")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonId, E> {
                Ok(JsonId(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonId, E> {
                i64::try_from(v)
                    .map(JsonId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonId, E> {
                // In range: |v| < 2^63 (`i64::MAX as f64` rounds up to 2^63).
                if v.fract() == 0.0 && v.abs() < i64::MAX as f64 {
                    Ok(JsonId(v as i64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Id)
    }
}

/// `#[serde(deserialize_with = "id")]`: an id, `7` or `7.0`.
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    JsonId::deserialize(d).map(|id| id.0)
}

/// `#[serde(deserialize_with = "optional_id")]`: an id or `null`.
pub fn optional_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<JsonId>::deserialize(d).map(|id| id.map(|id| id.0))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::id")]
        id: i64,
        #[serde(default, deserialize_with = "super::optional_id")]
        other: Option<i64>,
    }

    fn parse(json: &str) -> Result<(i64, Option<i64>), serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| (b.id, b.other))
    }

    #[test]
    fn integers_written_either_way_are_ids() {
        assert_eq!(parse(r#"{"id": 7}"#).unwrap(), (7, None));
        assert_eq!(
            parse(r#"{"id": -7.0, "other": 3e2}"#).unwrap(),
            (-7, Some(300))
        );
        assert_eq!(parse(r#"{"id": 1, "other": null}"#).unwrap(), (1, None));
        for bad in [
            r#"{"id": 7.5}"#,
            r#"{"id": "7"}"#,
            r#"{"id": 9223372036854775808}"#,
            r#"{"id": 1e19}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
