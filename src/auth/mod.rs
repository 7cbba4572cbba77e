//! Bearer tokens → verified claims (user, tenant, role), and what each role may do.
//!
//! Two kinds of token are accepted:
//! - HS256, signed with `auth.jwt_secret` (`fieldvox token` mints them): for development
//!   and for deployments that issue their own tokens;
//! - RS256/ES256 from the company's identity provider, whose public keys come from
//!   `auth.jwks.url` ([`jwks`]), with `iss` and `aud` checked and the tenant and role read
//!   from configurable claims.
//!
//! The tenant always comes from a verified token, never from a request body.

pub mod jwks;

use jsonwebtoken::Algorithm;

pub use fieldvox_formats::token::{
    Action, AuthError, Claims, MAX_SUBJECT_LEN, MAX_TENANT_LEN, Role, TokenKeys, checked, now_secs, parse_tenant,
    rejection, valid_subject, valid_tenant,
};

use crate::config::AuthConfig;

/// The secret of development tokens. It is published here, so anyone can mint tokens
/// with it: the server accepts it only when started with `--dev`.
pub const DEV_SECRET: &str = "fieldvox-dev-secret";

/// Why the server cannot verify tokens as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "no way to verify tokens: set auth.jwt_secret (HS256, at least 16 bytes) or auth.jwks.url (your identity \
         provider's keys). For local development only, `fieldvox serve --dev` accepts tokens signed with the \
         built-in secret, which anyone can mint"
    )]
    NoVerifier,
    #[error(
        "auth.jwt_secret is the built-in development secret, which anyone can mint tokens with; set your own, or \
         start with --dev on a development machine"
    )]
    DevSecret,
    #[error("invalid auth.jwks: {0}")]
    Jwks(String),
}

/// Verifies every bearer token the server receives.
pub struct Authenticator {
    shared: Option<TokenKeys>,
    jwks: Option<jwks::Jwks>,
}

impl Authenticator {
    pub fn from_config(auth: &AuthConfig) -> Result<Self, AuthSetupError> {
        let secret = match auth.jwt_secret.as_deref() {
            Some(DEV_SECRET) if !auth.allow_dev_secret => return Err(AuthSetupError::DevSecret),
            Some(secret) => Some(secret),
            None if auth.allow_dev_secret => Some(DEV_SECRET),
            None => None,
        };
        let jwks = auth.jwks.as_ref().map(jwks::Jwks::new).transpose()?;
        if secret.is_none() && jwks.is_none() {
            return Err(AuthSetupError::NoVerifier);
        }
        if secret == Some(DEV_SECRET) {
            tracing::warn!(
                "accepting tokens signed with the built-in development secret (--dev): anyone can mint them"
            );
        }
        Ok(Self { shared: secret.map(TokenKeys::new), jwks })
    }

    /// The claims of a valid token, whichever kind it is.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        match (header.alg, &self.shared, &self.jwks) {
            (Algorithm::HS256, Some(keys), _) => keys.verify(token),
            (Algorithm::RS256 | Algorithm::ES256, _, Some(jwks)) => jwks.verify(token, &header).await,
            // A kind of token this server is not set up for can never be valid here.
            _ => Err(AuthError::BadSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    #[test]
    fn the_built_in_secret_needs_the_development_flag() {
        let mut auth = AuthConfig::default();
        assert!(matches!(Authenticator::from_config(&auth), Err(AuthSetupError::NoVerifier)));
        auth.jwt_secret = Some(DEV_SECRET.into());
        assert!(matches!(Authenticator::from_config(&auth), Err(AuthSetupError::DevSecret)));
        auth.allow_dev_secret = true;
        assert!(Authenticator::from_config(&auth).is_ok());
        let own = AuthConfig { jwt_secret: Some("a-secret-of-some-length".into()), ..AuthConfig::default() };
        assert!(Authenticator::from_config(&own).is_ok());
    }

    #[tokio::test]
    async fn the_authenticator_takes_only_the_kinds_it_is_set_up_for() {
        let auth = AuthConfig { jwt_secret: Some("a-secret-of-some-length".into()), ..AuthConfig::default() };
        let verifier = Authenticator::from_config(&auth).unwrap();
        let token = TokenKeys::new("a-secret-of-some-length").mint("u", "acme", Role::Ops, 60);
        assert_eq!(verifier.verify(&token).await.map(|c| c.role), Ok(Role::Ops));
        // An RS256 header with no identity provider configured.
        let h = B64.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k"}"#);
        let p = B64.encode(br#"{"sub":"u","tenant":"t","role":"admin","exp":99999999999}"#);
        assert_eq!(verifier.verify(&format!("{h}.{p}.c2ln")).await, Err(AuthError::BadSignature));
        assert_eq!(verifier.verify("garbage").await, Err(AuthError::Malformed));
    }
}
