//! Paging of lists.

use serde::Deserialize;

/// An `after` that is not an id where the list is paged by id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`after` must be an id, not `{0}`")]
pub struct InvalidPage(pub String);

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
            .map(|a| a.parse().map_err(|_| InvalidPage(a.to_string())))
            .transpose()
    }
}
