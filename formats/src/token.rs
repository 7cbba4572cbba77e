//! Bearer tokens: the claims fieldvox reads from a JWT (user, tenant, role), their checks,
//! the HS256 signer and verifier, and what each role may do.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Talks to the assistant and searches their tenant's manuals.
    Technician,
    /// Also manages their tenant's manuals.
    Admin,
    /// Reads gauges.
    Ops,
}

impl std::str::FromStr for Role {
    type Err = String;

    /// `technician`, `admin` or `ops` (command-line arguments).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "technician" => Ok(Role::Technician),
            "admin" => Ok(Role::Admin),
            "ops" => Ok(Role::Ops),
            other => Err(format!("unknown role {other:?}: technician, admin or ops")),
        }
    }
}

/// What a request asks to do; each route and event names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a voice session and ask questions.
    Talk,
    /// Read the server's gauges (`/metrics`).
    ReadGauges,
    /// List, read and search the tenant's manuals.
    ReadManuals,
    /// Upload and delete the tenant's manuals.
    ManageManuals,
    /// Review the tenant's turns and usage (transcripts are the technicians' words).
    ReviewTurns,
}

impl Role {
    /// The one table of who may do what.
    pub fn may(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Technician | Role::Admin, Action::Talk | Action::ReadManuals)
                | (Role::Ops | Role::Admin, Action::ReadGauges)
                | (Role::Admin, Action::ManageManuals | Action::ReviewTurns)
        )
    }

    /// Checks `action` for this role.
    pub fn authorize(self, action: Action) -> Result<(), AuthError> {
        if self.may(action) { Ok(()) } else { Err(AuthError::Forbidden(self)) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    #[serde(default)]
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
    #[error("token claim {0:?} is missing or not valid")]
    InvalidClaim(&'static str),
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("token names a signing key the identity provider does not publish")]
    UnknownKey,
    #[error("the identity provider's keys cannot be fetched")]
    KeysUnavailable,
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
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::UnknownKey => "unknown_key",
            AuthError::KeysUnavailable => "identity_unavailable",
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

/// Maps the library's verdict to ours: specific where the client can act on it.
pub fn rejection(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            AuthError::BadSignature
        }
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidClaim("claims"),
        _ => AuthError::Malformed,
    }
}

/// Tenant and subject are checked whatever signed the token.
pub fn checked(claims: Claims) -> Result<Claims, AuthError> {
    if !valid_tenant(&claims.tenant) {
        return Err(AuthError::InvalidClaim("tenant"));
    }
    if !valid_subject(&claims.sub) {
        return Err(AuthError::InvalidClaim("sub"));
    }
    Ok(claims)
}

/// Signs and verifies HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl TokenKeys {
    /// `secret` must not be empty (configuration requires 16 bytes or more).
    pub fn new(secret: &str) -> Self {
        let bytes = secret.as_bytes();
        Self {
            encoding: EncodingKey::from_secret(bytes).expect("a non-empty HS256 secret"),
            decoding: DecodingKey::from_secret(bytes).expect("a non-empty HS256 secret"),
        }
    }

    pub fn mint(&self, sub: &str, tenant: &str, role: Role, ttl_secs: u64) -> String {
        let iat = now_secs();
        let claims = Claims { sub: sub.into(), tenant: tenant.into(), role, iat, exp: iat.saturating_add(ttl_secs) };
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("claims serialize")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // Only HS256 for this key: `alg: none` and algorithm confusion are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| rejection(&e))?;
        checked(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

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
                Claims { sub: sub.into(), tenant: tenant.into(), role: Role::Technician, iat: 1, exp: 99_999_999_999 };
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

    #[test]
    fn roles_parse_from_their_names() {
        assert_eq!("admin".parse(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn each_role_may_do_only_its_part() {
        use Action::*;
        let table = [
            (Role::Technician, Talk, true),
            (Role::Technician, ReadGauges, false),
            (Role::Admin, Talk, true),
            (Role::Admin, ReadGauges, true),
            (Role::Ops, Talk, false),
            (Role::Ops, ReadGauges, true),
            (Role::Technician, ReadManuals, true),
            (Role::Technician, ManageManuals, false),
            (Role::Admin, ReadManuals, true),
            (Role::Admin, ManageManuals, true),
            (Role::Ops, ReadManuals, false),
            (Role::Ops, ManageManuals, false),
            (Role::Admin, ReviewTurns, true),
            (Role::Technician, ReviewTurns, false),
            (Role::Ops, ReviewTurns, false),
        ];
        for (role, action, allowed) in table {
            assert_eq!(role.may(action), allowed, "{role:?} {action:?}");
            assert_eq!(role.authorize(action).is_ok(), allowed);
        }
    }
}
