//! The oauth plugin (`plugins/oauth`) loaded by a real broker, against a mock identity provider served
//! over real HTTPS on 127.0.0.1 ([`wasp_tests::idp`]): JWTs as the password with `mosquitto_pub` /
//! `mosquitto_sub`, paho and rumqttc; the ACL taken from the token's claims; MQTT 5 enhanced
//! authentication and re-authentication in raw packets; the cut-off at token expiry (DISCONNECT 0xA0);
//! opaque tokens through RFC 7662 introspection; key rotation, and a provider that fails or hangs.
//!
//! Tokens are signed by `jsonwebtoken` (an independent implementation) with the plugin's fixture keys.
//! Every broker runs in-process on `127.0.0.1:0`; every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, PubAckReason, PublishProperties, SubscribeReasonCode,
};
use serde_json::{Value, json};
use wasp::config::{Config, PluginConfig};
use wasp_mqtt::{Auth, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use wasp_plugin_host::{HttpGrant, PluginSpec};
use wasp_tests::idp::{Idp, Mode};
use wasp_tests::raw::Conn;
use wasp_tests::{Broker, QUIET, TIMEOUT, cli, v4, v5};

const ISS: &str = "https://idp.test/realms/mqtt";
const AUD: &str = "mqtt-broker";
const METHOD: &str = "OAUTH2-JWT";
const INTROSPECTION_CLIENT: &str = "wasp-broker";
const INTROSPECTION_SECRET: &str = "introspection-secret";

/// A signing key of the plugin's fixtures (`plugins/oauth/tests/fixtures`) with its `kid`.
struct Signer {
    key: EncodingKey,
    kid: &'static str,
}

impl Signer {
    fn rsa(file: &str, kid: &'static str) -> Signer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/oauth/tests/fixtures")
            .join(file);
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Signer {
            key: EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::RS256).expect("JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        serde_json::to_value(jwk).expect("JWK JSON")
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn key_a() -> Signer {
    Signer::rsa("rsa-a.pem", "key-a")
}

fn key_b() -> Signer {
    Signer::rsa("rsa-b.pem", "key-b")
}

fn jwks(signers: &[&Signer]) -> String {
    json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }).to_string()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for client id `sub`, valid for `ttl_secs`, allowed to publish and subscribe under
/// `devices/<client id>/` and to subscribe to `alerts/#`.
fn claims(sub: &str, ttl_secs: u64) -> Value {
    let now = now_secs();
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": sub,
        "iat": now,
        "exp": now + ttl_secs,
        "mqtt_publish": ["devices/%c/#"],
        "mqtt_subscribe": ["devices/%c/#", "alerts/#"],
    })
}

/// The oauth plugin, built once per test binary.
async fn oauth_wasm() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/oauth");
    tokio::task::spawn_blocking(move || wasp_plugin_harness::build_wasm(&dir))
        .await
        .expect("build_wasm task")
}

/// A broker whose one listener authenticates with the oauth plugin only (no anonymous access), which
/// fetches its keys from `idp` and introspects opaque tokens there. Keys are refetched for an unknown
/// `kid` at most every `min_refetch_secs`.
async fn oauth_broker(idp: &Idp, ca_dir: &Path, min_refetch_secs: u32) -> Broker {
    let ca_file = ca_dir.join("idp-ca.pem");
    std::fs::write(&ca_file, &idp.ca_pem).expect("write CA");
    let config = json!({
        "issuer": ISS,
        "audience": AUD,
        "leeway_secs": 0,
        "jwks_url": idp.url("/jwks"),
        "min_refetch_interval_secs": min_refetch_secs,
        "http_timeout_ms": 1000,
        "binding": { "client_id_claim": "sub" },
        "acl": { "publish_claim": "mqtt_publish", "subscribe_claim": "mqtt_subscribe" },
        "introspection": {
            "url": idp.url("/introspect"),
            "client_id": INTROSPECTION_CLIENT,
            "client_secret": INTROSPECTION_SECRET,
        },
    });
    let mut spec = PluginSpec::new("oauth", oauth_wasm().await);
    spec.config_json = config.to_string();
    spec.http = Some(HttpGrant {
        hosts: vec![idp.host()],
        ca_file: Some(ca_file),
        allow_plain_http: false,
    });
    // HTTP waits count against the call deadline: give the provider time, as examples/oauth does.
    spec.limits.call_timeout = Duration::from_secs(3);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasp-plugin-cache");
    Broker::start_with(|c: &mut Config| {
        c.allow_anonymous = false;
        c.plugins = vec![PluginConfig {
            spec,
            listeners: Vec::new(),
        }];
        c.plugin_cache_dir = Some(cache);
    })
    .await
}

/// Waits until the plugin's start-up tick fetched the key set.
async fn wait_for_jwks_fetch(idp: &Idp) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while idp.hits("/jwks") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plugin did not fetch the key set within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A provider publishing `keys`, and an [`oauth_broker`] using it, once the plugin's start-up tick has
/// fetched the key set. The temporary directory holds the provider's CA file.
async fn start(keys: &[&Signer], min_refetch_secs: u32) -> (Idp, Broker, tempfile::TempDir) {
    let idp = Idp::start().await;
    idp.set_jwks(jwks(keys));
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = oauth_broker(&idp, dir.path(), min_refetch_secs).await;
    wait_for_jwks_fetch(&idp).await;
    (idp, broker, dir)
}

fn v5_with_token(id: &str, broker: &Broker, token: &str) -> rumqttc::v5::MqttOptions {
    let mut options = v5::options(id, broker.addr);
    options.set_credentials("ignored", token);
    options
}

// ---------------------------------------------------------------------------------------------------------
// JWT as the password
// ---------------------------------------------------------------------------------------------------------

/// mosquitto_sub and mosquitto_pub (3.1.1 and 5.0) log in with a JWT as the password; a token signed by
/// a key the provider does not publish, an expired token and a token for another client id are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_with_a_jwt_password() {
    let a = key_a();
    let (_idp, broker, _dir) = start(&[&a], 60).await;
    let port = broker.addr.port().to_string();
    let common = |id: &str, token: &str, version: &str| -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            id,
            "-u",
            "ignored",
            "-P",
            token,
            "-V",
            version,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };

    // An application reads every device (its token's subscribe claim is `devices/#`): one message, then
    // it exits.
    let mut app_claims = claims("app-1", 300);
    app_claims["mqtt_subscribe"] = json!(["devices/#"]);
    let mut sub_args = common("app-1", &a.sign(&app_claims), "mqttv311");
    sub_args.extend(["-t", "devices/#", "-C", "1", "-W", "10", "-v"].map(String::from));
    let subscriber = tokio::spawn(cli::run("mosquitto_sub", sub_args, Duration::from_secs(15)));
    // mosquitto_sub has no "subscribed" signal: publish until a message comes through. The first one
    // it gets must be dev-1's own: the forged one is published first each time, and never routed.
    let pub_token = a.sign(&claims("dev-2", 300));
    let mut published = 0;
    while !subscriber.is_finished() && published < 40 {
        // dev-2 may only publish under devices/dev-2/: its publish as dev-1 is refused...
        let mut args = common("dev-2", &pub_token, "mqttv5");
        args.extend(["-t", "devices/dev-1/cmd", "-m", "forged", "-q", "1"].map(String::from));
        let out = cli::run("mosquitto_pub", args, Duration::from_secs(10)).await;
        assert!(out.success, "mosquitto_pub with a valid token: {out:?}");
        // ...while dev-1 itself, with its own token, may.
        let mut args = common("dev-1", &a.sign(&claims("dev-1", 300)), "mqttv311");
        args.extend(["-t", "devices/dev-1/temp", "-m", "21.5", "-q", "1"].map(String::from));
        let out = cli::run("mosquitto_pub", args, Duration::from_secs(10)).await;
        assert!(out.success, "mosquitto_pub with a valid token: {out:?}");
        published += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = subscriber.await.expect("mosquitto_sub task");
    assert!(received.success, "{received:?}");
    assert_eq!(received.stdout.trim(), "devices/dev-1/temp 21.5");

    // Refused tokens: unknown signing key, expired, issued to another client id.
    let b = key_b();
    let expired = {
        let mut c = claims("dev-1", 0);
        c["iat"] = json!(now_secs() - 120);
        c["exp"] = json!(now_secs() - 60);
        a.sign(&c)
    };
    for (what, token, version) in [
        ("unknown key", b.sign(&claims("dev-1", 300)), "mqttv311"),
        ("expired", expired.clone(), "mqttv311"),
        ("expired", expired, "mqttv5"),
        ("another client id", a.sign(&claims("dev-2", 300)), "mqttv5"),
    ] {
        let mut args = common("dev-1", &token, version);
        args.extend(["-t", "devices/dev-1/temp", "-m", "x"].map(String::from));
        let out = cli::run("mosquitto_pub", args, Duration::from_secs(10)).await;
        assert!(!out.success, "{what} token accepted ({version}): {out:?}");
        let stderr = out.stderr.to_lowercase();
        assert!(
            stderr.contains("not authori") || stderr.contains("bad user name or password"),
            "{what} ({version}): {out:?}"
        );
    }
}

/// paho-mqtt (Python, from the venv tests/run makes) logs in with a JWT password, subscribes within its
/// ACL and receives its own message; a subscription outside the ACL is refused (0x87).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_with_a_jwt_password() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let python = target.join("py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/run, which makes the venv with paho-mqtt",
        python.display()
    );
    let a = key_a();
    let (_idp, broker, _dir) = start(&[&a], 60).await;
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, token = int(sys.argv[1]), sys.argv[2]
got, subacks = threading.Event(), []
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-1", protocol=mqtt.MQTTv5)
c.username_pw_set("ignored", token)
def on_connect(c, u, flags, reason, props):
    print("connack", reason.value, flush=True)
    c.subscribe([("devices/paho-1/#", 1), ("forbidden/#", 1)])
def on_subscribe(c, u, mid, reasons, props):
    print("suback", ",".join(str(r.value) for r in reasons), flush=True)
    c.publish("devices/paho-1/hello", b"from paho", qos=1)
def on_message(c, u, m):
    print("message", m.topic, m.payload.decode(), flush=True)
    got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
ok = got.wait(10)
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
"#;
    let token = a.sign(&claims("paho-1", 300));
    let out = cli::run(
        python.to_str().expect("UTF-8 path"),
        vec![
            "-c".into(),
            script.into(),
            broker.addr.port().to_string(),
            token,
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "connack 0",
            // Granted QoS 1, then 0x87 Not authorized for the filter outside the token's ACL.
            "suback 1,135",
            "message devices/paho-1/hello from paho",
        ],
        "{out:?}"
    );
}

/// rumqttc 5.0: the ACL from the claims refuses a publish outside it with PUBACK 0x87 (not routed); a
/// 3.1.1 client logs in with the same kind of token; a 5.0 client logs in through enhanced
/// authentication (rumqttc cannot re-authenticate: that is tested in raw packets below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_from_claims_with_rumqttc() {
    let a = key_a();
    let (_idp, broker, _dir) = start(&[&a], 60).await;

    let mut watcher = v5::connect(v5_with_token(
        "watcher",
        &broker,
        &a.sign(&claims("watcher", 300)),
    ))
    .await;
    assert_eq!(
        watcher.subscribe("alerts/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        watcher.subscribe("devices/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::NotAuthorized]
    );
    let mut device = v5::connect(v5_with_token(
        "dev-7",
        &broker,
        &a.sign(&claims("dev-7", 300)),
    ))
    .await;
    let ack = device
        .publish_acked(
            "alerts/fire",
            false,
            b"forged",
            PublishProperties::default(),
        )
        .await;
    assert_eq!(ack.reason, PubAckReason::NotAuthorized, "{ack:?}");
    watcher.no_publish(QUIET).await;
    let ack = device
        .publish_acked(
            "devices/dev-7/temp",
            false,
            b"20",
            PublishProperties::default(),
        )
        .await;
    assert_eq!(ack.reason, PubAckReason::NoMatchingSubscribers, "{ack:?}");

    let mut options = v4::options("dev-8", broker.addr);
    options.set_credentials("ignored", a.sign(&claims("dev-8", 300)));
    let mut v311 = v4::connect(options).await;
    v311.publish(
        "devices/dev-8/temp",
        rumqttc::QoS::AtLeastOnce,
        false,
        b"19",
    )
    .await;
    // rumqttc's MQTT 5 enhanced authentication: the token in CONNECT's Authentication Data.
    let enhanced = |id: &str, signer: &Signer| {
        let mut options = v5::options(id, broker.addr);
        options.set_authentication_method(Some(METHOD.to_owned()));
        options.set_authentication_data(Some(signer.sign(&claims(id, 300)).into_bytes().into()));
        options
    };
    let mut dev9 = v5::connect(enhanced("dev-9", &a)).await;
    assert_eq!(
        dev9.publish_acked(
            "devices/dev-9/t",
            false,
            b"17",
            PublishProperties::default()
        )
        .await
        .reason,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        v5::connect_refused(enhanced("dev-9b", &key_b())).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        v5::connect_refused(v5_with_token(
            "dev-9",
            &broker,
            "not-a-jwt-nor-known-opaque"
        ))
        .await,
        ConnectReturnCode::BadUserNamePassword
    );
}

// ---------------------------------------------------------------------------------------------------------
// MQTT 5 enhanced authentication, re-authentication and expiry
// ---------------------------------------------------------------------------------------------------------

fn auth_properties(data: &str) -> Properties {
    Properties {
        authentication_method: Some(METHOD.to_owned()),
        authentication_data: Some(bytes::Bytes::copy_from_slice(data.as_bytes())),
        ..Properties::default()
    }
}

/// CONNECT with enhanced authentication carrying `token`; returns the CONNACK's reason code.
async fn enhanced_connect(broker: &Broker, client_id: &str, token: &str) -> (Conn, ReasonCode) {
    let mut conn = Conn::open(broker.addr).await;
    conn.send_v5(&Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: auth_properties(token),
    })))
    .await;
    match conn.recv_v5().await {
        Packet::ConnAck(ack) => {
            if ack.reason == ReasonCode::Success {
                assert_eq!(
                    ack.properties.authentication_method.as_deref(),
                    Some(METHOD),
                    "{ack:?}"
                );
            }
            (conn, ack.reason)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Enhanced authentication with a short-lived token, re-authentication with a fresh one on the live
/// connection (AUTH 0x19 answered by AUTH 0x00), which keeps the connection past the first token's
/// expiry; a connection that does not re-authenticate gets DISCONNECT 0xA0 when its token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_auth_reauthentication_and_expiry() {
    let a = key_a();
    let (_idp, broker, _dir) = start(&[&a], 60).await;

    // A bad token through enhanced authentication: CONNACK 0x87.
    let (_, reason) =
        enhanced_connect(&broker, "dev-3", &key_b().sign(&claims("dev-3", 300))).await;
    assert_eq!(reason, ReasonCode::NotAuthorized);

    // Both tokens live 3 s (leeway 0).
    let (mut renewing, reason) =
        enhanced_connect(&broker, "dev-3", &a.sign(&claims("dev-3", 3))).await;
    assert_eq!(reason, ReasonCode::Success);
    let (mut lapsing, reason) =
        enhanced_connect(&broker, "dev-4", &a.sign(&claims("dev-4", 3))).await;
    assert_eq!(reason, ReasonCode::Success);

    renewing
        .send_v5(&Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: auth_properties(&a.sign(&claims("dev-3", 300))),
        }))
        .await;
    match renewing.recv_v5().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason, ReasonCode::Success, "{auth:?}");
            assert_eq!(
                auth.properties.authentication_method.as_deref(),
                Some(METHOD)
            );
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }

    // The lapsing connection is cut at its token's expiry, with 0xA0 Maximum connect time.
    match lapsing.recv_v5().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::MaximumConnectTime, "{d:?}"),
        other => panic!("expected DISCONNECT 0xA0, got {other:?}"),
    }
    lapsing.expect_closed().await;
    // The renewed one is still served after the first token's expiry: a PINGREQ is answered.
    renewing.send_v5(&Packet::PingReq).await;
    assert_eq!(renewing.recv_v5().await, Packet::PingResp);

    // A re-authentication with a token for another client id ends the connection (0x87).
    renewing
        .send_v5(&Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: auth_properties(&a.sign(&claims("dev-other", 300))),
        }))
        .await;
    match renewing.recv_v5().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::NotAuthorized, "{d:?}"),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Opaque tokens, key rotation, provider failures
// ---------------------------------------------------------------------------------------------------------

/// An opaque token is introspected over HTTPS with the broker's client credentials (HTTP Basic); an
/// active answer lets the client in with the ACL it carries, an inactive one is refused, and the answer
/// is cached (a second login makes no second request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_through_introspection() {
    let (idp, broker, _dir) = start(&[&key_a()], 60).await;
    idp.set_introspection(
        "opaque-live",
        json!({
            "active": true,
            "sub": "dev-5",
            "iss": ISS,
            "aud": AUD,
            "exp": now_secs() + 300,
            "mqtt_publish": ["devices/%c/#"],
        })
        .to_string(),
    );

    let mut client = v5::connect(v5_with_token("dev-5", &broker, "opaque-live")).await;
    let ack = client
        .publish_acked(
            "devices/dev-5/temp",
            false,
            b"18",
            PublishProperties::default(),
        )
        .await;
    assert_eq!(ack.reason, PubAckReason::NoMatchingSubscribers, "{ack:?}");
    let ack = client
        .publish_acked(
            "devices/dev-6/temp",
            false,
            b"18",
            PublishProperties::default(),
        )
        .await;
    assert_eq!(ack.reason, PubAckReason::NotAuthorized, "{ack:?}");
    client.disconnect().await;

    let requests: Vec<_> = idp
        .received()
        .into_iter()
        .filter(|r| r.path == "/introspect")
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "POST");
    assert!(
        requests[0].body.contains("token=opaque-live"),
        "{requests:?}"
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{INTROSPECTION_CLIENT}:{INTROSPECTION_SECRET}"))
    );
    assert_eq!(requests[0].authorization.as_deref(), Some(basic.as_str()));

    // Cached: a second login with the same token does not ask again.
    let again = v5::connect(v5_with_token("dev-5", &broker, "opaque-live")).await;
    drop(again);
    assert_eq!(idp.hits("/introspect"), 1);

    // Unknown to the provider: {"active": false}.
    assert_eq!(
        v5::connect_refused(v5_with_token("dev-5", &broker, "opaque-revoked")).await,
        ConnectReturnCode::BadUserNamePassword
    );
}

/// The provider rotates to a new key: a token with the new `kid` makes the plugin refetch once and is
/// accepted. Then the provider fails (HTTP 500): the last good keys keep working. Then it hangs: a
/// token with an unknown `kid` is refused within the call deadline while other clients keep being
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_and_a_failing_or_hanging_provider() {
    let (a, b) = (key_a(), key_b());
    // Refetch for an unknown kid at most once a second, so the test can see two refetches.
    let (idp, broker, _dir) = start(&[&a], 1).await;
    let fetched_at_start = idp.hits("/jwks");

    // Rotation: the provider now publishes key B only. Every fetch attempt counts against the refetch
    // limit, the start-up one too: let a second pass first.
    idp.set_jwks(jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = v5::connect(v5_with_token(
        "dev-10",
        &broker,
        &b.sign(&claims("dev-10", 300)),
    ))
    .await;
    assert_eq!(
        idp.hits("/jwks"),
        fetched_at_start + 1,
        "one refetch for the new kid"
    );
    drop(rotated);

    // Failing provider: the last good keys (B) still verify, without a successful fetch.
    idp.set_mode(Mode::Fail);
    let still = v5::connect(v5_with_token(
        "dev-11",
        &broker,
        &b.sign(&claims("dev-11", 300)),
    ))
    .await;
    drop(still);

    // Hanging provider: a token with an unknown kid (A, rotated out) waits for the refetch, which times
    // out (http_timeout_ms 1 s) inside the call deadline (3 s); the client is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.set_mode(Mode::Hang);
    let started = tokio::time::Instant::now();
    let code = v5::connect_refused(v5_with_token(
        "dev-12",
        &broker,
        &a.sign(&claims("dev-12", 300)),
    ))
    .await;
    // With keys at hand, a kid that cannot be found is a bad credential (0x86), whether the refetch
    // answered or, as here, timed out.
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile a client with a cached key logs in at once.
    let served = v5::connect(v5_with_token(
        "dev-13",
        &broker,
        &b.sign(&claims("dev-13", 300)),
    ))
    .await;
    drop(served);
}
