//! The broker configurations of `examples/oauth/` against the real plugin: each file's `[[plugins]]`
//! entry (its `config` table, `http` grant and `limits.call_timeout_ms`) loads the `.wasm` in the
//! harness, the key set is served at the file's `jwks_url`, and a token shaped like the one that
//! provider issues (its issuer, audience, `azp`, and the claims the file's ACL reads) lets the client
//! in with the topics the README promises; the shapes the README warns about are refused.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use wasp_plugin_harness::{AuthVerdict, Denial, Harness, SandboxLimits, client, plugin_wasm};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/oauth")
}

/// What the example file gives the plugin.
struct Example {
    config: serde_json::Map<String, Value>,
    hosts: Vec<String>,
    call_timeout: Duration,
}

fn example(file: &str) -> Example {
    let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let plugins = table["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{file}");
    let plugin = plugins[0].as_table().unwrap();
    assert_eq!(
        plugin["path"].as_str(),
        Some("../../target/wasm32-wasip2/release/wasp_oauth_plugin.wasm")
    );
    let config = serde_json::to_value(plugin["config"].as_table().unwrap()).unwrap();
    let hosts = plugin["http"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    let ms = plugin["limits"]["call_timeout_ms"].as_integer().unwrap();
    Example {
        config: config.as_object().unwrap().clone(),
        hosts,
        call_timeout: Duration::from_millis(u64::try_from(ms).unwrap()),
    }
}

impl Example {
    fn str(&self, key: &str) -> &str {
        self.config[key].as_str().unwrap()
    }

    /// The plugin loaded as the broker would load this file's entry, with `keys` served at its
    /// `jwks_url` and fetched by a first tick.
    fn load(&self, keys: &[Value]) -> Harness {
        let jwks_url = self.str("jwks_url");
        // The grant covers the key set's host, and nothing else.
        let host = jwks_url
            .strip_prefix("https://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        assert_eq!(self.hosts, [host]);
        let plugin = Harness::load(plugin_wasm!())
            .http_grant(self.hosts.clone())
            .limits(SandboxLimits {
                call_timeout: self.call_timeout,
                ..SandboxLimits::default()
            })
            .config_json(&Value::Object(self.config.clone()).to_string())
            .build()
            .unwrap();
        plugin.http().respond("GET", jwks_url, 200, jwks(keys));
        assert_eq!(plugin.tick().unwrap(), 60);
        let requests = plugin.http().requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].url, jwks_url);
        // The larger call deadline leaves the plugin's own request timeout whole.
        assert_eq!(requests[0].timeout, Duration::from_millis(2000));
        plugin
    }
}

fn allowed(verdict: AuthVerdict) -> Vec<(String, String)> {
    match verdict {
        AuthVerdict::Allow(attributes) => attributes,
        other => panic!("{other:?}"),
    }
}

fn attribute<'a>(attributes: &'a [(String, String)], key: &str) -> &'a str {
    &attributes
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {attributes:?}"))
        .1
}

fn invalid() -> AuthVerdict {
    AuthVerdict::Deny(Denial {
        reason_code: 0x86,
        reason: Some("invalid token".to_owned()),
    })
}

fn login(plugin: &Harness, client_id: &str, token: &str) -> AuthVerdict {
    plugin
        .authenticate(
            client(client_id)
                .username("ignored")
                .password(token)
                .auth_request(),
        )
        .unwrap()
}

#[test]
fn every_example_is_a_broker_config_for_the_oauth_plugin() {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    files.sort();
    assert_eq!(files, ["auth0.toml", "entra.toml", "keycloak.toml"]);
    for file in &files {
        let example = example(file);
        // Longer than the default 100 ms: see the comment in each file.
        assert!(example.call_timeout >= Duration::from_secs(3), "{file}");
        // The broker's configuration itself is checked by broker/tests/oauth_examples.rs.
        example.load(&[Signer::new("rsa-a.pem", Algorithm::RS256, "k1").jwk(true)]);
    }
}

#[test]
fn keycloak_client_credentials_token() {
    let example = example("keycloak.toml");
    let signer = Signer::new("rsa-a.pem", Algorithm::RS256, "kc-sig");
    // A realm's key set also has an encryption key (use enc, RSA-OAEP): skipped.
    let mut encryption = Signer::new("rsa-b.pem", Algorithm::RS256, "kc-enc").jwk(false);
    encryption["use"] = json!("enc");
    encryption["alg"] = json!("RSA-OAEP");
    let plugin = example.load(&[signer.jwk(true), encryption]);
    let issuer = "https://keycloak.example.com/realms/mqtt";
    assert_eq!(example.str("issuer"), issuer);
    // A client credentials token of client `dev1`, with the Audience and Hardcoded claim mappers.
    let token = json!({
        "exp": NOW + 300, "iat": NOW, "jti": "8c5e2e0a", "iss": issuer,
        "aud": ["wasp-broker", "account"], "sub": "5f0d8a56-2b4e-4c6a-9d7e-0c1b2a3d4e5f",
        "typ": "Bearer", "azp": "dev1", "scope": "profile email", "client_id": "dev1",
        "preferred_username": "service-account-dev1",
        "mqtt_publish": "devices/%c/up devices/%c/status",
        "mqtt_subscribe": "devices/%c/down/# broadcast/#",
    });
    let attributes = allowed(login(&plugin, "dev1", &signer.sign(&token)));
    assert_eq!(
        attribute(&attributes, "oauth:publish"),
        r#"["devices/dev1/up","devices/dev1/status"]"#
    );
    assert_eq!(
        attribute(&attributes, "oauth:subscribe"),
        r#"["devices/dev1/down/#","broadcast/#"]"#
    );
    assert_eq!(
        attribute(&attributes, "wasp:expires-at"),
        ((NOW + 300 + 30) * 1000).to_string()
    );
    // The MQTT client id must be the Keycloak client.
    assert!(matches!(
        login(&plugin, "dev2", &signer.sign(&token)),
        AuthVerdict::Deny(Denial {
            reason_code: 0x87,
            ..
        })
    ));
    // Without the Audience mapper, the token's `aud` is only `account`: refused.
    let no_audience = with(token.clone(), json!({"aud": "account"}));
    assert_eq!(
        login(&plugin, "dev1", &signer.sign(&no_audience)),
        invalid()
    );
    // The pre-17 issuer (with /auth) is another issuer.
    let old_issuer = with(
        token,
        json!({"iss": "https://keycloak.example.com/auth/realms/mqtt"}),
    );
    assert_eq!(login(&plugin, "dev1", &signer.sign(&old_issuer)), invalid());
}

#[test]
fn auth0_machine_to_machine_token() {
    let example = example("auth0.toml");
    let signer = Signer::new("rsa-a.pem", Algorithm::RS256, "auth0-kid");
    let plugin = example.load(&[signer.jwk(true)]);
    let client_id = "Xg4Lq0fOq9kZ7nRbH1T2aV3cW5dE6fGh";
    // A client credentials token, with the claims the credentials-exchange Action of README.md sets.
    let token = json!({
        "iss": "https://my-tenant.auth0.com/", "sub": format!("{client_id}@clients"),
        "aud": "https://mqtt.example.com", "iat": NOW, "exp": NOW + 86400,
        "scope": "telemetry:write", "gty": "client-credentials", "azp": client_id,
        "https://mqtt.example.com/publish": ["devices/%c/up"],
        "https://mqtt.example.com/subscribe": ["devices/%c/down/#"],
    });
    let attributes = allowed(login(&plugin, client_id, &signer.sign(&token)));
    assert_eq!(
        attribute(&attributes, "oauth:publish"),
        format!(r#"["devices/{client_id}/up"]"#)
    );
    assert_eq!(
        attribute(&attributes, "oauth:subscribe"),
        format!(r#"["devices/{client_id}/down/#"]"#)
    );
    assert_eq!(
        attribute(&attributes, "oauth:claim:scope"),
        "telemetry:write"
    );
    assert_eq!(
        attribute(&attributes, "oauth:subject"),
        format!("{client_id}@clients")
    );
    // Auth0's issuer has a trailing slash, and `iss` is compared exactly.
    let no_slash = with(token.clone(), json!({"iss": "https://my-tenant.auth0.com"}));
    assert_eq!(
        login(&plugin, client_id, &signer.sign(&no_slash)),
        invalid()
    );
    // A token for the Management API, not ours.
    let management = with(token, json!({"aud": "https://my-tenant.auth0.com/api/v2/"}));
    assert_eq!(
        login(&plugin, client_id, &signer.sign(&management)),
        invalid()
    );
}

#[test]
fn entra_v2_app_only_token() {
    let example = example("entra.toml");
    let signer = Signer::new("rsa-a.pem", Algorithm::RS256, "nOo3ZDrODXEK1jKWhXslHR_KXEg");
    // Entra's JWKs name no `alg`.
    let plugin = example.load(&[signer.jwk(false)]);
    let tenant = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
    let api = "00001111-aaaa-2222-bbbb-3333cccc4444";
    let client_id = "44445555-eeee-6666-ffff-7777aaaa8888";
    let object_id = "bbbbcccc-1111-dddd-2222-eeee3333ffff";
    let token = json!({
        "aud": api, "iss": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        "iat": NOW, "nbf": NOW, "exp": NOW + 3599, "azp": client_id, "azpacr": "1",
        "oid": object_id, "sub": object_id, "tid": tenant, "ver": "2.0",
        "roles": ["devices/%c/#", "telemetry/#"],
    });
    let attributes = allowed(login(&plugin, client_id, &signer.sign(&token)));
    let filters = format!(r#"["devices/{client_id}/#","telemetry/#"]"#);
    assert_eq!(attribute(&attributes, "oauth:publish"), filters);
    assert_eq!(attribute(&attributes, "oauth:subscribe"), filters);
    assert_eq!(attribute(&attributes, "oauth:claim:tid"), tenant);
    assert_eq!(attribute(&attributes, "oauth:claim:oid"), object_id);
    // A v1.0 token (requestedAccessTokenVersion not 2): another issuer, `appid` instead of `azp`.
    let v1 = with(
        token,
        json!({
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "aud": format!("api://{api}"), "ver": "1.0", "azp": null, "appid": client_id,
        }),
    );
    assert_eq!(login(&plugin, client_id, &signer.sign(&v1)), invalid());
}
