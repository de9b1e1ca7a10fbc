//! What the marketplace shows of a connector and what a search matches in it: one definition
//! that the registry's listings and every store's search index share.

use super::{ListedVersion, Search, VersionInfo, VersionState, Visibility};
use std::collections::{BTreeMap, BTreeSet};

/// Who a listing is for: the publishing organisation sees all its versions, every other
/// organisation only the public ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Audience {
    Owner,
    Public,
}

impl Audience {
    /// The audience `viewer` belongs to for connectors published by `org`.
    pub fn of(viewer: &str, org: &str) -> Self {
        if viewer == org {
            Audience::Owner
        } else {
            Audience::Public
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Owner => "owner",
            Audience::Public => "public",
        }
    }

    /// Whether this audience sees a version of `visibility`.
    pub fn sees(self, visibility: Visibility) -> bool {
        self == Audience::Owner || visibility == Visibility::Public
    }
}

/// The current revision of each version among `revisions` (the newest of each).
pub(crate) fn current_each<D>(revisions: Vec<VersionInfo<D>>) -> Vec<VersionInfo<D>> {
    let mut newest: BTreeMap<(String, String, semver::Version), VersionInfo<D>> = BTreeMap::new();
    for v in revisions {
        let key = (v.org.clone(), v.name.clone(), v.version.clone());
        match newest.get(&key) {
            Some(kept) if kept.revision >= v.revision => {}
            _ => {
                newest.insert(key, v);
            }
        }
    }
    newest.into_values().collect()
}

/// The version a listing shows among one connector's current `versions` (oldest first): the
/// newest active one, else the newest that is not blocked, else the newest.
pub fn listed_latest<D>(versions: &[VersionInfo<D>]) -> Option<&VersionInfo<D>> {
    let newest = |keep: fn(VersionState) -> bool| versions.iter().rev().find(|v| keep(v.state));
    newest(|s| s == VersionState::Active)
        .or_else(|| newest(|s| s != VersionState::Blocked))
        .or(versions.last())
}

/// The words of a search text, as an index splits text too: runs of letters and digits,
/// lower-cased. A search word matches a word of a listing that starts with it.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What a search index holds of one connector for one audience: the text of the version its
/// listing shows, and the tags of every version the audience sees.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub org: String,
    pub name: String,
    pub audience: Audience,
    /// The connector's name.
    pub title: String,
    /// The listed version's description.
    pub description: String,
    /// The listed version's operation names, space-separated.
    pub operations: String,
    pub tags: BTreeSet<String>,
}

impl IndexEntry {
    /// The entries of one connector, from every revision of every version it has: one for its
    /// owner, and one for everyone else while any version is public. None when it has no
    /// versions.
    pub fn of_connector(revisions: Vec<ListedVersion>) -> Vec<IndexEntry> {
        let mut versions = current_each(revisions);
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        [Audience::Owner, Audience::Public]
            .into_iter()
            .filter_map(|audience| {
                let seen: Vec<ListedVersion> = versions
                    .iter()
                    .filter(|v| audience.sees(v.visibility))
                    .cloned()
                    .collect();
                let latest = listed_latest(&seen)?;
                Some(IndexEntry {
                    org: latest.org.clone(),
                    name: latest.name.clone(),
                    audience,
                    title: latest.name.clone(),
                    description: latest.description.description.clone(),
                    operations: latest
                        .description
                        .operations
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    tags: seen.iter().flat_map(|v| v.tags.iter().cloned()).collect(),
                })
            })
            .collect()
    }

    /// Whether `search` matches this entry (what an index answers; for a store without one).
    pub fn matches(&self, search: &Search) -> bool {
        let text: Vec<String> = [&self.title, &self.description, &self.operations]
            .into_iter()
            .flat_map(|field| words(field))
            .collect();
        let words = words(search.text.as_deref().unwrap_or_default());
        words
            .iter()
            .all(|w| text.iter().any(|t| t.starts_with(w.as_str())))
            && search.tag.as_ref().is_none_or(|t| self.tags.contains(t))
            && search.publisher.as_ref().is_none_or(|p| *p == self.org)
    }
}
