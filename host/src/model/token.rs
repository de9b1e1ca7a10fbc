//! Organisations, API tokens' roles, tokens as listed, and the principal a valid token names.

use serde::{Deserialize, Serialize};

/// What a token may do. The platform role runs the installation (organisations, their first
/// tokens) and acts in no organisation; within one, each role includes `viewer` and `admin`
/// includes every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The operator of the installation: creates and lists organisations and mints their
    /// admin tokens. Reads or changes nothing inside an organisation.
    Platform,
    /// Everything in its organisation, including tokens and install updates.
    Admin,
    /// Publish versions and change their states.
    Publisher,
    /// Install, configure, create instances and flows, run and rebind them.
    Operator,
    /// Read.
    Viewer,
}

impl Role {
    /// Whether this role may act as `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match self {
            Role::Platform => needed == Role::Platform,
            Role::Admin => needed != Role::Platform,
            role => role == needed || needed == Role::Viewer,
        }
    }
}

/// Who is calling: the organisation and role of a valid token. A platform token's `org` is
/// empty: it names no organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub org: String,
    pub role: Role,
    pub token_id: i64,
    pub label: String,
    /// When the token stops being valid (ms since the epoch), if ever.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The actor name written to the audit log.
    pub fn actor(&self) -> String {
        match self.role {
            Role::Platform => format!("platform:token:{}:{}", self.token_id, self.label),
            _ => format!("token:{}:{}", self.token_id, self.label),
        }
    }

    /// Whether the token has expired at `now` (ms since the epoch).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A token as stored and listed — never its secret, which is shown once, when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    /// The organisation it acts in; none for a platform token.
    pub org: Option<String>,
    pub role: Role,
    pub label: String,
    pub created_by: String,
    pub created_at: i64,
    /// When it was last used (ms since the epoch), to within a minute; none if never.
    pub last_used_at: Option<i64>,
    /// When it stops being valid, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl TokenInfo {
    /// Whether the token authenticates at `now`: neither revoked nor expired.
    pub fn valid_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// The principal it names.
    pub fn principal(&self) -> Principal {
        Principal {
            org: self.org.clone().unwrap_or_default(),
            role: self.role,
            token_id: self.id,
            label: self.label.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// A console session, stored under the hash of its cookie: the token it was opened with (the
/// session acts as that token, and ends when it is revoked or expires), the form token every
/// post must carry, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_id: i64,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An organisation: a vendor, a customer, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgInfo {
    pub id: String,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_viewer_and_admin_includes_all_but_platform() {
        assert!(Role::Admin.allows(Role::Publisher));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Publisher));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Publisher.allows(Role::Admin));
        assert!(!Role::Admin.allows(Role::Platform));
    }

    #[test]
    fn the_platform_role_acts_in_no_organisation() {
        assert!(Role::Platform.allows(Role::Platform));
        for role in [Role::Admin, Role::Publisher, Role::Operator, Role::Viewer] {
            assert!(!Role::Platform.allows(role), "{role:?}");
        }
    }

    #[test]
    fn a_token_is_valid_until_revoked_or_expired() {
        let mut token = TokenInfo {
            id: 1,
            org: Some("acme".into()),
            role: Role::Viewer,
            label: "ci".into(),
            created_by: "test".into(),
            created_at: 0,
            last_used_at: None,
            expires_at: Some(1_000),
            revoked_at: None,
        };
        assert!(token.valid_at(999));
        assert!(!token.valid_at(1_000));
        assert!(token.principal().expired(1_000));
        token.expires_at = None;
        assert!(token.valid_at(i64::MAX));
        token.revoked_at = Some(5);
        assert!(!token.valid_at(0));
    }
}
