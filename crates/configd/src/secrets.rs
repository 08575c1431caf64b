//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value and the owner's row id
//! plus field name as associated data, so a ciphertext copied to another row or field does
//! not decrypt. The key comes from `[secrets] key_file` or `key` (64 hex characters or
//! base64 of 32 bytes); without one configd does not start.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::config::SecretsConfig;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets.key_file: cannot read {path}: {source}")]
    KeyFile {
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
        let (text, field) = match (&config.key_file, &config.key) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| SecretsError::KeyFile { path: path.display().to_string(), source })?;
                (text, "key_file")
            }
            (None, Some(key)) => (key.expose().to_owned(), "key"),
            (None, None) => return Err(SecretsError::NoKey),
        };
        let key = parse_key(text.trim()).ok_or(SecretsError::BadKey { field })?;
        Ok(Self::from_key(&key))
    }

    pub fn from_key(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)) }
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
        let fail = || SecretsError::Decrypt { owner: owner.to_owned(), field: field.to_owned() };
        if sealed.nonce.len() != 12 {
            return Err(fail());
        }
        let aad = aad(owner, field);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }
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
    fn keys_parse_from_hex_and_base64() {
        assert!(parse_key(&"ab".repeat(32)).is_some());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_some());
        assert!(parse_key("short").is_none());
        assert!(parse_key(&"ab".repeat(31)).is_none());
    }
}
