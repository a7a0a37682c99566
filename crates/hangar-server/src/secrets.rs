//! Secret values at rest: AES-256-GCM under the server's master key.
//!
//! The master key comes from `HANGAR_MASTER_KEY` (64 hex characters), or the
//! file named by `master_key_file`, or `<data_dir>/master.key`, created with
//! mode 0600 on first start. Each value gets a fresh 96-bit nonce and is bound
//! to its team and name as associated data, so a ciphertext copied to another
//! row does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use std::path::Path;

/// Environment variable holding the master key in hex.
pub const MASTER_KEY_ENV: &str = "HANGAR_MASTER_KEY";

/// Why the master key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// Not 32 bytes of hex.
    #[error("{source_name} must hold 64 hexadecimal characters (32 bytes)")]
    Malformed {
        /// Where it came from.
        source_name: String,
    },
    /// File trouble.
    #[error("master key file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Encrypts and decrypts secret values.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

fn parse_hex_key(text: &str, source_name: &str) -> Result<[u8; 32], MasterKeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| MasterKeyError::Malformed {
        source_name: source_name.to_owned(),
    })?;
    bytes.try_into().map_err(|_| MasterKeyError::Malformed {
        source_name: source_name.to_owned(),
    })
}

impl SecretBox {
    /// A box over a raw 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        SecretBox {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
        }
    }

    /// Loads the master key: env var, then `file`, creating the file when missing.
    pub fn load(file: &Path) -> Result<Self, MasterKeyError> {
        if let Ok(hex_key) = std::env::var(MASTER_KEY_ENV)
            && !hex_key.is_empty()
        {
            return Ok(Self::new(parse_hex_key(&hex_key, MASTER_KEY_ENV)?));
        }
        let io = |source| MasterKeyError::Io {
            path: file.display().to_string(),
            source,
        };
        match std::fs::read_to_string(file) {
            Ok(text) => Ok(Self::new(parse_hex_key(
                &text,
                &file.display().to_string(),
            )?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .map_err(io)?;
                f.write_all(hex::encode(key).as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::info!(path = %file.display(), "created the master key for secrets; back it up");
                Ok(Self::new(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn aad(team_id: i64, name: &str) -> Vec<u8> {
        format!("hangar-secret:{team_id}:{name}").into_bytes()
    }

    /// Encrypts a value; returns `(nonce, ciphertext)`.
    pub fn seal(&self, team_id: i64, name: &str, value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad(team_id, name);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .ok()?;
        Some((nonce.to_vec(), ct))
    }

    /// Decrypts a value; `None` when the key, nonce or binding does not match.
    pub fn open(
        &self,
        team_id: i64,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Option<String> {
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let aad = Self::aad(team_id, name);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let b = SecretBox::new([7; 32]);
        let (n, ct) = b.seal(1, "TOKEN", "s3cr3t").unwrap();
        assert!(!ct.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(b.open(1, "TOKEN", &n, &ct).as_deref(), Some("s3cr3t"));
        assert_eq!(b.open(2, "TOKEN", &n, &ct), None, "bound to the team");
        assert_eq!(b.open(1, "OTHER", &n, &ct), None, "bound to the name");
        assert_eq!(
            SecretBox::new([8; 32]).open(1, "TOKEN", &n, &ct),
            None,
            "other key"
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = SecretBox::load(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (n, ct) = a.seal(1, "X", "v").unwrap();
        let b = SecretBox::load(&path).unwrap();
        assert_eq!(b.open(1, "X", &n, &ct).as_deref(), Some("v"));
        std::fs::write(&path, "nothex").unwrap();
        assert!(
            SecretBox::load(&path)
                .unwrap_err()
                .to_string()
                .contains("64 hexadecimal")
        );
    }
}
