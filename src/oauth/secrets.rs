//! Opaque one-time and bearer secrets (codes, access and refresh tokens, client secrets):
//! 32 random bytes in base64url behind a prefix that says what they are. Only the SHA-256 is
//! stored. And PKCE's S256 check.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const ACCESS_TOKEN_PREFIX: &str = "oat_";
pub const REFRESH_TOKEN_PREFIX: &str = "ort_";
pub const CODE_PREFIX: &str = "oac_";
pub const CLIENT_ID_PREFIX: &str = "oc_";
pub const CLIENT_SECRET_PREFIX: &str = "ocs_";

/// A new secret and the hash to store.
pub fn new_secret(prefix: &str) -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash(&secret);
    (secret, hash)
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// RFC 7636: a verifier is 43–128 characters of `[A-Za-z0-9-._~]`.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the base64url SHA-256 of the verifier: 43 characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier)
        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // Appendix B of RFC 7636.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let (a, hash_a) = new_secret(ACCESS_TOKEN_PREFIX);
        let (b, _) = new_secret(ACCESS_TOKEN_PREFIX);
        assert!(a.starts_with("oat_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert_eq!(hash_a, hash(&a));
    }
}
