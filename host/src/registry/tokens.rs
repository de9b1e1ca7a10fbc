//! Organisations and API tokens. A token belongs to one organisation and carries a [`Role`],
//! or is a platform token (no organisation). Only a sha256 of a token is stored; the token
//! itself is shown once, when it is created. A revoked or expired token authenticates nothing
//! from its next request on.

use super::rules::{audit, require_org};
use super::{Error, Registry, Result, now_ms};
use crate::model::{
    OrgInfo, Page, Principal, Role, Session, TokenInfo, validate_label, validate_name,
};
use crate::store::Metadata;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::sync::PoisonError;

/// The audit log of the platform's own actions (no organisation can have this name).
pub const PLATFORM_LOG: &str = "";

/// How a token's last use is kept: to within this many milliseconds (a request does not write).
const USE_RESOLUTION_MS: i64 = 60_000;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token.
fn secret() -> Result<String> {
    random_text("gty_")
}

/// `prefix` and 32 random bytes in hex.
fn random_text(prefix: &str) -> Result<String> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| Error::storage(format!("no randomness for a token: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(random)))
}

/// How long a console session lasts at most (less when its token expires sooner).
pub const SESSION_MS: i64 = 8 * 3600 * 1000;

/// A signed-in console session: who it acts as, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub principal: Principal,
    pub csrf: String,
}

/// Store a new token in the unit `m`; returns it as stored and its secret.
fn insert(
    m: &mut dyn Metadata,
    org: Option<&str>,
    actor: &str,
    role: Role,
    label: &str,
    expires_at: Option<i64>,
    secret: &str,
) -> Result<TokenInfo> {
    let mut token = TokenInfo {
        id: 0,
        org: org.map(str::to_string),
        role,
        label: label.to_string(),
        created_by: actor.to_string(),
        created_at: now_ms(),
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    token.id = m.insert_token(&token, &hash(secret))?;
    let after = json!({"role": role, "label": label, "expires_at": expires_at});
    let subject = format!("token {}", token.id);
    audit(
        m,
        org.unwrap_or(PLATFORM_LOG),
        actor,
        "create-token",
        &subject,
        Value::Null,
        after,
    )?;
    Ok(token)
}

fn check_expiry(expires_at: Option<i64>) -> Result<()> {
    match expires_at {
        Some(at) if at <= now_ms() => Err(Error::InvalidInput(
            "a token's expiry must be in the future".into(),
        )),
        _ => Ok(()),
    }
}

impl Registry {
    /// Create organisation `id` (a vendor, a customer, or both) and its first admin token,
    /// labelled `admin_label`. Returns the organisation, the token as listed and its secret.
    pub fn create_organisation(
        &self,
        actor: &str,
        id: &str,
        admin_label: &str,
    ) -> Result<(OrgInfo, TokenInfo, String)> {
        validate_name("organisation", id)?;
        validate_label("token label", admin_label)?;
        let secret = secret()?;
        let (org, token) = self.change(|m| {
            if m.org_exists(id)? {
                return Err(Error::NameTaken {
                    what: "organisation",
                    name: id.to_string(),
                });
            }
            let org = OrgInfo {
                id: id.to_string(),
                created_at: now_ms(),
            };
            m.create_org(id, org.created_at)?;
            for log in [PLATFORM_LOG, id] {
                let subject = format!("organisation {id}");
                audit(
                    m,
                    log,
                    actor,
                    "create-org",
                    &subject,
                    Value::Null,
                    json!(org),
                )?;
            }
            let token = insert(m, Some(id), actor, Role::Admin, admin_label, None, &secret)?;
            Ok((org, token))
        })?;
        Ok((org, token, secret))
    }

    /// One page of the organisations, by id.
    pub fn organisations(&self, page: &Page) -> Result<Vec<OrgInfo>> {
        let after = page.after_name()?.unwrap_or("");
        self.read(|m| Ok(m.orgs(after, page.limit())?))
    }

    /// Create a token of `org` with `role`, valid until `expires_at` (ms since the epoch) if
    /// given. Returns the token as listed and its secret, which is not stored and cannot be
    /// shown again.
    pub fn create_token(
        &self,
        org: &str,
        actor: &str,
        role: Role,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenInfo, String)> {
        validate_label("token label", label)?;
        if role == Role::Platform {
            return Err(Error::InvalidInput(
                "an organisation's token cannot have the platform role".into(),
            ));
        }
        check_expiry(expires_at)?;
        let secret = secret()?;
        let token = self.change(|m| {
            require_org(m, org)?;
            insert(m, Some(org), actor, role, label, expires_at, &secret)
        })?;
        Ok((token, secret))
    }

    /// Create a platform token (it acts in no organisation).
    pub fn create_platform_token(&self, actor: &str, label: &str) -> Result<(TokenInfo, String)> {
        validate_label("token label", label)?;
        let secret = secret()?;
        let token =
            self.change(|m| insert(m, None, actor, Role::Platform, label, None, &secret))?;
        Ok((token, secret))
    }

    /// Whether any platform token, revoked or not, was ever created.
    pub fn has_platform_token(&self) -> Result<bool> {
        self.read(|m| Ok(!m.tokens(None, 0, 1)?.is_empty()))
    }

    /// One page of the tokens of `org` (`None`: the platform's), by id, revoked ones included.
    pub fn tokens(&self, org: Option<&str>, page: &Page) -> Result<Vec<TokenInfo>> {
        let after = page.after_id()?.unwrap_or(0);
        let mut tokens = self.read(|m| Ok(m.tokens(org, after, page.limit())?))?;
        // Uses not yet written to the store.
        let used = self
            .token_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for token in &mut tokens {
            if let Some(at) = used.get(&token.id) {
                token.last_used_at = token.last_used_at.max(Some(*at));
            }
        }
        Ok(tokens)
    }

    /// Revoke token `id` of `org` (`None`: a platform token): it authenticates nothing from
    /// the next request on. Revoking a revoked token changes nothing. Another scope's token is
    /// not found.
    pub fn revoke_token(&self, org: Option<&str>, actor: &str, id: i64) -> Result<TokenInfo> {
        self.change(|m| {
            let token = m
                .token_by_id(id)?
                .filter(|t| t.org.as_deref() == org)
                .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
            if token.revoked_at.is_some() {
                return Ok(token);
            }
            let at = now_ms();
            m.revoke_token(id, at)?;
            let subject = format!("token {id}");
            let log = org.unwrap_or(PLATFORM_LOG);
            audit(
                m,
                log,
                actor,
                "revoke-token",
                &subject,
                json!(token),
                json!({"revoked_at": at}),
            )?;
            Ok(TokenInfo {
                revoked_at: Some(at),
                ..token
            })
        })
    }

    /// The principal of `token` if it was authenticated since the last change and has not
    /// expired since: no store read.
    pub fn known_principal(&self, token: &str) -> Option<Principal> {
        let principal = self.pins.principal(&hash(token))?;
        let now = now_ms();
        if principal.expired(now) {
            return None;
        }
        self.note_use(principal.token_id, now);
        Some(principal)
    }

    /// The principal of `token`, or `None` when it is unknown, revoked or expired.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        if !token.starts_with("gty_") || token.len() != 68 {
            return Ok(None);
        }
        if let Some(principal) = self.known_principal(token) {
            return Ok(Some(principal));
        }
        let hash = hash(token);
        let generation = self.pins.generation();
        let now = now_ms();
        let Some(stored) = self.read(|m| Ok(m.token(&hash)?))? else {
            return Ok(None);
        };
        if !stored.valid_at(now) {
            return Ok(None);
        }
        let principal = stored.principal();
        self.pins
            .keep_principal(hash, principal.clone(), generation);
        self.note_use(principal.token_id, now);
        Ok(Some(principal))
    }

    /// Open a console session with API token `token`: returns the session's cookie value
    /// (shown only to the browser; the store keeps its hash) and what it signs in as. `None`
    /// when the token is unknown, revoked or expired; a platform token opens no session (the
    /// console is an organisation's).
    pub fn open_session(&self, token: &str) -> Result<Option<(String, SignedIn)>> {
        let Some(principal) = self.authenticate(token.trim())? else {
            return Ok(None);
        };
        if principal.role == Role::Platform {
            return Err(Error::InvalidInput(
                "the console is for an organisation's tokens, not the platform's".into(),
            ));
        }
        let (cookie, csrf) = (random_text("gts_")?, random_text("")?);
        let now = now_ms();
        let session = Session {
            token_id: principal.token_id,
            csrf: csrf.clone(),
            created_at: now,
            expires_at: principal
                .expires_at
                .map_or(now + SESSION_MS, |at| at.min(now + SESSION_MS)),
        };
        self.write(|m| Ok(m.insert_session(&hash(&cookie), &session, now)?))?;
        Ok(Some((cookie, SignedIn { principal, csrf })))
    }

    /// The session whose cookie is `cookie`, while it lasts and its token is valid.
    pub fn session(&self, cookie: &str) -> Result<Option<SignedIn>> {
        if !cookie.starts_with("gts_") || cookie.len() != 68 {
            return Ok(None);
        }
        let now = now_ms();
        let found = self.read(|m| {
            let Some(session) = m.session(&hash(cookie))? else {
                return Ok(None);
            };
            let token = m.token_by_id(session.token_id)?;
            Ok(token.map(|t| (session, t)))
        })?;
        let Some((session, token)) = found else {
            return Ok(None);
        };
        if session.expires_at <= now || !token.valid_at(now) {
            return Ok(None);
        }
        self.note_use(token.id, now);
        Ok(Some(SignedIn {
            principal: token.principal(),
            csrf: session.csrf,
        }))
    }

    /// End the session whose cookie is `cookie` (signing out): it authenticates nothing more.
    pub fn close_session(&self, cookie: &str) -> Result<()> {
        self.write(|m| Ok(m.delete_session(&hash(cookie))?))
    }

    /// Remember that token `id` was used at `now`, to within [`USE_RESOLUTION_MS`].
    fn note_use(&self, id: i64, now: i64) {
        let mut used = self
            .token_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let at = used.entry(id).or_insert(0);
        if now - *at >= USE_RESOLUTION_MS {
            *at = now;
        }
    }

    /// Write the tokens' last uses to the store (`gantry serve` does every minute and when it
    /// stops). What could not be written is kept for the next time.
    pub fn flush_token_use(&self) -> Result<()> {
        let used: Vec<(i64, i64)> = {
            let used = self
                .token_use
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            used.iter().map(|(id, at)| (*id, *at)).collect()
        };
        if used.is_empty() {
            return Ok(());
        }
        self.write(|m| Ok(m.set_tokens_used(&used)?))?;
        let mut pending = self
            .token_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, at) in used {
            if pending.get(&id) == Some(&at) {
                pending.remove(&id);
            }
        }
        Ok(())
    }
}
