//! Secrets at rest: [`Vault`] seals instance credentials with XChaCha20-Poly1305 under a key
//! kept outside the database (a key file), binding each ciphertext to its organisation and
//! instance through the associated data, so a ciphertext copied to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

const NONCE: usize = 24;

/// Seals and opens instance secrets.
pub struct Vault {
    cipher: XChaCha20Poly1305,
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
    /// Use the 32-byte key in `path`, creating it (mode 0600, written atomically) if absent.
    pub fn open_or_create(path: &Path) -> io::Result<Self> {
        let key = match fs::read(path) {
            Ok(key) => key,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                let temp = path.with_extension("tmp");
                let mut options = fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&temp)?;
                file.write_all(&key)?;
                file.sync_all()?;
                fs::rename(&temp, path)?;
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the secrets key file must hold 32 bytes",
            )
        })?;
        Ok(Self { cipher })
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
        let vault = Vault::open_or_create(&dir.path().join("key")).unwrap();
        let sealed = vault.seal("acme", 7, b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(vault.open("acme", 7, &sealed).unwrap(), b"hunter2");
        assert!(vault.open("acme", 8, &sealed).is_err(), "another row");
        assert!(vault.open("other", 7, &sealed).is_err(), "another org");

        // The same key file opens it again; another key does not.
        let again = Vault::open_or_create(&dir.path().join("key")).unwrap();
        assert_eq!(again.open("acme", 7, &sealed).unwrap(), b"hunter2");
        let other = Vault::open_or_create(&dir.path().join("other-key")).unwrap();
        assert!(other.open("acme", 7, &sealed).is_err());
    }
}
