//! API tokens' roles and the principal a valid token names.

use serde::{Deserialize, Serialize};

/// What a token may do. Each role includes `viewer`; `admin` includes everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including tokens and install updates.
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
        self == Role::Admin || self == needed || needed == Role::Viewer
    }
}

/// Who is calling: the organisation and role of a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub org: String,
    pub role: Role,
    pub token_id: i64,
    pub label: String,
}

impl Principal {
    /// The actor name written to the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}:{}", self.token_id, self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_include_viewer_and_admin_includes_all() {
        assert!(Role::Admin.allows(Role::Publisher));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Publisher));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Publisher.allows(Role::Admin));
    }
}
