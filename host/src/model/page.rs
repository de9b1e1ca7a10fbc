//! Paging of lists.

use serde::Deserialize;

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
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct Page {
    /// Most items to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Return the items after this one (for runs: before it, as they come newest first).
    pub after: Option<String>,
}

impl Page {
    pub const DEFAULT: usize = 100;
    pub const MAX: usize = 1000;

    /// The number of items to return.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT).clamp(1, Self::MAX)
    }

    /// `after` as an id (absent: from the start).
    pub fn after_id(&self) -> Result<Option<i64>, InvalidPage> {
        self.after
            .as_deref()
            .map(|a| a.parse().map_err(|_| self.invalid("an id")))
            .transpose()
    }

    /// `after` as a connector, `org/name` (absent: from the start).
    pub fn after_connector(&self) -> Result<Option<(&str, &str)>, InvalidPage> {
        self.after
            .as_deref()
            .map(|a| a.split_once('/').ok_or_else(|| self.invalid("`org/name`")))
            .transpose()
    }

    /// `after` as a semantic version (absent: from the start).
    pub fn after_version(&self) -> Result<Option<semver::Version>, InvalidPage> {
        self.after
            .as_deref()
            .map(|a| semver::Version::parse(a).map_err(|_| self.invalid("a version")))
            .transpose()
    }

    fn invalid(&self, expected: &'static str) -> InvalidPage {
        InvalidPage {
            after: self.after.clone().unwrap_or_default(),
            expected,
        }
    }
}
