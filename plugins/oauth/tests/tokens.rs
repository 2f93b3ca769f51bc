//! JWT verification with real keys and tokens signed by `jsonwebtoken`: every algorithm allowed, every
//! attack and invalid claim refused, and the key store's refresh and refetch policy.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use wasp_oauth_plugin::jwk::{Alg, KeySet};
use wasp_oauth_plugin::jwt::{JwtError, Validation};
use wasp_oauth_plugin::keystore::{Event, KeyStore, MemoryStore, RefreshPolicy};

fn validation() -> Validation {
    Validation {
        issuers: vec![ISS.into()],
        audiences: vec![AUD.into()],
        leeway_secs: 30,
        required: vec!["exp".into()],
    }
}

/// A store with the inline keys of `jwks` and no remote.
fn inline(jwks: &str) -> KeyStore {
    KeyStore::new(
        KeySet::parse_jwks(jwks.as_bytes()).unwrap().keys,
        None,
        RefreshPolicy::default(),
    )
}

fn check(store: &mut KeyStore, token: &str) -> Result<(), JwtError> {
    check_at(store, token, NOW_MS)
}

fn check_at(store: &mut KeyStore, token: &str, now_ms: u64) -> Result<(), JwtError> {
    store
        .verify(
            token,
            &[],
            &validation(),
            now_ms,
            &Http::default(),
            &MemoryStore::default(),
        )
        .map(|claims| assert_eq!(claims.str("sub"), Some("dev1")))
}

fn all_signers() -> Vec<Signer> {
    vec![
        Signer::new("rsa-a.pem", Algorithm::RS256, "rs256"),
        Signer::new("rsa-a.pem", Algorithm::RS384, "rs384"),
        Signer::new("rsa-a.pem", Algorithm::RS512, "rs512"),
        Signer::new("rsa-b.pem", Algorithm::PS256, "ps256"),
        Signer::new("p256.pem", Algorithm::ES256, "es256"),
        Signer::new("p384.pem", Algorithm::ES384, "es384"),
        Signer::new("ed25519.pem", Algorithm::EdDSA, "eddsa"),
    ]
}

#[test]
fn every_algorithm_is_accepted_with_its_key() {
    let signers = all_signers();
    for with_alg in [true, false] {
        let keys: Vec<_> = signers.iter().map(|s| s.jwk(with_alg)).collect();
        let mut store = inline(&jwks(&keys));
        for signer in &signers {
            let token = signer.sign(&claims());
            assert_eq!(check(&mut store, &token), Ok(()), "{:?}", signer.alg);
        }
    }
    // Without `kid` in the token, the key is found by algorithm.
    let keys: Vec<_> = signers.iter().map(|s| s.jwk(false)).collect();
    let mut store = inline(&jwks(&keys));
    for file_alg in [
        ("rsa-a.pem", Algorithm::RS256),
        ("rsa-b.pem", Algorithm::PS256),
        ("p256.pem", Algorithm::ES256),
        ("p384.pem", Algorithm::ES384),
        ("ed25519.pem", Algorithm::EdDSA),
    ] {
        let token = Signer::new(file_alg.0, file_alg.1, "").sign(&claims());
        assert_eq!(check(&mut store, &token), Ok(()), "{:?}", file_alg.1);
    }
}

#[test]
fn hs256_with_the_configured_secret() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut store = KeyStore::new(
        vec![wasp_oauth_plugin::jwk::Key::hmac(None, secret.to_vec())],
        None,
        RefreshPolicy::default(),
    );
    assert_eq!(
        check(&mut store, &Signer::hs256(secret, "").sign(&claims())),
        Ok(())
    );
    assert_eq!(
        check(
            &mut store,
            &Signer::hs256(b"another secret of 32 bytes......", "").sign(&claims())
        ),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn claims_are_validated_with_leeway() {
    let signer = Signer::new("p256.pem", Algorithm::ES256, "k");
    let mut store = inline(&jwks(&[signer.jwk(true)]));
    let t = |changes| signer.sign(&with(claims(), changes));
    let now = NOW as i64;
    // exp: refused from exp + leeway on.
    let exp = t(json!({"exp": NOW - 30}));
    assert_eq!(
        check(&mut store, &exp),
        Err(JwtError::Expired { exp: now - 30, now })
    );
    assert_eq!(check(&mut store, &t(json!({"exp": NOW - 29}))), Ok(()));
    assert_eq!(
        check_at(&mut store, &t(json!({})), (NOW + 3630) * 1000),
        Err(JwtError::Expired {
            exp: now + 3600,
            now: now + 3630
        })
    );
    // nbf and iat: refused beyond the leeway in the future.
    assert_eq!(check(&mut store, &t(json!({"nbf": NOW + 30}))), Ok(()));
    assert_eq!(
        check(&mut store, &t(json!({"nbf": NOW + 31}))),
        Err(JwtError::NotYetValid { nbf: now + 31, now })
    );
    assert_eq!(check(&mut store, &t(json!({"iat": NOW + 30}))), Ok(()));
    assert_eq!(
        check(&mut store, &t(json!({"iat": NOW + 31}))),
        Err(JwtError::IssuedInFuture { iat: now + 31, now })
    );
    // Numbers only.
    assert_eq!(
        check(&mut store, &t(json!({"exp": "9999999999"}))),
        Err(JwtError::BadClaim("exp"))
    );
    // Required claims.
    assert_eq!(
        check(&mut store, &t(json!({"exp": null}))),
        Err(JwtError::MissingClaim("exp".into()))
    );
    // Issuer.
    assert_eq!(
        check(&mut store, &t(json!({"iss": "https://evil.example"}))),
        Err(JwtError::WrongIssuer)
    );
    assert_eq!(
        check(&mut store, &t(json!({"iss": [ISS]}))),
        Err(JwtError::WrongIssuer)
    );
    assert_eq!(
        check(&mut store, &t(json!({"iss": null}))),
        Err(JwtError::MissingClaim("iss".into()))
    );
    // Audience: a string or an array containing one accepted value.
    assert_eq!(
        check(&mut store, &t(json!({"aud": ["other", AUD]}))),
        Ok(())
    );
    assert_eq!(
        check(&mut store, &t(json!({"aud": "other"}))),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        check(&mut store, &t(json!({"aud": ["a", "b"]}))),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        check(&mut store, &t(json!({"aud": [1]}))),
        Err(JwtError::BadClaim("aud"))
    );
    assert_eq!(
        check(&mut store, &t(json!({"aud": null}))),
        Err(JwtError::MissingClaim("aud".into()))
    );
}

#[test]
fn bad_signatures_are_refused() {
    let a = Signer::new("rsa-a.pem", Algorithm::RS256, "a");
    let mut store = inline(&jwks(&[a.jwk(true)]));
    // Signed by another key that claims the same kid.
    let forged = Signer::new("rsa-b.pem", Algorithm::RS256, "a").sign(&claims());
    assert_eq!(check(&mut store, &forged), Err(JwtError::BadSignature));
    // A payload changed after signing.
    let token = a.sign(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let changed = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        with(claims(), json!({"sub": "admin"})).to_string(),
    );
    parts[1] = &changed;
    assert_eq!(
        check(&mut store, &parts.join(".")),
        Err(JwtError::BadSignature)
    );
    // Truncated or empty signature.
    let (input, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        check(&mut store, &format!("{input}.")),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        check(&mut store, &format!("{input}.AAAA")),
        Err(JwtError::BadSignature)
    );
    // EC: a P-256 signature does not verify with another P-256 key, nor as ES384.
    let es = Signer::new("p256.pem", Algorithm::ES256, "a");
    let mut store = inline(&jwks(&[
        Signer::new("p384.pem", Algorithm::ES384, "a").jwk(false)
    ]));
    assert_eq!(
        check(&mut store, &es.sign(&claims())),
        Err(JwtError::NoKeyForAlg(Alg::ES256))
    );
}

#[test]
fn alg_none_is_refused() {
    let signer = Signer::new("rsa-a.pem", Algorithm::RS256, "a");
    let mut store = inline(&jwks(&[signer.jwk(false)]));
    for alg in ["none", "None", "NONE"] {
        for sig in [&b""[..], b"x"] {
            let token = handmade(&json!({"alg": alg, "kid": "a"}), &claims(), None, sig);
            assert_eq!(
                check(&mut store, &token),
                Err(JwtError::AlgNone),
                "{alg} {sig:?}"
            );
        }
    }
    // Missing or unsupported algorithms.
    let token = handmade(&json!({"kid": "a"}), &claims(), None, b"x");
    assert!(matches!(
        check(&mut store, &token),
        Err(JwtError::Malformed(_))
    ));
    let token = handmade(&json!({"alg": "ES512"}), &claims(), None, b"x");
    assert_eq!(
        check(&mut store, &token),
        Err(JwtError::AlgNotAllowed("ES512".into()))
    );
    // An extension the plugin does not understand.
    let token = handmade(
        &json!({"alg": "HS256", "crit": ["exp"]}),
        &claims(),
        Some(b"k"),
        b"",
    );
    assert_eq!(check(&mut store, &token), Err(JwtError::CriticalHeader));
}

#[test]
fn hs256_signed_with_a_public_key_is_refused() {
    let rsa = Signer::new("rsa-a.pem", Algorithm::RS256, "rsa");
    let jwk = rsa.jwk(false);
    let n = jwk["n"].as_str().unwrap().to_owned();
    let public_pem = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(format!(
            "{}/tests/fixtures/rsa-a.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    // The HMAC key an attacker would use: what a confused verifier could take as "the key bytes".
    let guesses: Vec<Vec<u8>> = vec![
        public_pem,
        jwk.to_string().into_bytes(),
        n.clone().into_bytes(),
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &n).unwrap(),
    ];
    let mut store = inline(&jwks(std::slice::from_ref(&jwk)));
    for key in &guesses {
        for header in [
            json!({"alg": "HS256", "kid": "rsa"}),
            json!({"alg": "HS256"}),
        ] {
            let token = handmade(&header, &claims(), Some(key), b"");
            assert_eq!(
                check(&mut store, &token),
                Err(JwtError::NoKeyForAlg(Alg::HS256)),
                "{header}"
            );
        }
    }
    // Even with an HS256 secret configured: an HS256 token naming the RSA key's kid gets no key, and
    // one without kid is checked against the secret only.
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut keys = KeySet::parse_jwks(jwks(&[jwk]).as_bytes()).unwrap().keys;
    keys.push(wasp_oauth_plugin::jwk::Key::hmac(None, secret));
    let mut store = KeyStore::new(keys, None, RefreshPolicy::default());
    let with_kid = handmade(
        &json!({"alg": "HS256", "kid": "rsa"}),
        &claims(),
        Some(&guesses[0]),
        b"",
    );
    assert_eq!(
        check(&mut store, &with_kid),
        Err(JwtError::NoKeyForAlg(Alg::HS256))
    );
    for key in &guesses {
        let token = handmade(&json!({"alg": "HS256"}), &claims(), Some(key), b"");
        assert_eq!(check(&mut store, &token), Err(JwtError::BadSignature));
    }
}

#[test]
fn a_jwk_alg_pins_the_algorithm() {
    // The same RSA key, published for RS256 only, does not verify PS256 or RS512 tokens.
    let rs = Signer::new("rsa-a.pem", Algorithm::RS256, "k");
    let mut store = inline(&jwks(&[rs.jwk(true)]));
    for alg in [Algorithm::PS256, Algorithm::RS512] {
        let token = Signer::new("rsa-a.pem", alg, "k").sign(&claims());
        assert!(
            matches!(check(&mut store, &token), Err(JwtError::NoKeyForAlg(_))),
            "{alg:?}"
        );
    }
    // The configured allow-list applies before any key.
    let token = rs.sign(&claims());
    let result = store.verify(
        &token,
        &[Alg::ES256],
        &validation(),
        NOW_MS,
        &Http::default(),
        &MemoryStore::default(),
    );
    assert_eq!(result.unwrap_err(), JwtError::AlgNotAllowed("RS256".into()));
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let ok = Signer::new("p256.pem", Algorithm::ES256, "ok").jwk(true);
    let small = Signer::new("rsa-1024.pem", Algorithm::RS256, "small").jwk(true);
    let doc = jwks(&[
        small,
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "oct"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "EC", "crv": "P-256", "alg": "RS256", "x": ok["x"], "y": ok["y"]}),
        json!({"kty": "EC", "crv": "P-256", "x": ok["x"], "y": ok["x"]}),
        json!("not an object"),
        ok,
    ]);
    let set = KeySet::parse_jwks(doc.as_bytes()).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].kid.as_deref(), Some("ok"));
    assert_eq!(set.skipped.len(), 7, "{:?}", set.skipped);
    assert!(set.skipped[0].contains("RSA"), "{:?}", set.skipped);
    assert!(KeySet::parse_jwks(br#"{"keys": []}"#).is_err());
    assert!(KeySet::parse_jwks(b"[]").is_err());
    assert!(KeySet::parse_jwks(jwks(&[json!({"kty": "oct", "k": "AA"})]).as_bytes()).is_err());
}

// ---- The key store: refresh, refetch on unknown kid (rate-limited), last good keys, kv sharing. ----

const URL: &str = "https://idp.example/jwks";

fn remote() -> KeyStore {
    KeyStore::new(Vec::new(), Some(URL.into()), RefreshPolicy::default())
}

fn verify(
    store: &mut KeyStore,
    token: &str,
    now_ms: u64,
    http: &Http,
    kv: &MemoryStore,
) -> Result<(), JwtError> {
    store
        .verify(token, &[], &validation(), now_ms, http, kv)
        .map(|_| ())
}

#[test]
fn rotation_is_picked_up_by_a_rate_limited_refetch() {
    let old = Signer::new("rsa-a.pem", Algorithm::RS256, "old");
    let new = Signer::new("rsa-b.pem", Algorithm::RS256, "new");
    let http = Http::serving(&jwks(&[old.jwk(true)]));
    let kv = MemoryStore::default();
    let mut store = remote();
    let old_token = old.sign(&claims());
    let new_token = new.sign(&claims());

    // First use fetches; later ones use the cached keys.
    assert_eq!(verify(&mut store, &old_token, NOW_MS, &http, &kv), Ok(()));
    assert_eq!(
        verify(&mut store, &old_token, NOW_MS + 1000, &http, &kv),
        Ok(())
    );
    assert_eq!(http.gets.get(), 1);

    // The provider rotates. A token with the new kid, less than 60 s after the last fetch: no refetch.
    http.serve(&jwks(&[old.jwk(true), new.jwk(true)]));
    assert_eq!(
        verify(&mut store, &new_token, NOW_MS + 59_999, &http, &kv),
        Err(JwtError::UnknownKid("new".into()))
    );
    assert_eq!(http.gets.get(), 1);
    assert!(store.events.contains(&Event::RefetchRateLimited));
    // From 60 s on: one refetch, then the new key is known.
    assert_eq!(
        verify(&mut store, &new_token, NOW_MS + 60_000, &http, &kv),
        Ok(())
    );
    assert_eq!(http.gets.get(), 2);
    assert_eq!(
        verify(&mut store, &new_token, NOW_MS + 60_001, &http, &kv),
        Ok(())
    );

    // A storm of random kids makes at most one fetch per minute.
    for i in 0..1000u64 {
        let token = Signer::new("rsa-b.pem", Algorithm::RS256, &format!("rand{i}")).sign(&claims());
        let result = verify(&mut store, &token, NOW_MS + 61_000 + i * 100, &http, &kv);
        assert_eq!(result, Err(JwtError::UnknownKid(format!("rand{i}"))));
    }
    // 61 s .. 161 s: refetches at 121 s only.
    assert_eq!(http.gets.get(), 3);
}

#[test]
fn an_unknown_kid_is_refused_after_the_refetch() {
    let known = Signer::new("p256.pem", Algorithm::ES256, "known");
    let http = Http::serving(&jwks(&[known.jwk(true)]));
    let kv = MemoryStore::default();
    let mut store = remote();
    assert_eq!(
        verify(&mut store, &known.sign(&claims()), NOW_MS, &http, &kv),
        Ok(())
    );
    let stranger = Signer::new("p384.pem", Algorithm::ES384, "stranger").sign(&claims());
    let later = NOW_MS + 120_000;
    assert_eq!(
        verify(&mut store, &stranger, later, &http, &kv),
        Err(JwtError::UnknownKid("stranger".into()))
    );
    assert_eq!(http.gets.get(), 2);
}

#[test]
fn failed_refreshes_keep_the_last_good_keys() {
    let signer = Signer::new("ed25519.pem", Algorithm::EdDSA, "k");
    let token = signer.sign(&with(claims(), json!({"exp": NOW + 100_000})));
    let http = Http::serving(&jwks(&[signer.jwk(true)]));
    let kv = MemoryStore::default();
    let mut store = remote();
    assert_eq!(verify(&mut store, &token, NOW_MS, &http, &kv), Ok(()));
    // Past the refresh interval (300 s), every kind of failure keeps the keys, and failures are retried
    // at most once per min_refetch_interval.
    let mut now = NOW_MS + 300_000;
    for failure in [Err("connection refused"), Ok(500), Ok(404)] {
        http.fail(failure);
        let before = http.gets.get();
        assert_eq!(verify(&mut store, &token, now, &http, &kv), Ok(()));
        assert_eq!(verify(&mut store, &token, now + 59_000, &http, &kv), Ok(()));
        assert_eq!(http.gets.get(), before + 1, "{failure:?}");
        assert!(matches!(store.events.last(), Some(Event::FetchFailed(_))));
        now += 60_000;
    }
    for bad in [
        "not json",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#,
    ] {
        http.serve(bad);
        assert_eq!(verify(&mut store, &token, now, &http, &kv), Ok(()), "{bad}");
        now += 60_000;
    }
    // The provider is back: the next due refresh installs its keys.
    let other = Signer::new("p256.pem", Algorithm::ES256, "other");
    http.serve(&jwks(&[other.jwk(true)]));
    assert_eq!(
        verify(&mut store, &other.sign(&claims()), now, &http, &kv),
        Ok(())
    );
    assert_eq!(
        verify(&mut store, &token, now, &http, &kv),
        Err(JwtError::UnknownKid("k".into()))
    );
}

#[test]
fn the_refresh_interval_triggers_a_fetch() {
    let signer = Signer::new("rsa-a.pem", Algorithm::PS256, "k");
    let http = Http::serving(&jwks(&[signer.jwk(true)]));
    let kv = MemoryStore::default();
    let mut store = KeyStore::new(
        Vec::new(),
        Some(URL.into()),
        RefreshPolicy {
            refresh_interval_ms: 10_000,
            min_refetch_interval_ms: 5_000,
        },
    );
    store.refresh_if_due(NOW_MS, &http, &kv);
    assert_eq!(http.gets.get(), 1);
    store.refresh_if_due(NOW_MS + 9_999, &http, &kv);
    assert_eq!(http.gets.get(), 1);
    store.refresh_if_due(NOW_MS + 10_000, &http, &kv);
    assert_eq!(http.gets.get(), 2);
}

#[test]
fn instances_share_keys_and_the_refetch_rate_limit_through_kv() {
    let a = Signer::new("rsa-a.pem", Algorithm::RS256, "a");
    let b = Signer::new("rsa-b.pem", Algorithm::RS256, "b");
    let http = Http::serving(&jwks(&[a.jwk(true)]));
    let kv = MemoryStore::default();
    let mut first = remote();
    let mut second = remote();
    assert_eq!(
        verify(&mut first, &a.sign(&claims()), NOW_MS, &http, &kv),
        Ok(())
    );
    // The second instance adopts the document from kv.
    assert_eq!(
        verify(&mut second, &a.sign(&claims()), NOW_MS + 10, &http, &kv),
        Ok(())
    );
    assert_eq!(http.gets.get(), 1);
    assert!(second.events.contains(&Event::Adopted));
    // An unknown kid on the second instance soon after: the first instance's fetch counts.
    http.serve(&jwks(&[a.jwk(true), b.jwk(true)]));
    let b_token = b.sign(&claims());
    assert!(verify(&mut second, &b_token, NOW_MS + 30_000, &http, &kv).is_err());
    assert_eq!(http.gets.get(), 1);
    // After the interval, the first instance refetches; the second adopts without fetching.
    assert_eq!(
        verify(&mut first, &b_token, NOW_MS + 60_000, &http, &kv),
        Ok(())
    );
    assert_eq!(
        verify(&mut second, &b_token, NOW_MS + 60_001, &http, &kv),
        Ok(())
    );
    assert_eq!(http.gets.get(), 2);
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let mut store = inline(&jwks(&[
        Signer::new("p256.pem", Algorithm::ES256, "k").jwk(true)
    ]));
    for token in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "eyJ.eyJ.x",
        "!!!.???.***",
        "e30.e30.",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.AA",
    ] {
        assert!(check(&mut store, token).is_err(), "{token}");
    }
    let huge = format!("eyJ{}.a.b", "A".repeat(20_000));
    assert!(matches!(
        check(&mut store, &huge),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn with_a_background_tick_verifications_do_not_fetch_cached_keys() {
    let signer = Signer::new("p256.pem", Algorithm::ES256, "k");
    let token = signer.sign(&with(claims(), json!({"exp": NOW + 100_000})));
    let http = Http::serving(&jwks(&[signer.jwk(true)]));
    let kv = MemoryStore::default();
    let mut ticker = remote();
    let mut worker = remote();
    worker.set_background_refresh(true);
    // No key set yet: the first verification fetches anyway.
    assert_eq!(verify(&mut worker, &token, NOW_MS, &http, &kv), Ok(()));
    assert_eq!(http.gets.get(), 1);
    // Long past the refresh interval, with the provider failing: no fetch on the client's path.
    http.fail(Err("down"));
    assert_eq!(
        verify(&mut worker, &token, NOW_MS + 900_000, &http, &kv),
        Ok(())
    );
    assert_eq!(http.gets.get(), 1);
    // The tick (on another instance) refreshes; the worker adopts the new set from kv without fetching.
    let rotated = Signer::new("p384.pem", Algorithm::ES384, "k2");
    http.serve(&jwks(&[rotated.jwk(true)]));
    ticker.refresh_if_due(NOW_MS + 900_000, &http, &kv);
    assert_eq!(http.gets.get(), 2);
    assert_eq!(
        verify(
            &mut worker,
            &rotated.sign(&claims()),
            NOW_MS + 900_001,
            &http,
            &kv
        ),
        Ok(())
    );
    assert_eq!(http.gets.get(), 2);
}
