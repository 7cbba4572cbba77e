//! Bearer tokens: HS256 JWTs carrying the user, their tenant and their role.
//!
//! The tenant always comes from a verified token, never from a request body.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Talks to the assistant and searches their tenant's manuals.
    Technician,
    /// Also manages their tenant's manuals.
    Admin,
    /// Reads gauges.
    Ops,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token claim {0:?} is not valid")]
    InvalidClaim(&'static str),
    #[error("role {0:?} may not do this")]
    Forbidden(Role),
}

impl AuthError {
    /// Stable machine-readable reason, sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::InvalidClaim(_) => "invalid_claims",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

/// Longest tenant id accepted.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest subject (user id) accepted.
pub const MAX_SUBJECT_LEN: usize = 256;

/// A tenant id is 1–64 of `A-Z a-z 0-9 . _ -`. Tenant ids end up in index tokens, cache
/// keys and log fields, so nothing else may appear in one.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=MAX_TENANT_LEN).contains(&tenant.len())
        && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A subject is 1–256 bytes with no control characters (it is logged).
pub fn valid_subject(sub: &str) -> bool {
    (1..=MAX_SUBJECT_LEN).contains(&sub.len()) && !sub.chars().any(char::is_control)
}

/// For command-line arguments: the tenant id, or why it is not one.
pub fn parse_tenant(tenant: &str) -> Result<String, String> {
    if valid_tenant(tenant) {
        Ok(tenant.to_string())
    } else {
        Err(format!("a tenant id is 1-{MAX_TENANT_LEN} characters of A-Z a-z 0-9 . _ -"))
    }
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    secret: Vec<u8>,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        Self { secret: secret.as_bytes().to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("hmac takes any key length")
    }

    pub fn mint(&self, sub: &str, tenant: &str, role: Role, ttl_secs: u64) -> String {
        let iat = now_secs();
        let claims = Claims { sub: sub.into(), tenant: tenant.into(), role, iat, exp: iat + ttl_secs };
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(h).map_err(|_| AuthError::Malformed)?)
            .map_err(|_| AuthError::Malformed)?;
        // Only HS256: refusing "none" and every other algorithm closes alg-confusion attacks.
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Malformed);
        }
        let sig = B64.decode(s).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&B64.decode(p).map_err(|_| AuthError::Malformed)?)
            .map_err(|_| AuthError::Malformed)?;
        if !valid_tenant(&claims.tenant) {
            return Err(AuthError::InvalidClaim("tenant"));
        }
        if !valid_subject(&claims.sub) {
            return Err(AuthError::InvalidClaim("sub"));
        }
        if claims.exp <= now_secs() {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let keys = TokenKeys::new("a-secret-of-some-length");
        let token = keys.mint("u1", "acme", Role::Technician, 60);
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.tenant.as_str()), ("u1", "acme"));
        assert_eq!(claims.role, Role::Technician);

        let other = TokenKeys::new("another-secret-entirely");
        assert_eq!(other.verify(&token), Err(AuthError::BadSignature));
        assert_eq!(keys.verify("not.a.jwt"), Err(AuthError::Malformed));
        assert_eq!(keys.verify("abc"), Err(AuthError::Malformed));

        let expired = Claims { sub: "u".into(), tenant: "t".into(), role: Role::Admin, iat: 1, exp: 2 };
        assert_eq!(keys.verify(&keys.sign(&expired)), Err(AuthError::Expired));

        // Tampering with the payload (tenant switch) breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(br#"{"sub":"u1","tenant":"evil","role":"admin","iat":1,"exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(keys.verify(&parts.join(".")), Err(AuthError::BadSignature));
    }

    #[test]
    fn tenant_and_subject_are_validated_at_the_token_boundary() {
        let keys = TokenKeys::new("a-secret-of-some-length");
        let signed = |tenant: &str, sub: &str| {
            let claims =
                Claims { sub: sub.into(), tenant: tenant.into(), role: Role::Technician, iat: 1, exp: u64::MAX };
            keys.verify(&keys.sign(&claims))
        };
        assert!(signed("acme-east_2.eu", "tech-1").is_ok());
        for tenant in ["", "acme:1", "*", "a\0b", "acme corp", "ä", &"t".repeat(65)] {
            assert_eq!(signed(tenant, "u"), Err(AuthError::InvalidClaim("tenant")), "{tenant:?}");
        }
        for sub in ["", "tech\n1", &"u".repeat(257)] {
            assert_eq!(signed("acme", sub), Err(AuthError::InvalidClaim("sub")), "{sub:?}");
        }
        assert!(parse_tenant("acme").is_ok() && parse_tenant("acme:1").is_err());
    }

    #[test]
    fn refuses_alg_none() {
        let keys = TokenKeys::new("a-secret-of-some-length");
        let h = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let p = B64.encode(br#"{"sub":"u","tenant":"t","role":"admin","iat":1,"exp":99999999999}"#);
        assert_eq!(keys.verify(&format!("{h}.{p}.")), Err(AuthError::Malformed));
    }
}
