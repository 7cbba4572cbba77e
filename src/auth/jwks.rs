//! Tokens from the company's identity provider: RS256/ES256, verified with the public
//! keys it publishes as a JWKS. Keys are fetched on first use and cached; a token that
//! names an unknown key (`kid`) triggers one refetch (the provider rotated its keys), at
//! most every [`REFETCH_AFTER`], so forged `kid`s cannot make the server hammer it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::{AuthError, AuthSetupError, Claims, Role, checked, rejection};
use crate::config::JwksConfig;

/// Least time between two fetches of the key set.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// A fetch of the key set that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Allowed clock difference with the identity provider.
const LEEWAY_SECS: u64 = 30;

type Keys = HashMap<String, (Arc<DecodingKey>, Algorithm)>;

pub struct Jwks {
    config: JwksConfig,
    client: reqwest::Client,
    keys: RwLock<Keys>,
    /// When the key set was last fetched; held while fetching, so one fetch runs at a time.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(config: &JwksConfig) -> Result<Self, AuthSetupError> {
        if config.url.is_empty() || config.issuer.is_empty() || config.audience.is_empty() {
            return Err(AuthSetupError::Jwks("url, issuer and audience are all required".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthSetupError::Jwks(format!("HTTP client: {e}")))?;
        Ok(Self {
            config: config.clone(),
            client,
            keys: RwLock::new(HashMap::new()),
            fetched: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn verify(&self, token: &str, header: &Header) -> Result<Claims, AuthError> {
        let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
        let (key, alg) = self.key(kid).await?;
        // The key decides the algorithm, never the token's header.
        if header.alg != alg {
            return Err(AuthError::BadSignature);
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| rejection(&e))?;
        checked(claims(&data.claims, &self.config)?)
    }

    async fn key(&self, kid: &str) -> Result<(Arc<DecodingKey>, Algorithm), AuthError> {
        if let Some(found) = self.cached(kid) {
            return Ok(found);
        }
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached(kid) {
            return Ok(found);
        }
        if fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Err(AuthError::UnknownKey);
        }
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        tracing::info!(keys = keys.len(), url = %self.config.url, "identity provider keys fetched");
        if let Ok(mut cache) = self.keys.write() {
            *cache = keys;
        }
        self.cached(kid).ok_or(AuthError::UnknownKey)
    }

    fn cached(&self, kid: &str) -> Option<(Arc<DecodingKey>, Algorithm)> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<Keys, AuthError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, url = %self.config.url, "cannot fetch the identity provider's keys");
            AuthError::KeysUnavailable
        };
        let response = self.client.get(&self.config.url).send().await.map_err(|e| unavailable(&e))?;
        let set: JwkSet =
            response.error_for_status().map_err(|e| unavailable(&e))?.json().await.map_err(|e| unavailable(&e))?;
        Ok(usable_keys(&set))
    }
}

/// The signing keys of a set that fieldvox accepts: RSA (RS256) and P-256 (ES256), each
/// pinned to its one algorithm. Shared-secret (`oct`) keys are never taken from a JWKS.
fn usable_keys(set: &JwkSet) -> Keys {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, (Arc::new(key), alg));
            }
            Err(e) => tracing::warn!(%kid, error = %e, "identity provider key skipped"),
        }
    }
    keys
}

/// fieldvox's claims from the provider's, under the configured claim names. A role claim
/// may be one name or a list (groups); the most capable known role wins.
fn claims(raw: &Map<String, Value>, config: &JwksConfig) -> Result<Claims, AuthError> {
    let text = |name: &str, claim: &'static str| {
        raw.get(name).and_then(Value::as_str).map(str::to_owned).ok_or(AuthError::InvalidClaim(claim))
    };
    let roles: Vec<&str> = match raw.get(&config.role_claim) {
        Some(Value::String(r)) => vec![r.as_str()],
        Some(Value::Array(rs)) => rs.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let role = [("admin", Role::Admin), ("technician", Role::Technician), ("ops", Role::Ops)]
        .into_iter()
        .find(|(name, _)| roles.contains(name))
        .map(|(_, role)| role)
        .ok_or(AuthError::InvalidClaim("role"))?;
    Ok(Claims {
        sub: text("sub", "sub")?,
        tenant: text(&config.tenant_claim, "tenant")?,
        role,
        iat: raw.get("iat").and_then(Value::as_u64).unwrap_or(0),
        exp: raw.get("exp").and_then(Value::as_u64).ok_or(AuthError::InvalidClaim("exp"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> JwksConfig {
        JwksConfig {
            url: "http://idp.invalid/jwks".into(),
            issuer: "https://idp.example".into(),
            audience: "fieldvox".into(),
            tenant_claim: "https://fieldvox.example/tenant".into(),
            role_claim: "groups".into(),
        }
    }

    #[test]
    fn claims_are_read_under_the_configured_names() {
        let raw = json!({"sub": "u7", "https://fieldvox.example/tenant": "acme", "groups": ["staff", "technician"],
                         "exp": 99_999_999_999u64});
        let c = claims(raw.as_object().unwrap(), &config()).unwrap();
        assert_eq!((c.sub.as_str(), c.tenant.as_str(), c.role), ("u7", "acme", Role::Technician));
        let both = json!({"sub": "u", "https://fieldvox.example/tenant": "t", "groups": ["ops", "admin"], "exp": 1});
        assert_eq!(claims(both.as_object().unwrap(), &config()).unwrap().role, Role::Admin);
        let none = json!({"sub": "u", "https://fieldvox.example/tenant": "t", "groups": ["staff"], "exp": 1});
        assert_eq!(claims(none.as_object().unwrap(), &config()), Err(AuthError::InvalidClaim("role")));
        let no_tenant = json!({"sub": "u", "tenant": "t", "groups": "ops", "exp": 1});
        assert_eq!(claims(no_tenant.as_object().unwrap(), &config()), Err(AuthError::InvalidClaim("tenant")));
    }

    #[test]
    fn a_key_set_yields_only_signing_keys_pinned_to_their_algorithm() {
        let set: JwkSet = serde_json::from_value(json!({"keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "enc", "crv": "P-256", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        let keys = usable_keys(&set);
        assert_eq!(keys.len(), 1, "no shared secret, no encryption key");
        assert_eq!(keys.get("ec").map(|(_, alg)| *alg), Some(Algorithm::ES256));
    }
}
