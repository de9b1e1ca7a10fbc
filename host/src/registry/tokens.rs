//! API tokens: each belongs to one organisation and carries a [`Role`]. Only a sha256 of a token
//! is stored; the token itself is shown once, when it is created.

use super::rules::{audit, require_org};
use super::{Error, Registry, Result, now_ms};
use crate::model::{Principal, Role, validate_label};
use sha2::{Digest as _, Sha256};

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Registry {
    /// Create a token for `org` with `role`. Returns the token, which is not stored and cannot
    /// be shown again.
    pub fn create_token(&self, org: &str, actor: &str, role: Role, label: &str) -> Result<String> {
        validate_label("token label", label)?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| Error::storage(format!("no randomness for a token: {e}")))?;
        let token = format!("gty_{}", hex::encode(random));
        self.change(|m| {
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

    /// The principal of `token` if it was authenticated since the last change: no store read.
    pub fn known_principal(&self, token: &str) -> Option<Principal> {
        self.pins.principal(&hash(token))
    }

    /// The principal of `token`, or `None` when it is unknown.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        if !token.starts_with("gty_") || token.len() != 68 {
            return Ok(None);
        }
        let hash = hash(token);
        if let Some(principal) = self.pins.principal(&hash) {
            return Ok(Some(principal));
        }
        let generation = self.pins.generation();
        let principal = self.read(|m| Ok(m.token(&hash)?))?;
        if let Some(principal) = &principal {
            self.pins
                .keep_principal(hash, principal.clone(), generation);
        }
        Ok(principal)
    }
}
