//! The oauth plugin through its real `.wasm` in the broker's plugin host (default features), with the
//! harness clock and scripted HTTP: the JWKS URL and the introspection endpoint answer what each test
//! says (or fail, or hang), through the host's grant check and deadline.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use wasp_plugin_harness::{
    AuthVerdict, Decision, Denial, Harness, Hooks, HttpError, KvStore, Qos, SubscribeDecision,
    client, plugin_wasm,
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

// ---------------------------------------------------------------------------------------------------
// Scripted identity provider: RFC 7662 introspection and a hanging JWKS URL.

const INTROSPECT_URL: &str = "https://idp.test/introspect";
/// An opaque token with characters the form encoding must escape.
const OPAQUE: &str = "2YotnFZF/Ejr1z+CsicMWpAA=";

/// Introspection only (no key set): every token is introspected.
fn load_introspection() -> Harness {
    Harness::load(plugin_wasm!())
        .http_grant(["idp.test"])
        .config_toml(&format!(
            "issuer = '{ISS}'\naudience = '{AUD}'\nrequired_claims = ['exp', 'sub']\n\
             [binding]\nclient_id_claim = 'sub'\n\
             [acl]\npublish_claim = 'mqtt_publish'\nsubscribe_claim = 'scope'\n\
             [introspection]\nurl = '{INTROSPECT_URL}'\nclient_id = 'wasp-broker'\n\
             client_secret = 's3cr:t'\ncache_secs = 300\nfailure_cache_secs = 10"
        ))
        .build()
        .unwrap()
}

/// An RFC 7662 answer for an active token of `dev1` expiring `exp_in` seconds after [`NOW`].
fn active(exp_in: u64) -> String {
    json!({
        "active": true,
        "iss": ISS,
        "aud": AUD,
        "sub": "dev1",
        "client_id": "dev1",
        "exp": NOW + exp_in,
        "iat": NOW - 10,
        "mqtt_publish": ["devices/%c/up"],
        "scope": "devices/%c/down/# broadcast/#",
    })
    .to_string()
}

fn password_login(plugin: &Harness, token: &str) -> AuthVerdict {
    plugin
        .authenticate(client("dev1").password(token).auth_request())
        .unwrap()
}

fn enhanced_login(plugin: &Harness, token: &str) -> AuthVerdict {
    plugin
        .authenticate(
            client("dev1")
                .auth("OAUTH2-JWT", Some(token.as_bytes()))
                .auth_request(),
        )
        .unwrap()
}

#[test]
fn opaque_tokens_are_introspected_with_basic_credentials_and_cached_until_exp() {
    let plugin = load_introspection();
    // Active for two minutes, then (asked again at its `exp`) revoked.
    plugin
        .http()
        .respond("POST", INTROSPECT_URL, 200, active(120))
        .respond("POST", INTROSPECT_URL, 200, r#"{"active": false}"#);
    let attributes = attributes(password_login(&plugin, OPAQUE));
    assert_eq!(get(&attributes, "oauth:subject"), "dev1");
    assert_eq!(
        get(&attributes, "wasp:expires-at"),
        ((NOW + 120 + 30) * 1000).to_string()
    );
    assert_eq!(get(&attributes, "oauth:publish"), r#"["devices/dev1/up"]"#);
    assert_eq!(
        get(&attributes, "oauth:subscribe"),
        r#"["devices/dev1/down/#","broadcast/#"]"#
    );

    // What the plugin sent: a form POST of the token, the client credentials in HTTP Basic
    // (each form-urlencoded first, RFC 6749 2.3.1), bounded by the hook's deadline.
    let requests = plugin.http().requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", INTROSPECT_URL)
    );
    assert_eq!(
        String::from_utf8(request.body.clone()).unwrap(),
        "token=2YotnFZF%2FEjr1z%2BCsicMWpAA%3D&token_type_hint=access_token"
    );
    let header = |name: &str| -> Vec<&str> {
        request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    // base64("wasp-broker:s3cr%3At")
    assert_eq!(
        header("authorization"),
        ["Basic d2FzcC1icm9rZXI6czNjciUzQXQ="]
    );
    assert_eq!(
        header("content-type"),
        ["application/x-www-form-urlencoded"]
    );
    assert_eq!(header("accept"), ["application/json"]);
    // The default 100 ms deadline less the host's 20 ms margin is shorter than http_timeout_ms.
    assert!(
        !request.timeout.is_zero() && request.timeout <= Duration::from_millis(80),
        "{:?}",
        request.timeout
    );

    // The answer is cached: a minute later, the same token (now through MQTT 5 enhanced
    // authentication) is let in without asking the endpoint again.
    plugin.clock().advance(Duration::from_secs(60));
    assert!(matches!(
        enhanced_login(&plugin, OPAQUE),
        AuthVerdict::Allow(_)
    ));
    plugin.clock().advance(Duration::from_secs(59));
    assert!(matches!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Allow(_)
    ));
    assert_eq!(plugin.http().requests().len(), 1);

    // At the token's `exp` the cached answer ends (before the 300 s TTL): asked again, now inactive.
    plugin.clock().advance(Duration::from_secs(1));
    assert_eq!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Deny(denial(0x86, "invalid token"))
    );
    assert_eq!(plugin.http().requests().len(), 2);
    // The inactive answer is cached too; enhanced authentication refuses with 0x87.
    assert_eq!(
        enhanced_login(&plugin, OPAQUE),
        AuthVerdict::Deny(denial(0x87, "invalid token"))
    );
    assert_eq!(plugin.http().requests().len(), 2);
    assert_eq!(plugin.stats().failures.total(), 0);
}

#[test]
fn introspection_answers_are_reused_at_most_cache_secs() {
    let plugin = load_introspection();
    // A long-lived active token, then an inactive one, each answered once and then
    // the inactive answer again.
    plugin
        .http()
        .respond("POST", INTROSPECT_URL, 200, active(10_000))
        .respond("POST", INTROSPECT_URL, 200, r#"{"active": false}"#);
    assert!(matches!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Allow(_)
    ));
    plugin.clock().advance(Duration::from_secs(299));
    assert!(matches!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Allow(_)
    ));
    assert_eq!(plugin.http().requests().len(), 1);
    // cache_secs = 300: the endpoint is asked again, and the token was revoked meanwhile.
    plugin.clock().advance(Duration::from_secs(1));
    assert_eq!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Deny(denial(0x86, "invalid token"))
    );
    assert_eq!(plugin.http().requests().len(), 2);
    // An inactive answer is also reused for cache_secs.
    plugin.clock().advance(Duration::from_secs(299));
    assert_eq!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Deny(denial(0x86, "invalid token"))
    );
    assert_eq!(plugin.http().requests().len(), 2);
    plugin.clock().advance(Duration::from_secs(1));
    password_login(&plugin, OPAQUE);
    assert_eq!(plugin.http().requests().len(), 3);
    // One kv slot for the token, which holds its SHA-256, never the token itself.
    let keys = plugin.kv().keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let entry = KvStore::get(plugin.kv(), &keys[0]).unwrap();
    assert!(!String::from_utf8_lossy(&entry).contains("2YotnFZF"));
}

#[test]
fn a_failing_introspection_endpoint_refuses_with_0x88_and_is_asked_again_after_failure_cache_secs()
{
    let plugin = load_introspection();
    let unavailable = AuthVerdict::Deny(denial(0x88, "token check unavailable"));
    plugin.http().fail(
        INTROSPECT_URL,
        HttpError::Transport("connection refused".into()),
    );
    assert_eq!(password_login(&plugin, OPAQUE), unavailable);
    // Not the client's fault: enhanced authentication gets 0x88 too, not 0x87.
    assert_eq!(enhanced_login(&plugin, OPAQUE), unavailable);
    plugin.clock().advance(Duration::from_secs(9));
    assert_eq!(password_login(&plugin, OPAQUE), unavailable);
    // The failure was cached: one request for three CONNECTs.
    assert_eq!(plugin.http().requests().len(), 1);

    // failure_cache_secs = 10 later the endpoint is asked again; it answers 500, then recovers
    // (answers for POST take precedence over the failure scripted for any method).
    plugin
        .http()
        .respond("POST", INTROSPECT_URL, 500, "oops")
        .respond("POST", INTROSPECT_URL, 200, active(3600));
    plugin.clock().advance(Duration::from_secs(1));
    assert_eq!(password_login(&plugin, OPAQUE), unavailable);
    assert_eq!(plugin.http().requests().len(), 2);
    plugin.clock().advance(Duration::from_secs(9));
    assert_eq!(password_login(&plugin, OPAQUE), unavailable);
    assert_eq!(plugin.http().requests().len(), 2);
    plugin.clock().advance(Duration::from_secs(1));
    assert!(matches!(
        password_login(&plugin, OPAQUE),
        AuthVerdict::Allow(_)
    ));
    assert_eq!(plugin.http().requests().len(), 3);
    let stats = plugin.stats();
    // The transport error is an HTTP failure; the 500 is an answer. The plugin itself never failed.
    assert_eq!((stats.http_requests, stats.http_failures), (3, 1));
    assert_eq!(stats.failures.total(), 0);
}

#[test]
fn a_hanging_jwks_url_refuses_the_connect_with_0x88_within_the_deadline() {
    let plugin = load_remote();
    plugin.http().hang(JWKS_URL);
    let a = Signer::new("rsa-a.pem", Algorithm::RS256, "a");
    let token = a.sign(&claims());
    let unavailable = AuthVerdict::Deny(denial(0x88, "token check unavailable"));

    // No tick yet: the first CONNECT fetches the key set, and the provider never answers.
    let started = std::time::Instant::now();
    assert_eq!(password_login(&plugin, &token), unavailable);
    let waited = started.elapsed();
    let requests = plugin.http().requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), &requests[0].headers[..]),
        (
            "GET",
            &[("accept".to_owned(), "application/json".to_owned())][..]
        )
    );
    // The host stopped waiting before the hook's deadline (100 ms less a 20 ms margin), and the
    // plugin answered in time: the call did not fail (no timeout, no trap), it refused.
    assert!(
        !requests[0].timeout.is_zero() && requests[0].timeout <= Duration::from_millis(80),
        "{:?}",
        requests[0].timeout
    );
    assert!(waited >= requests[0].timeout, "{waited:?}");
    let stats = plugin.stats();
    assert_eq!(stats.failures, Default::default(), "{stats:?}");
    assert_eq!(stats.failed_calls, [0; 4]);
    assert_eq!((stats.http_requests, stats.http_failures), (1, 1));
    assert!(
        plugin
            .logs()
            .iter()
            .any(|l| l.message.contains("JWKS fetch failed")),
        "{:?}",
        plugin.logs()
    );

    // The failure is not retried before min_refetch_interval_secs (60 s): refused at once.
    plugin.clock().advance(Duration::from_secs(30));
    assert_eq!(password_login(&plugin, &token), unavailable);
    assert_eq!(plugin.http().requests().len(), 1);

    // The provider recovers (a GET answer takes precedence over the hang scripted for any method);
    // a minute after the failed fetch, the next CONNECT fetches the keys and gets in.
    plugin
        .http()
        .respond("GET", JWKS_URL, 200, jwks(&[a.jwk(true)]));
    plugin.clock().advance(Duration::from_secs(30));
    assert!(matches!(
        password_login(&plugin, &token),
        AuthVerdict::Allow(_)
    ));
    assert!(matches!(
        enhanced_login(&plugin, &token),
        AuthVerdict::Allow(_)
    ));
    assert_eq!(plugin.http().requests().len(), 2);
    assert_eq!(plugin.stats().failures.total(), 0);
}

#[test]
fn a_tick_whose_jwks_fetch_hangs_returns_in_time() {
    let plugin = load_remote();
    plugin.http().hang(JWKS_URL);
    // The tick's fetch is bounded by the same deadline; the tick still answers (retry in 60 s).
    assert_eq!(plugin.tick().unwrap(), 60);
    let stats = plugin.stats();
    assert_eq!((stats.ticks, stats.failed_ticks), (1, 0));
    assert_eq!(stats.failures.total(), 0);
    assert_eq!(plugin.http().requests().len(), 1);
    // No key set yet: a CONNECT right after is refused as unavailable, without fetching again.
    let token = Signer::new("p256.pem", Algorithm::ES256, "b").sign(&claims());
    assert_eq!(
        password_login(&plugin, &token),
        AuthVerdict::Deny(denial(0x88, "token check unavailable"))
    );
    assert_eq!(plugin.http().requests().len(), 1);
}
