//! Names, labels and versions as Gantry accepts them.

/// A name or label that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidName {
    /// What was named: `connector name`, `flow name`, ….
    pub what: &'static str,
    pub reason: String,
}

/// A version that is not strict semver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version `{0}`: versions are strict semver, e.g. 1.2.3")]
pub struct InvalidVersion(pub String);

/// Names of organisations, connectors and tags: lowercase ASCII letters, digits and `-`, 1 to
/// 63 characters, starting with a letter or digit.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > 63 {
        Some(format!("is {} characters long; at most 63", name.len()))
    } else if !name
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        Some("may hold only lowercase letters, digits and `-`".to_string())
    } else if name.starts_with('-') {
        Some("must start with a letter or digit".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidName {
            what,
            reason: format!("`{}` {reason}", name.escape_debug()),
        }),
        None => Ok(()),
    }
}

/// Labels of flows, steps and instances: 1 to 100 characters, no control characters.
pub fn validate_label(what: &'static str, label: &str) -> Result<(), InvalidName> {
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(InvalidName {
            what,
            reason: format!(
                "`{}` must be 1 to 100 characters without control characters",
                label.escape_debug()
            ),
        });
    }
    Ok(())
}

/// Strict semver, as `semver::Version` parses it (no `v` prefix, no missing parts), without
/// build metadata: semver says it plays no part in a version's identity or order, so
/// `1.0.0+build.7` *is* `1.0.0` — never a version of its own, never an update to it.
pub fn parse_version(version: &str) -> Result<semver::Version, InvalidVersion> {
    let mut parsed = semver::Version::parse(version)
        .map_err(|_| InvalidVersion(version.escape_debug().to_string()))?;
    parsed.build = semver::BuildMetadata::EMPTY;
    Ok(parsed)
}

/// The key a version is stored under: `version` without build metadata (left as it is when it
/// is not semver at all, to be found missing).
pub(crate) fn version_key(version: &str) -> String {
    parse_version(version).map_or_else(|_| version.to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_path_tricks() {
        for bad in [
            "",
            "../etc",
            "a/b",
            "a\0b",
            "Upper",
            "-lead",
            &"x".repeat(64),
            "sp ace",
        ] {
            assert!(validate_name("connector name", bad).is_err(), "{bad:?}");
        }
        for good in ["echo", "json-transform", "a1", &"x".repeat(63)] {
            assert!(validate_name("connector name", good).is_ok(), "{good:?}");
        }
        assert!(validate_label("flow name", "Nightly sync").is_ok());
        assert!(validate_label("flow name", "bad\nname").is_err());
    }

    #[test]
    fn versions_are_strict_semver() {
        assert!(parse_version("1.2.3").is_ok());
        assert_eq!(
            parse_version("1.2.3+build.7").unwrap(),
            parse_version("1.2.3").unwrap(),
            "build metadata is not part of a version"
        );
        assert_eq!(version_key("1.2.3+build.7"), "1.2.3");
        assert!(parse_version("1.2.3-beta.1").is_ok());
        for bad in ["v1.2.3", "1.2", "latest", "1.2.3.4", ""] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }
}
