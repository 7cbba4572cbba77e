//! Identity as companies run it: RS256 and ES256 tokens from an identity provider whose
//! keys the test serves as a JWKS, with `iss`, `aud`, `kid`, expiry and algorithm checked
//! and the tenant and role read from the provider's own claim names; and the table of
//! which role may use which route.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use fieldvox::auth::{Role, TokenKeys, now_secs};
use fieldvox::config::JwksConfig;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "fieldvox";
const TENANT_CLAIM: &str = "https://fieldvox.test/tenant";
const ROLE_CLAIM: &str = "groups";

/// A fresh key made by the `openssl` command line, as DER (PKCS#1 for RSA, PKCS#8 for EC).
fn openssl_key(dir: &Path, kind: &str) -> Vec<u8> {
    let der = dir.join(format!("{kind}.der"));
    let script = match kind {
        "rsa" => {
            format!("openssl genrsa -traditional 2048 | openssl rsa -traditional -outform DER -out {}", der.display())
        }
        _ => format!(
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -nocrypt -outform DER -out {}",
            der.display()
        ),
    };
    let status = std::process::Command::new("sh").args(["-c", &script]).status().expect("openssl runs");
    assert!(status.success(), "{script}");
    std::fs::read(der).expect("key written")
}

struct Provider {
    rsa: EncodingKey,
    ec: EncodingKey,
    /// The RSA public key's DER, as an attacker would find it.
    rsa_public: Vec<u8>,
}

impl Provider {
    fn token(&self, alg: Algorithm, kid: &str, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let key = if alg == Algorithm::ES256 { &self.ec } else { &self.rsa };
        jsonwebtoken::encode(&header, &claims, key).expect("sign")
    }
}

fn claims(role: &str) -> Value {
    json!({"sub": "tech-9", "iss": ISSUER, "aud": AUDIENCE, "exp": now_secs() + 600, "iat": now_secs(),
           TENANT_CLAIM: "acme", ROLE_CLAIM: ["staff", role]})
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public jwk");
    jwk.common.key_id = Some(kid.into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

/// Serves the key set on an ephemeral port; counts fetches.
async fn serve_jwks(set: JwkSet) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let body = serde_json::to_string(&set).expect("jwks json");
    let counter = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks"), fetches)
}

/// The upgrade's outcome: 101 when a session opened, else the refusal's status and code.
async fn talk(server: &OwnServer, token: &str) -> (u16, String) {
    let mut req = format!("ws://{}/v1/realtime", server.addr).into_client_request().expect("request");
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: Value = resp.body().as_ref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
            (resp.status().as_u16(), body["error"].as_str().unwrap_or_default().to_string())
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn get(server: &OwnServer, path: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(format!("http://{}{path}", server.addr));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn identity_provider_tokens_and_the_role_table() {
    let dir = temp_dir("identity");
    let rsa_der = openssl_key(&dir, "rsa");
    let rsa = EncodingKey::from_rsa_der(&rsa_der);
    let ec = EncodingKey::from_ec_der(&openssl_key(&dir, "ec"));
    let rsa_jwk = jwk(&rsa, Algorithm::RS256, "rsa-1");
    let ec_jwk = jwk(&ec, Algorithm::ES256, "ec-1");
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-inform", "DER", "-pubout", "-outform", "DER", "-in"])
        .arg(dir.join("rsa.der"))
        .output()
        .expect("openssl");
    let idp = Provider { rsa, ec, rsa_public: public.stdout };
    let (url, fetches) = serve_jwks(JwkSet { keys: vec![rsa_jwk, ec_jwk] }).await;

    let mut config = test_config(&dir.join("data"));
    config.auth.jwks = Some(JwksConfig {
        url,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        tenant_claim: TENANT_CLAIM.into(),
        role_claim: ROLE_CLAIM.into(),
    });
    let server = own_server(config).await;

    // Valid tokens of both algorithms open sessions; the keys were fetched once.
    assert_eq!(talk(&server, &idp.token(Algorithm::RS256, "rsa-1", claims("technician"))).await.0, 101);
    assert_eq!(talk(&server, &idp.token(Algorithm::ES256, "ec-1", claims("technician"))).await.0, 101);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");

    let mut wrong_iss = claims("technician");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = claims("technician");
    wrong_aud["aud"] = json!("another-app");
    let mut expired = claims("technician");
    expired["exp"] = json!(now_secs() - 3_600);
    let mut no_tenant = claims("technician");
    no_tenant.as_object_mut().expect("object").remove(TENANT_CLAIM);
    let none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
        format!("{h}.{}.", b64.encode(claims("admin").to_string()))
    };
    // The classic confusion: HS256 "signed" with the provider's public key.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let key = EncodingKey::from_secret(&idp.rsa_public).expect("key");
        jsonwebtoken::encode(&header, &claims("admin"), &key).expect("sign")
    };
    let cases = [
        ("wrong issuer", idp.token(Algorithm::RS256, "rsa-1", wrong_iss), "wrong_issuer"),
        ("wrong audience", idp.token(Algorithm::RS256, "rsa-1", wrong_aud), "wrong_audience"),
        ("unknown kid", idp.token(Algorithm::RS256, "rotated-away", claims("technician")), "unknown_key"),
        ("expired", idp.token(Algorithm::RS256, "rsa-1", expired), "token_expired"),
        ("no tenant claim", idp.token(Algorithm::RS256, "rsa-1", no_tenant), "invalid_claims"),
        ("alg none", none, "malformed_token"),
        ("HS256 with the public key", confused, "bad_signature"),
        ("ES256 header on the RSA key", idp.token(Algorithm::ES256, "rsa-1", claims("technician")), "bad_signature"),
    ];
    for (case, token, code) in cases {
        assert_eq!(talk(&server, &token).await, (401, code.to_string()), "{case}");
    }
    // Unknown kids refetch the set (the provider may have rotated its keys), but at most
    // every 30 s: forged kids right after a fetch cause none.
    assert_eq!(talk(&server, &idp.token(Algorithm::RS256, "forged-2", claims("technician"))).await.1, "unknown_key");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "forged kids made the server fetch the key set again");

    // Who may do what: each cell asserted, for provider tokens and for HS256 ones.
    let hs = TokenKeys::new(server.app.config.auth.signing_secret());
    for role in [Role::Technician, Role::Admin, Role::Ops] {
        let name = format!("{role:?}").to_lowercase();
        for token in [idp.token(Algorithm::RS256, "rsa-1", claims(&name)), hs.mint("u", "acme", role, 600)] {
            let talk_expected = if role == Role::Ops { (403, "forbidden".to_string()) } else { (101, String::new()) };
            assert_eq!(talk(&server, &token).await, talk_expected, "{role:?} talks");
            let metrics = if role == Role::Technician { 403 } else { 200 };
            assert_eq!(get(&server, "/metrics", Some(&token)).await, metrics, "{role:?} reads gauges");
            for open in ["/readyz", "/healthz", "/"] {
                assert_eq!(get(&server, open, Some(&token)).await, 200, "{role:?} {open}");
            }
        }
    }
    assert_eq!(talk(&server, "").await.0, 401, "no token, no session");
    assert_eq!(get(&server, "/metrics", None).await, 401, "no token, no gauges");
    for open in ["/readyz", "/healthz", "/"] {
        assert_eq!(get(&server, open, None).await, 200, "{open} is open");
    }
}
