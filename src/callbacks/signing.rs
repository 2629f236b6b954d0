//! `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, keyed by the
//! base64 part of a `whsec_` secret. Several keys sign (rotation) and any one verifies.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The decoded key of a `whsec_…` secret (zeroed when dropped).
#[derive(Clone)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Why a `whsec_…` secret is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("must start with whsec_ followed by base64")]
    Prefix,
    #[error("the part after whsec_ is not valid base64")]
    Base64,
    #[error("the key must be at least 16 bytes (24 base64 characters)")]
    TooShort,
}

impl SecretKey {
    pub fn parse(secret: &str) -> Result<Self, SecretKeyError> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or(SecretKeyError::Prefix)?;
        let key = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| SecretKeyError::Base64)?,
        );
        if key.len() < 16 {
            return Err(SecretKeyError::TooShort);
        }
        Ok(Self(key))
    }

    /// A fresh secret: `whsec_` + base64 of 32 random bytes.
    pub fn generate() -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        Zeroizing::new(format!("whsec_{}", STANDARD.encode(raw.as_ref())))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// Signs with every configured key (during a rotation receivers may know either). There is
/// always at least one: nothing goes out unsigned.
#[derive(Clone, Debug)]
pub struct Signer {
    keys: Vec<SecretKey>,
}

#[derive(Debug, thiserror::Error)]
#[error("no signing secret: callbacks and flow requests are never sent unsigned")]
pub struct NoSigningKey;

impl Signer {
    pub fn new(keys: Vec<SecretKey>) -> Result<Self, NoSigningKey> {
        if keys.is_empty() {
            return Err(NoSigningKey);
        }
        Ok(Self { keys })
    }

    /// The `webhook-signature` value: space-separated `v1,<base64>` entries.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "v1,{}",
                    STANDARD.encode(k.mac(id, timestamp, body).finalize().into_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The three headers of a signed message.
#[derive(Debug, Clone, Copy)]
pub struct WebhookHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no ingest secret is configured, so signatures cannot be verified")]
    NotConfigured,
    #[error("webhook-timestamp is not a Unix timestamp")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the accepted window")]
    Expired,
    #[error("no valid v1 signature")]
    BadSignature,
}

#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Vec<SecretKey>,
    tolerance_secs: i64,
}

impl Verifier {
    pub fn new(keys: Vec<SecretKey>, tolerance: Duration) -> Self {
        Self {
            keys,
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Checks the timestamp window, then each `v1` signature against each key in constant
    /// time (HMAC verification compares without early exit).
    pub fn verify(&self, h: WebhookHeaders<'_>, body: &[u8], now: i64) -> Result<(), VerifyError> {
        if self.keys.is_empty() {
            return Err(VerifyError::NotConfigured);
        }
        let timestamp: i64 = h
            .timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        if (now - timestamp).abs() > self.tolerance_secs {
            return Err(VerifyError::Expired);
        }
        let candidates: Vec<Vec<u8>> = h
            .signature
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect();
        let valid = self.keys.iter().any(|key| {
            let expected = key.mac(h.id, timestamp, body);
            candidates
                .iter()
                .any(|sig| expected.clone().verify_slice(sig).is_ok())
        });
        if valid {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn matches_the_specification_vector() {
        let signer = Signer::new(vec![SecretKey::parse(SECRET).unwrap()]).unwrap();
        assert_eq!(
            signer.sign(ID, TS, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_signs_with_every_key_and_verifies_with_any() {
        let old = SecretKey::parse(SECRET).unwrap();
        let new = SecretKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let both = Signer::new(vec![old.clone(), new.clone()])
            .unwrap()
            .sign(ID, TS, BODY);
        assert_eq!(both.split(' ').count(), 2);
        for key in [old, new] {
            let verifier = Verifier::new(vec![key], Duration::from_secs(300));
            let headers = WebhookHeaders {
                id: ID,
                timestamp: "1649367553",
                signature: &both,
            };
            assert_eq!(verifier.verify(headers, BODY, TS + 10), Ok(()));
        }
    }

    #[test]
    fn refuses_tampering_stale_timestamps_and_garbage() {
        let verifier = Verifier::new(
            vec![SecretKey::parse(SECRET).unwrap()],
            Duration::from_secs(300),
        );
        let good = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let h = |timestamp, signature| WebhookHeaders {
            id: ID,
            timestamp,
            signature,
        };
        assert_eq!(verifier.verify(h("1649367553", good), BODY, TS), Ok(()));
        assert_eq!(
            verifier.verify(h("1649367553", good), b"{}", TS),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier.verify(h("1649367553", good), BODY, TS + 301),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            verifier.verify(h("soon", good), BODY, TS),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verifier.verify(h("1649367553", "v2,abc v1,!!!"), BODY, TS),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            Verifier::new(vec![], Duration::from_secs(300)).verify(h("1649367553", good), BODY, TS),
            Err(VerifyError::NotConfigured)
        );
    }

    #[test]
    fn there_is_no_signer_without_a_key() {
        assert!(Signer::new(vec![]).is_err());
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 44);
        assert_ne!(*a, *b);
        SecretKey::parse(&a).unwrap();
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(SecretKey::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(SecretKey::parse("whsec_not base64!").is_err());
        assert!(SecretKey::parse("whsec_c2hvcnQ=").is_err());
        assert!(format!("{:?}", SecretKey::parse(SECRET).unwrap()).contains("***"));
    }
}
