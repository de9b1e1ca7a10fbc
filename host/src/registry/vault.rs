//! Secrets at rest: [`Vault`] seals instance credentials with XChaCha20-Poly1305 under a key
//! kept outside the database (a key file), binding each ciphertext to its organisation and
//! instance through the associated data, so a ciphertext copied to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use std::io;
use std::path::Path;

const NONCE: usize = 24;

/// Seals and opens instance secrets.
pub struct Vault {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

/// A ciphertext that does not open: wrong key, wrong row, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("sealed secrets do not open (wrong key, moved between rows, or damaged)")]
pub struct Unsealable;

fn associated_data(org: &str, instance: i64) -> Vec<u8> {
    format!("gantry:instance-secrets\0{org}\0{instance}").into_bytes()
}

impl Vault {
    /// Use the 32-byte key in `path`, creating it (mode 0600, written atomically and durably)
    /// if absent; `created` says whether it was. A key others may read is refused.
    pub fn open_or_create(path: &Path) -> io::Result<(Self, bool)> {
        let (key, created) = crate::durable::key_file(path, 32)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad secrets key"))?;
        let id = hex::encode(
            &Sha256::digest([b"gantry secrets key id\0".as_slice(), &key].concat())[..8],
        );
        Ok((Self { cipher, id }, created))
    }

    /// A fingerprint of the key (not the key): the registry keeps it with the sealed secrets,
    /// to recognise a missing or swapped key file before anything is sealed with it.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Encrypt `plaintext` for instance `instance` of `org`: nonce || ciphertext.
    pub fn seal(&self, org: &str, instance: i64, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let aad = associated_data(org, instance);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypt what [`Vault::seal`] produced for the same `org` and `instance`.
    pub fn open(&self, org: &str, instance: i64, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE);
        let aad = associated_data(org, instance);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bound_to_org_and_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (vault, created) = Vault::open_or_create(&dir.path().join("key")).unwrap();
        assert!(created);
        let sealed = vault.seal("acme", 7, b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(vault.open("acme", 7, &sealed).unwrap(), b"hunter2");
        assert!(vault.open("acme", 8, &sealed).is_err(), "another row");
        assert!(vault.open("other", 7, &sealed).is_err(), "another org");

        // The same key file opens it again; another key does not.
        let (again, created) = Vault::open_or_create(&dir.path().join("key")).unwrap();
        assert!(!created);
        assert_eq!(again.key_id(), vault.key_id());
        assert_eq!(again.open("acme", 7, &sealed).unwrap(), b"hunter2");
        let (other, _) = Vault::open_or_create(&dir.path().join("other-key")).unwrap();
        assert_ne!(other.key_id(), vault.key_id());
        assert!(other.open("acme", 7, &sealed).is_err());
    }
}
