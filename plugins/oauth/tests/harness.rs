//! The oauth plugin through its real `.wasm` in the broker's plugin host (default features: inline
//! JWKS, no outgoing HTTP), with the harness clock.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use wasp_plugin_harness::{
    AuthVerdict, Decision, Denial, Harness, Hooks, Qos, SubscribeDecision, client, plugin_wasm,
};

fn denial(reason_code: u8, reason: &str) -> Denial {
    Denial {
        reason_code,
        reason: Some(reason.to_owned()),
    }
}

fn signer() -> Signer {
    Signer::new("ed25519.pem", Algorithm::EdDSA, "ed")
}

fn load(extra: &str) -> Harness {
    let jwks = jwks(&[signer().jwk(true)]);
    // The plugin imports `http` (feature `http`, on by default): it loads only with a grant.
    Harness::load(plugin_wasm!())
        .http_grant(["idp.test"])
        .config_toml(&format!(
            "issuer = '{ISS}'\naudience = '{AUD}'\njwks = '''{jwks}'''\n{extra}"
        ))
        .build()
        .unwrap()
}

fn attributes(verdict: AuthVerdict) -> Vec<(String, String)> {
    match verdict {
        AuthVerdict::Allow(attributes) => attributes,
        other => panic!("{other:?}"),
    }
}

fn get<'a>(attributes: &'a [(String, String)], key: &str) -> &'a str {
    &attributes.iter().find(|(k, _)| k == key).unwrap().1
}

#[test]
fn jwt_password_and_enhanced_auth_with_the_host_clock() {
    let plugin = load("");
    assert_eq!(plugin.interests().hooks, Hooks::AUTHENTICATE);
    // The harness clock starts at 1 700 000 000 000 ms = NOW.
    let token = signer().sign(&claims());
    let verdict = plugin
        .authenticate(client("dev1").username("x").password(&token).auth_request())
        .unwrap();
    let attributes = attributes(verdict);
    assert_eq!(get(&attributes, "oauth:subject"), "dev1");
    assert_eq!(
        get(&attributes, "wasp:expires-at"),
        ((NOW + 3600 + 30) * 1000).to_string()
    );
    let enhanced = client("dev1")
        .auth("OAUTH2-JWT", Some(token.as_bytes()))
        .reauthentication(true)
        .auth_request();
    assert!(matches!(
        plugin.authenticate(enhanced.clone()),
        Ok(AuthVerdict::Allow(_))
    ));
    // One hour and 30 s later (the leeway), the same token is refused: the clock is the host's.
    plugin.clock().advance(Duration::from_secs(3630));
    assert_eq!(
        plugin.authenticate(enhanced).unwrap(),
        AuthVerdict::Deny(denial(0x87, "invalid token"))
    );
    assert_eq!(
        plugin
            .authenticate(client("dev1").password(&token).auth_request())
            .unwrap(),
        AuthVerdict::Deny(denial(0x86, "invalid token"))
    );
    // No token: another plugin decides.
    assert_eq!(
        plugin.authenticate(client("dev1").auth_request()).unwrap(),
        AuthVerdict::Defer
    );
}

#[test]
fn acl_from_claims_through_the_authorizer_hooks() {
    let plugin = load(
        "[binding]\nclient_id_claim = 'sub'\n[acl]\npublish_claim = 'mqtt_pub'\nsubscribe_claim = 'mqtt_sub'\ncache_secs = 7",
    );
    assert_eq!(
        plugin.interests().hooks,
        Hooks::AUTHENTICATE | Hooks::AUTHORIZE_PUBLISH | Hooks::AUTHORIZE_SUBSCRIBE
    );
    let token = signer().sign(&with(
        claims(),
        json!({"mqtt_pub": ["devices/%c/up"], "mqtt_sub": "devices/%c/down/#"}),
    ));
    // A token for another client id.
    assert_eq!(
        plugin
            .authenticate(client("dev2").password(&token).auth_request())
            .unwrap(),
        AuthVerdict::Deny(denial(0x87, "token not issued for this client"))
    );
    let attributes = attributes(
        plugin
            .authenticate(client("dev1").password(&token).auth_request())
            .unwrap(),
    );
    let pairs: Vec<(&str, &str)> = attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let session = client("dev1").session(&pairs);
    let publish = |topic: &str| {
        plugin
            .authorize_publish(&session, topic, Qos::AtLeastOnce, false)
            .unwrap()
    };
    let allowed = publish("devices/dev1/up");
    assert_eq!(
        (allowed.decision, allowed.cache_seconds),
        (Decision::Allow, Some(7))
    );
    assert!(matches!(
        publish("devices/dev2/up").decision,
        Decision::Deny(_)
    ));
    let subscribe = |filter: &str| {
        plugin
            .authorize_subscribe(&session, filter, Qos::ExactlyOnce)
            .unwrap()
            .decision
    };
    assert_eq!(
        subscribe("devices/dev1/down/+"),
        SubscribeDecision::Allow(Qos::ExactlyOnce)
    );
    assert!(matches!(subscribe("devices/#"), SubscribeDecision::Deny(_)));
    // A session another plugin authenticated: deferred.
    let other = client("dev9").session(&[("username", "bob")]);
    assert_eq!(
        plugin
            .authorize_publish(&other, "devices/dev1/up", Qos::AtMostOnce, false)
            .unwrap()
            .decision,
        Decision::Defer
    );
}

#[test]
fn configuration_errors_refuse_the_plugin() {
    let err = Harness::load(plugin_wasm!())
        .http_grant(["idp.test"])
        .config_toml("jwks = '{}'")
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("plugin config: jwks: not a JWKS"), "{err}");
}

const JWKS_URL: &str = "https://idp.test/jwks";

fn load_remote() -> Harness {
    Harness::load(plugin_wasm!())
        .http_grant(["idp.test"])
        .config_toml(&format!(
            "issuer = '{ISS}'\naudience = '{AUD}'\njwks_url = '{JWKS_URL}'"
        ))
        .build()
        .unwrap()
}

#[test]
fn jwks_url_fetched_by_the_tick_and_refetched_at_most_once_a_minute() {
    let plugin = load_remote();
    let a = Signer::new("rsa-a.pem", Algorithm::RS256, "a");
    let b = Signer::new("p256.pem", Algorithm::ES256, "b");
    // The first fetch gets `a`, later ones `a` and `b` (the keys rotate).
    plugin
        .http()
        .respond("GET", JWKS_URL, 200, jwks(&[a.jwk(true)]))
        .respond("GET", JWKS_URL, 200, jwks(&[a.jwk(true), b.jwk(true)]));
    // The tick fetches the keys, and asks to be called again within the refetch interval.
    assert_eq!(plugin.tick().unwrap(), 60);
    assert_eq!(plugin.http().requests().len(), 1);
    let login = |token: &str| {
        plugin
            .authenticate(client("dev1").password(token).auth_request())
            .unwrap()
    };
    assert!(matches!(login(&a.sign(&claims())), AuthVerdict::Allow(_)));
    assert_eq!(plugin.http().requests().len(), 1);
    // A token with the new kid 10 s after the fetch: no refetch yet, refused.
    plugin.clock().advance(Duration::from_secs(10));
    let b_token = b.sign(&claims());
    for _ in 0..20 {
        assert_eq!(
            login(&b_token),
            AuthVerdict::Deny(denial(0x86, "invalid token"))
        );
    }
    assert_eq!(plugin.http().requests().len(), 1);
    // A minute after the fetch: one refetch, and the new key is in use.
    plugin.clock().advance(Duration::from_secs(50));
    let verdict = login(&b_token);
    assert!(
        matches!(verdict, AuthVerdict::Allow(_)),
        "{verdict:?} {:?} {:?}",
        plugin.logs(),
        plugin.http().requests()
    );
    assert!(matches!(login(&b_token), AuthVerdict::Allow(_)));
    assert_eq!(plugin.http().requests().len(), 2);
}

#[test]
fn a_failing_provider_keeps_the_last_good_keys() {
    let plugin = load_remote();
    let a = Signer::new("ed25519.pem", Algorithm::EdDSA, "a");
    plugin
        .http()
        .respond("GET", JWKS_URL, 200, jwks(&[a.jwk(true)]))
        .respond("GET", JWKS_URL, 503, "");
    plugin.tick().unwrap();
    // Past the refresh interval, the provider fails: the tick keeps the keys.
    plugin.clock().advance(Duration::from_secs(400));
    plugin.tick().unwrap();
    assert_eq!(plugin.http().requests().len(), 2);
    let token = a.sign(&with(claims(), json!({"exp": NOW + 10_000})));
    assert!(matches!(
        plugin
            .authenticate(client("dev1").password(&token).auth_request())
            .unwrap(),
        AuthVerdict::Allow(_)
    ));
    // The CONNECT did not fetch: the tick refreshes.
    assert_eq!(plugin.http().requests().len(), 2);
}
