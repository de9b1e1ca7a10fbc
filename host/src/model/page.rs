//! Paging of lists.

use super::{parse_version, validate_name};
use serde::{Deserialize, Deserializer, de::Error as _};

/// An `after` that names no item of the list it pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`after` must be {expected}, not `{after}`")]
pub struct InvalidPage {
    pub after: String,
    /// What the list is paged by: "an id", "`org/name`", "a version".
    pub expected: &'static str,
}

/// A page of a list: at most `limit` items after the one named `after` (an id, or
/// `org/name` in the marketplace).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Page {
    /// Most items to return (default 100, at most 1000).
    #[serde(deserialize_with = "limit")]
    pub limit: Option<usize>,
    /// Return the items after this one (for runs: before it, as they come newest first);
    /// empty or absent: from the start.
    pub after: Option<String>,
}

/// A page's `limit` as a request gives it: 1 to [`Page::MAX`] (a library caller's is
/// clamped instead).
pub(crate) fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let limit = Option::<usize>::deserialize(d)?;
    match limit {
        Some(n) if !(1..=Page::MAX).contains(&n) => Err(D::Error::custom(format!(
            "limit must be from 1 to {}, not {n}",
            Page::MAX
        ))),
        _ => Ok(limit),
    }
}

impl Page {
    pub const DEFAULT: usize = 100;
    pub const MAX: usize = 1000;

    /// The number of items to return.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT).clamp(1, Self::MAX)
    }

    /// `after`, unless absent or empty.
    fn after(&self) -> Option<&str> {
        self.after.as_deref().filter(|a| !a.is_empty())
    }

    /// `after` as an id (absent: from the start).
    pub fn after_id(&self) -> Result<Option<i64>, InvalidPage> {
        self.after
            .as_deref()
            .map(|a| a.parse().map_err(|_| self.invalid("an id")))
            .transpose()
    }

    /// `after` as a connector, `org/name` (absent or empty: from the start).
    pub fn after_connector(&self) -> Result<Option<(&str, &str)>, InvalidPage> {
        self.after()
            .map(|a| {
                a.split_once('/')
                    .filter(|(org, name)| {
                        validate_name("", org).is_ok() && validate_name("", name).is_ok()
                    })
                    .ok_or_else(|| self.invalid("`org/name`"))
            })
            .transpose()
    }

    /// `after` as a name (absent or empty: from the start).
    pub fn after_name(&self) -> Result<Option<&str>, InvalidPage> {
        self.after()
            .map(|a| {
                validate_name("", a)
                    .map(|()| a)
                    .map_err(|_| self.invalid("a name"))
            })
            .transpose()
    }

    /// `after` as a version (absent or empty: from the start).
    pub fn after_version(&self) -> Result<Option<semver::Version>, InvalidPage> {
        self.after()
            .map(|a| parse_version(a).map_err(|_| self.invalid("a version")))
            .transpose()
    }

    fn invalid(&self, expected: &'static str) -> InvalidPage {
        InvalidPage {
            after: self.after.clone().unwrap_or_default(),
            expected,
        }
    }
}
