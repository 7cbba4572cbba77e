//! Bearer tokens. Any string is verified or refused; and a token correctly signed with the
//! server's secret around any header and claims (first byte non-zero: the rest is
//! `header \n claims`) is accepted only with HS256, a valid tenant and subject, and an
//! expiry in the future.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use fieldvox_formats::token::{TokenKeys, now_secs, valid_subject, valid_tenant};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzzing-secret-of-some-length";

fuzz_target!(|data: &[u8]| {
    let keys = TokenKeys::new(SECRET);
    let [mode, rest @ ..] = data else { return };
    let token = if *mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
        let message = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("a secret");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signs");
        format!("{message}.{signature}")
    };
    if let Ok(claims) = keys.verify(&token) {
        assert_eq!(jsonwebtoken::decode_header(&token).map(|h| h.alg).ok(), Some(Algorithm::HS256));
        assert!(valid_tenant(&claims.tenant) && valid_subject(&claims.sub), "{claims:?}");
        assert!(claims.exp > now_secs(), "expired token accepted: {claims:?}");
    }
});
