//! `orch_` + 43 characters of base64url (32 random bytes). Only the SHA-256 is stored.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "orch_";

pub struct GeneratedKey {
    /// Shown once, never stored.
    pub secret: String,
    pub hash: Vec<u8>,
    pub prefix: String,
}

pub fn generate_key() -> GeneratedKey {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    GeneratedKey {
        hash: hash_key(&secret),
        prefix: key_prefix(&secret),
        secret,
    }
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Enough to recognise a key in a list or a log, too little to guess it.
pub fn key_prefix(secret: &str) -> String {
    secret.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.secret.starts_with("orch_"));
        assert_eq!(a.secret.len(), 5 + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert_eq!(a.prefix, &a.secret[..12]);
    }
}
