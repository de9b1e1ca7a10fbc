//! API tokens: each belongs to one organisation and carries a [`Role`]. Only a sha256 of a token
//! is stored; the token itself is shown once, when it is created.

use crate::registry::{Error, Registry, Result, audit, now_ms, require_org, validate_label};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Registry {
    /// Create a token for `org` with `role`. Returns the token, which is not stored and cannot
    /// be shown again.
    pub fn create_token(&self, org: &str, actor: &str, role: Role, label: &str) -> Result<String> {
        validate_label("token label", label)?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| Error::Storage(e.to_string()))?;
        let token = format!("gty_{}", hex::encode(random));
        self.meta.write(|m| {
            require_org(m, org)?;
            let id = m.insert_token(org, role, label, &hash(&token), now_ms())?;
            audit(
                m,
                org,
                actor,
                "create-token",
                &format!("token {id}"),
                serde_json::Value::Null,
                serde_json::json!({"role": role, "label": label}),
            )
        })?;
        Ok(token)
    }

    /// The principal of `token`, or `None` when it is unknown.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        if !token.starts_with("gty_") || token.len() != 68 {
            return Ok(None);
        }
        self.meta.read(|m| m.token(&hash(token)))
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
