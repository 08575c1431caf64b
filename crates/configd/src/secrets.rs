//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value and the owner's row id
//! plus field name as associated data, so a ciphertext copied to another row or field does
//! not decrypt. The key comes from `[secrets] key_file` or `key` (64 hex characters or
//! base64 of 32 bytes); without one configd does not start.
//!
//! Key rotation: with `previous_key_file` / `previous_key` set, a value that does not open
//! with the current key is tried with the previous one; at start configd re-seals every
//! such value with the current key ([`crate::store::Store::reseal_secrets`]), after which the
//! previous key can be removed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::config::SecretsConfig;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets.{field}: cannot read {path}: {source}")]
    KeyFile {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secrets.{field}: not a 32-byte key (expected 64 hex characters or base64 of 32 bytes)")]
    BadKey { field: &'static str },
    #[error("secrets: no key configured (set secrets.key_file or DESKMAIL_SECRETS__KEY)")]
    NoKey,
    #[error("a stored secret of {owner} ({field}) does not decrypt with this key")]
    Decrypt { owner: String, field: String },
    #[error("encryption failed")]
    Encrypt,
}

/// Encrypts and decrypts secret values. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
    /// The key being rotated away from: read with, never written with.
    previous: Option<Aes256Gcm>,
}

/// Which key opened a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedWith {
    Current,
    Previous,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([key redacted])")
    }
}

/// One encrypted value: nonce and ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl SecretBox {
    pub fn from_config(config: &SecretsConfig) -> Result<Self, SecretsError> {
        let key = read_key(config.key_file.as_deref(), config.key.as_ref(), ("key_file", "key"))?
            .ok_or(SecretsError::NoKey)?;
        let previous = read_key(
            config.previous_key_file.as_deref(),
            config.previous_key.as_ref(),
            ("previous_key_file", "previous_key"),
        )?;
        let mut sb = Self::from_key(&key);
        sb.previous = previous.map(|k| Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&k)));
        Ok(sb)
    }

    pub fn from_key(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)), previous: None }
    }

    /// A box that writes with `key` and also reads values sealed with `previous`.
    pub fn with_previous(key: &[u8; 32], previous: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
            previous: Some(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(previous))),
        }
    }

    /// Whether a previous key is configured (a rotation is in progress).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    pub fn seal(&self, owner: &str, field: &str, plaintext: &str) -> Result<Sealed, SecretsError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad(owner, field);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
            .map_err(|_| SecretsError::Encrypt)?;
        Ok(Sealed { nonce: nonce.to_vec(), ciphertext })
    }

    pub fn open(&self, owner: &str, field: &str, sealed: &Sealed) -> Result<String, SecretsError> {
        self.open_with(owner, field, sealed).map(|(value, _)| value)
    }

    /// Opens with the current key, else with the previous one, and says which worked.
    pub fn open_with(
        &self,
        owner: &str,
        field: &str,
        sealed: &Sealed,
    ) -> Result<(String, OpenedWith), SecretsError> {
        let fail = || SecretsError::Decrypt { owner: owner.to_owned(), field: field.to_owned() };
        if sealed.nonce.len() != 12 {
            return Err(fail());
        }
        let aad = aad(owner, field);
        let try_with = |cipher: &Aes256Gcm| {
            cipher
                .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
                .ok()
        };
        let (plain, with) = match try_with(&self.cipher) {
            Some(p) => (p, OpenedWith::Current),
            None => (self.previous.as_ref().and_then(try_with).ok_or_else(fail)?, OpenedWith::Previous),
        };
        Ok((String::from_utf8(plain).map_err(|_| fail())?, with))
    }
}

/// The key from a file or a value (the file wins), `None` when neither is set.
fn read_key(
    file: Option<&std::path::Path>,
    value: Option<&deskmail_config::Secret>,
    fields: (&'static str, &'static str),
) -> Result<Option<[u8; 32]>, SecretsError> {
    let (text, field) = match (file, value) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretsError::KeyFile {
                field: fields.0,
                path: path.display().to_string(),
                source,
            })?;
            (text, fields.0)
        }
        (None, Some(key)) => (key.expose().to_owned(), fields.1),
        (None, None) => return Ok(None),
    };
    parse_key(text.trim()).map(Some).ok_or(SecretsError::BadKey { field })
}

fn aad(owner: &str, field: &str) -> Vec<u8> {
    format!("deskmail-secret:v1:{owner}:{field}").into_bytes()
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()?
    };
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let b = SecretBox::from_key(&[7u8; 32]);
        let sealed = b.seal("mbx-1", "inbound.password", "hunter2").unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open("mbx-1", "inbound.password", &sealed).unwrap(), "hunter2");
        // Bound to its row and field.
        assert!(b.open("mbx-2", "inbound.password", &sealed).is_err());
        assert!(b.open("mbx-1", "outbound.password", &sealed).is_err());
        // And to the key.
        assert!(SecretBox::from_key(&[8u8; 32]).open("mbx-1", "inbound.password", &sealed).is_err());
    }

    #[test]
    fn the_previous_key_still_reads_but_never_writes() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let sealed_old = SecretBox::from_key(&old).seal("mbx-1", "inbound.password", "s3cret").unwrap();
        let rotating = SecretBox::with_previous(&new, &old);
        assert_eq!(
            rotating.open_with("mbx-1", "inbound.password", &sealed_old).unwrap(),
            ("s3cret".to_owned(), OpenedWith::Previous)
        );
        let resealed = rotating.seal("mbx-1", "inbound.password", "s3cret").unwrap();
        assert_eq!(SecretBox::from_key(&new).open("mbx-1", "inbound.password", &resealed).unwrap(), "s3cret");
        assert!(SecretBox::from_key(&old).open("mbx-1", "inbound.password", &resealed).is_err());
        // Still bound to row and field with the previous key.
        assert!(rotating.open("mbx-2", "inbound.password", &sealed_old).is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        assert!(parse_key(&"ab".repeat(32)).is_some());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_some());
        assert!(parse_key("short").is_none());
        assert!(parse_key(&"ab".repeat(31)).is_none());
    }
}
