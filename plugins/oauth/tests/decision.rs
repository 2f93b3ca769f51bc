//! The whole authentication decision (configuration → Authenticator) with real tokens: where the token
//! is, claims binding, attributes (ACL, expiry), introspection, and configuration errors.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use wasp_oauth_plugin::acl::{self, ATTR_PUBLISH, ATTR_SUBSCRIBE};
use wasp_oauth_plugin::auth::{ATTR_EXPIRES_AT, ATTR_SUBJECT};
use wasp_oauth_plugin::keystore::MemoryStore;
use wasp_oauth_plugin::{Authenticator, Config, Io, Outcome, Request};

fn signer() -> Signer {
    Signer::new("rsa-a.pem", Algorithm::RS256, "k1")
}

fn config(extra: &str) -> Result<wasp_oauth_plugin::Settings, String> {
    let jwks = jwks(&[signer().jwk(true)]);
    let text =
        format!("issuer = '{ISS}'\naudience = ['{AUD}', 'other']\njwks = '''{jwks}'''\n{extra}");
    let config: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
    config.validate()
}

fn authenticator(extra: &str) -> Authenticator {
    Authenticator::new(config(extra).unwrap())
}

fn run(auth: &mut Authenticator, request: &Request<'_>) -> Outcome {
    run_with(auth, request, &Http::default(), &MemoryStore::default())
}

fn run_with(
    auth: &mut Authenticator,
    request: &Request<'_>,
    http: &Http,
    kv: &MemoryStore,
) -> Outcome {
    auth.authenticate(
        request,
        NOW_MS,
        &Io {
            http,
            post: http,
            store: kv,
        },
    )
}

fn password<'a>(client_id: &'a str, username: Option<&'a str>, token: &'a str) -> Request<'a> {
    Request {
        client_id,
        username,
        password: Some(token.as_bytes()),
        ..Request::default()
    }
}

fn attr<'a>(outcome: &'a Outcome, key: &str) -> Option<&'a str> {
    match outcome {
        Outcome::Allow(attrs) => attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

fn code(outcome: &Outcome) -> Option<u8> {
    match outcome {
        Outcome::Deny { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_token_as_password_is_accepted_with_expiry_and_subject() {
    let mut auth = authenticator("");
    let token = signer().sign(&claims());
    let outcome = run(&mut auth, &password("dev1", Some("whatever"), &token));
    assert_eq!(attr(&outcome, ATTR_SUBJECT), Some("dev1"));
    // exp + leeway (30 s), in milliseconds.
    assert_eq!(
        attr(&outcome, ATTR_EXPIRES_AT),
        Some(((NOW + 3600 + 30) * 1000).to_string().as_str())
    );
    // "Bearer " prefixes are tolerated.
    let bearer = format!("Bearer {token}");
    assert!(matches!(
        run(&mut auth, &password("dev1", None, &bearer)),
        Outcome::Allow(_)
    ));
}

#[test]
fn invalid_tokens_get_bad_username_or_password_or_not_authorized() {
    let mut auth = authenticator("");
    let expired = signer().sign(&with(claims(), json!({"exp": NOW - 100})));
    assert_eq!(
        code(&run(&mut auth, &password("dev1", None, &expired))),
        Some(0x86)
    );
    let enhanced = Request {
        client_id: "dev1",
        auth_method: Some("OAUTH2-JWT"),
        auth_data: Some(expired.as_bytes()),
        ..Request::default()
    };
    assert_eq!(code(&run(&mut auth, &enhanced)), Some(0x87));
    let wrong_aud = signer().sign(&with(claims(), json!({"aud": "someone-else"})));
    assert_eq!(
        code(&run(&mut auth, &password("dev1", None, &wrong_aud))),
        Some(0x86)
    );
    // Not a JWT and no introspection: refused, or left to the next plugin when configured so.
    assert_eq!(
        code(&run(&mut auth, &password("dev1", None, "hunter2"))),
        Some(0x86)
    );
    let mut deferring = authenticator("non_token_passwords = 'defer'");
    assert_eq!(
        run(&mut deferring, &password("dev1", None, "hunter2")),
        Outcome::Defer
    );
}

#[test]
fn clients_without_a_token_or_with_another_method_are_deferred() {
    let mut auth = authenticator("");
    assert_eq!(
        run(
            &mut auth,
            &Request {
                client_id: "c",
                ..Request::default()
            }
        ),
        Outcome::Defer
    );
    assert_eq!(
        run(&mut auth, &password("c", Some("u"), "")),
        Outcome::Defer
    );
    let scram = Request {
        client_id: "c",
        auth_method: Some("SCRAM-SHA-256"),
        auth_data: Some(b"n,,n=user,r=abc"),
        ..Request::default()
    };
    assert_eq!(run(&mut auth, &scram), Outcome::Defer);
    let empty = Request {
        client_id: "c",
        auth_method: Some("OAUTH2-JWT"),
        ..Request::default()
    };
    assert_eq!(code(&run(&mut auth, &empty)), Some(0x87));
}

#[test]
fn enhanced_authentication_and_reauthentication() {
    let mut auth = authenticator("auth_method = 'BEARER'");
    let token = signer().sign(&claims());
    let mut request = Request {
        client_id: "dev1",
        auth_method: Some("BEARER"),
        auth_data: Some(token.as_bytes()),
        ..Request::default()
    };
    assert!(matches!(run(&mut auth, &request), Outcome::Allow(_)));
    // Re-authentication with a fresh token extends the expiry.
    let fresh = signer().sign(&with(claims(), json!({"exp": NOW + 7200})));
    request.auth_data = Some(fresh.as_bytes());
    request.reauthentication = true;
    let outcome = run(&mut auth, &request);
    assert_eq!(
        attr(&outcome, ATTR_EXPIRES_AT),
        Some(((NOW + 7200 + 30) * 1000).to_string().as_str())
    );
    // The default method name is not accepted when another is configured.
    request.auth_method = Some("OAUTH2-JWT");
    assert_eq!(run(&mut auth, &request), Outcome::Defer);
}

#[test]
fn claims_bind_the_client_id_and_the_username() {
    let mut auth =
        authenticator("[binding]\nclient_id_claim = 'sub'\nusername_claim = 'preferred_username'");
    let token = signer().sign(&with(claims(), json!({"preferred_username": "ann"})));
    assert!(matches!(
        run(&mut auth, &password("dev1", Some("ann"), &token)),
        Outcome::Allow(_)
    ));
    // A token for another client id.
    assert_eq!(
        code(&run(&mut auth, &password("dev2", Some("ann"), &token))),
        Some(0x87)
    );
    // Another user name, or none.
    assert_eq!(
        code(&run(&mut auth, &password("dev1", Some("bob"), &token))),
        Some(0x86)
    );
    assert_eq!(
        code(&run(&mut auth, &password("dev1", None, &token))),
        Some(0x86)
    );
    // A token without the bound claim.
    let bare = signer().sign(&with(claims(), json!({"sub": null})));
    assert_eq!(
        code(&run(&mut auth, &password("dev1", Some("ann"), &bare))),
        Some(0x87)
    );
}

#[test]
fn acl_claims_become_attributes_with_substitution() {
    let mut auth = authenticator("[acl]\npublish_claim = 'mqtt_pub'\nsubscribe_claim = 'scope'");
    let token = signer().sign(&with(
        claims(),
        json!({
            "mqtt_pub": ["devices/%c/up", "users/%u/#", "a/#/bad"],
            "scope": "devices/%c/down/# broadcast/+",
        }),
    ));
    let outcome = run(&mut auth, &password("dev1", Some("ann"), &token));
    let publish = acl::decode(attr(&outcome, ATTR_PUBLISH).unwrap()).unwrap();
    assert_eq!(publish, ["devices/dev1/up", "users/ann/#"]);
    let subscribe = acl::decode(attr(&outcome, ATTR_SUBSCRIBE).unwrap()).unwrap();
    assert_eq!(subscribe, ["devices/dev1/down/#", "broadcast/+"]);
    assert!(acl::may_publish(&publish, "users/ann/x"));
    assert!(!acl::may_publish(&publish, "devices/dev2/up"));
    assert!(acl::may_subscribe(&subscribe, "devices/dev1/down/cmd"));
    assert!(!acl::may_subscribe(&subscribe, "devices/+/down/#"));
    // A client id with wildcards or levels gets nothing from %c, and no claim means no filter.
    let outcome = run(
        &mut auth,
        &password(
            "a/#",
            None,
            &signer().sign(&with(claims(), json!({"mqtt_pub": ["devices/%c/up"]}))),
        ),
    );
    assert_eq!(attr(&outcome, ATTR_PUBLISH), Some("[]"));
    assert_eq!(attr(&outcome, ATTR_SUBSCRIBE), Some("[]"));
}

#[test]
fn claims_listed_in_attributes_are_copied() {
    let mut auth = authenticator("attributes = ['tenant', 'roles', 'missing']");
    let token = signer().sign(&with(
        claims(),
        json!({"tenant": "acme", "roles": ["a", "b"]}),
    ));
    let outcome = run(&mut auth, &password("dev1", None, &token));
    assert_eq!(attr(&outcome, "oauth:claim:tenant"), Some("acme"));
    assert_eq!(attr(&outcome, "oauth:claim:roles"), Some(r#"["a","b"]"#));
    assert_eq!(attr(&outcome, "oauth:claim:missing"), None);
}

#[test]
fn a_jwks_url_that_never_answered_is_server_unavailable() {
    let config: Config = toml::from_str("jwks_url = 'https://idp.example/jwks'").unwrap();
    let mut auth = Authenticator::new(config.validate().unwrap());
    let http = Http::default();
    http.fail(Err("connection refused"));
    let kv = MemoryStore::default();
    let token = signer().sign(&claims());
    let outcome = run_with(&mut auth, &password("dev1", None, &token), &http, &kv);
    assert_eq!(code(&outcome), Some(0x88), "{outcome:?}");
    // Once it answers (after the refetch interval), the token is accepted.
    http.serve(&jwks(&[signer().jwk(true)]));
    let later = auth.authenticate(
        &password("dev1", None, &token),
        NOW_MS + 60_000,
        &Io {
            http: &http,
            post: &http,
            store: &kv,
        },
    );
    assert!(matches!(later, Outcome::Allow(_)), "{later:?}");
}

#[test]
fn opaque_tokens_are_introspected() {
    let config: Config = toml::from_str(
        "audience = 'mqtt-broker'\n[introspection]\nurl = 'https://idp.example/introspect'\nclient_id = 'broker'\nclient_secret = 's'\n[acl]\npublish_claim = 'mqtt_pub'",
    )
    .unwrap();
    let mut auth = Authenticator::new(config.validate().unwrap());
    let http = Http::default();
    let kv = MemoryStore::default();
    let active = json!({"active": true, "sub": "dev1", "aud": "mqtt-broker", "exp": NOW + 60, "mqtt_pub": ["x/%c"]});
    http.introspection.borrow_mut().extend([
        Ok((200, active.to_string())),
        Ok((200, r#"{"active": false}"#.to_owned())),
        Ok((
            200,
            json!({"active": true, "aud": "other", "exp": NOW + 60}).to_string(),
        )),
        Err("timeout".to_owned()),
    ]);
    let outcome = run_with(&mut auth, &password("dev1", None, "opaque-1"), &http, &kv);
    assert_eq!(attr(&outcome, ATTR_PUBLISH), Some(r#"["x/dev1"]"#));
    assert_eq!(
        attr(&outcome, ATTR_EXPIRES_AT),
        Some(((NOW + 90) * 1000).to_string().as_str())
    );
    // Cached: no second request for the same token.
    assert!(matches!(
        run_with(&mut auth, &password("dev1", None, "opaque-1"), &http, &kv),
        Outcome::Allow(_)
    ));
    assert_eq!(http.posts.borrow().len(), 1);
    assert_eq!(
        http.posts.borrow()[0],
        "token=opaque-1&token_type_hint=access_token"
    );
    assert_eq!(
        code(&run_with(
            &mut auth,
            &password("dev1", None, "revoked"),
            &http,
            &kv
        )),
        Some(0x86)
    );
    assert_eq!(
        code(&run_with(
            &mut auth,
            &password("dev1", None, "wrong-aud"),
            &http,
            &kv
        )),
        Some(0x86)
    );
    assert_eq!(
        code(&run_with(
            &mut auth,
            &password("dev1", None, "down"),
            &http,
            &kv
        )),
        Some(0x88)
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let err = |extra: &str| config(extra).unwrap_err();
    assert!(err("leeway = 5").contains("unknown field `leeway`"));
    assert!(err("algorithms = ['HS512']").contains("algorithms: unsupported \"HS512\""));
    assert!(err("algorithms = []").contains("algorithms: empty list"));
    assert!(err("hs256_secret = 'short'").contains("hs256_secret: at least 32 bytes"));
    assert!(
        err("jwks_url = 'https://x/jwks'").contains("jwks, jwks_file, jwks_url: give at most one")
    );
    assert!(err("min_refetch_interval_secs = 0").contains("min_refetch_interval_secs"));
    assert!(err("[acl]\ncache_secs = 1").contains("acl: give publish_claim"));
    assert!(err("[binding]\nclient_id = 'sub'").contains("unknown field `client_id`"));
    let none: Config = toml::from_str("issuer = 'x'").unwrap();
    assert!(
        none.validate()
            .unwrap_err()
            .contains("no way to check tokens")
    );
    let bad_url: Config = toml::from_str("jwks_url = 'ftp://idp/jwks'").unwrap();
    assert!(
        bad_url
            .validate()
            .unwrap_err()
            .contains("jwks_url: \"ftp://idp/jwks\" is not an http(s) URL")
    );
    let bad_jwks: Config = toml::from_str("jwks = '{}'").unwrap();
    assert!(
        bad_jwks
            .validate()
            .unwrap_err()
            .starts_with("plugin config: jwks: not a JWKS")
    );
    // An inline JWKS may also be a table.
    let table: Config = toml::from_str(&format!(
        "[jwks]\nkeys = [{}]",
        signer().jwk(true).to_string().replace(':', " = ")
    ))
    .unwrap();
    assert_eq!(table.validate().unwrap().static_keys.len(), 1);
}
