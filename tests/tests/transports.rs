//! Listeners other than plain TCP, with real clients: MQTT over TLS (mosquitto_pub/sub with `--cafile`,
//! rumqttc), mutual TLS, certificate reload, WebSocket and WebSocket over TLS (rumqttc, a raw WebSocket
//! client for what rumqttc would not send), and several listeners side by side.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use futures_util::StreamExt;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use wasp::config::{CertField, Config, Listener, ListenerKind, TlsSettings, TlsVersion};
use wasp_tests::pki::{Ca, Issued, Leaf, Pki, client_config};
use wasp_tests::raw::Conn;
use wasp_tests::{Broker, TIMEOUT, cli, v4, v5};

const TLS12_AND_13: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn listener(name: &str, kind: ListenerKind, tls: Option<TlsSettings>) -> Listener {
    Listener {
        name: name.to_owned(),
        bind: "127.0.0.1:0".parse().expect("loopback"),
        kind,
        tls,
        ..Listener::default()
    }
}

fn ws() -> ListenerKind {
    ListenerKind::WebSocket {
        path: "/mqtt".to_owned(),
    }
}

/// A broker whose only listeners are `listeners` (the plain default one is turned off).
async fn start(
    listeners: Vec<Listener>,
    configure: impl FnOnce(&mut Config),
) -> (Broker, Vec<SocketAddr>) {
    let (broker, addrs) = Broker::start_listeners(|c| {
        c.listeners = listeners;
        configure(c);
    })
    .await;
    (broker, addrs.into_iter().map(|(_, addr)| addr).collect())
}

fn tls_transport(config: rustls::ClientConfig) -> Transport {
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
}

/// Options for a 5.0 client over TLS (1.2 or 1.3) trusting `roots`, presenting `identity` if given.
fn v5_over_tls(
    id: &str,
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    identity: Option<&Issued>,
) -> rumqttc::v5::MqttOptions {
    let mut options = v5::options(id, addr);
    options.set_transport(tls_transport(client_config(
        roots,
        identity,
        TLS12_AND_13,
        &[],
    )));
    options
}

/// A raw TLS handshake to `addr`: the connection, or rustls's or the socket's error.
async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server = ServerName::try_from("127.0.0.1").expect("server name");
    tokio::time::timeout(TIMEOUT, connector.connect(server, tcp))
        .await
        .expect("TLS handshake within the timeout")
}

/// `mosquitto_pub`/`mosquitto_sub` with `args` plus the TLS options; whether it exited with success.
async fn mosquitto(program: &str, addr: SocketAddr, tls: &[&Path], args: &[&str]) -> cli::Output {
    let mut all: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        addr.port().to_string(),
    ];
    for (flag, path) in ["--cafile", "--cert", "--key"].iter().zip(tls) {
        all.push((*flag).to_owned());
        all.push(path.display().to_string());
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    cli::run(program, all, Duration::from_secs(20)).await
}

// ---------------------------------------------------------------------------------------------------------
// MQTT over TLS
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_mosquitto_clients_beside_a_plain_one() {
    let pki = Pki::new();
    let (_broker, addrs) = start(
        vec![
            listener("tls", ListenerKind::Tcp, Some(pki.settings())),
            listener("plain", ListenerKind::Tcp, None),
        ],
        |_| {},
    )
    .await;
    let (tls, plain) = (addrs[0], addrs[1]);
    let ca = pki.path("ca.pem");
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/{version}");
        let published = mosquitto(
            "mosquitto_pub",
            tls,
            &[&ca],
            &[
                "-V", version, "-t", &topic, "-r", "-q", "1", "-m", "over TLS",
            ],
        )
        .await;
        assert!(published.success, "mosquitto_pub over TLS: {published:?}");
        // The plain listener shares the broker: its subscriber sees the retained message.
        let plain_sub = cli::run(
            "mosquitto_sub",
            [
                "-h",
                "127.0.0.1",
                "-p",
                &plain.port().to_string(),
                "-V",
                version,
                "-t",
                &topic,
            ]
            .into_iter()
            .chain(["-C", "1", "-W", "10"])
            .map(str::to_owned)
            .collect(),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(plain_sub.stdout.trim(), "over TLS", "{plain_sub:?}");
        let tls_sub = mosquitto(
            "mosquitto_sub",
            tls,
            &[&ca],
            &["-V", version, "-t", &topic, "-C", "1", "-W", "10"],
        )
        .await;
        assert_eq!(tls_sub.stdout.trim(), "over TLS", "{tls_sub:?}");
    }
    // A plain MQTT client cannot talk to the TLS listener: its CONNECT is not a TLS ClientHello.
    plain_connect_gets_no_connack(tls, "TLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rumqttc_v311_and_v5_round_trip_and_alpn_mqtt() {
    let pki = Pki::new();
    let (_broker, addrs) = start(
        vec![listener("tls", ListenerKind::Tcp, Some(pki.settings()))],
        |_| {},
    )
    .await;
    let addr = addrs[0];

    let mut sub = v5::connect(v5_over_tls("tls-v5", addr, &pki.roots(), None)).await;
    sub.subscribe("t/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;

    let mut options = v4::options("tls-v4", addr);
    options.set_transport(tls_transport(client_config(
        &pki.roots(),
        None,
        &[&rustls::version::TLS12],
        &[],
    )));
    let mut publisher = v4::connect(options).await;
    publisher
        .publish("t/x", rumqttc::QoS::AtLeastOnce, false, b"hello")
        .await;
    let got = sub.next_publish().await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&b"t/x"[..], &b"hello"[..])
    );

    // ALPN: a client offering "mqtt" gets it.
    let tls = tls_connect(
        addr,
        client_config(&pki.roots(), None, TLS12_AND_13, &[b"mqtt"]),
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_min_version_1_3_refuses_a_tls_1_2_client() {
    let pki = Pki::new();
    let settings = TlsSettings {
        min_version: TlsVersion::V1_3,
        ..pki.settings()
    };
    let (_broker, addrs) = start(
        vec![listener("tls13", ListenerKind::Tcp, Some(settings))],
        |_| {},
    )
    .await;
    let refused = tls_connect(
        addrs[0],
        client_config(&pki.roots(), None, &[&rustls::version::TLS12], &[]),
    )
    .await;
    assert!(refused.is_err(), "a TLS 1.2 client got through");
    let accepted = tls_connect(
        addrs[0],
        client_config(&pki.roots(), None, &[&rustls::version::TLS13], &[]),
    )
    .await
    .expect("TLS 1.3 handshake");
    assert_eq!(
        accepted.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_refuse_a_server_they_do_not_trust() {
    let pki = Pki::new();
    // A second broker whose certificate expired.
    let expired = pki.ca.issue(Leaf::Server(&["127.0.0.1"]), true);
    let (expired_cert, expired_key) = expired.write(pki.dir.path(), "expired-server");
    let expired_settings = TlsSettings {
        cert_file: expired_cert,
        key_file: expired_key,
        ..pki.settings()
    };
    let (_broker, addrs) = start(
        vec![
            listener("tls", ListenerKind::Tcp, Some(pki.settings())),
            listener("expired", ListenerKind::Tcp, Some(expired_settings)),
        ],
        |_| {},
    )
    .await;
    let other_ca = pki.path("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("another CA").pem()).expect("write CA");
    let args = ["-t", "t", "-m", "x"];
    let wrong_ca = mosquitto("mosquitto_pub", addrs[0], &[&other_ca], &args).await;
    assert!(
        !wrong_ca.success,
        "trusted a server signed by another CA: {wrong_ca:?}"
    );
    let expired = mosquitto("mosquitto_pub", addrs[1], &[&pki.path("ca.pem")], &args).await;
    assert!(
        !expired.success,
        "trusted an expired server certificate: {expired:?}"
    );
    let good = mosquitto("mosquitto_pub", addrs[0], &[&pki.path("ca.pem")], &args).await;
    assert!(good.success, "the right CA: {good:?}");
}

// ---------------------------------------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_missing_foreign_and_expired_client_certificates() {
    let pki = Pki::new();
    let (_broker, addrs) = start(
        vec![listener(
            "mtls",
            ListenerKind::Tcp,
            Some(pki.mtls_settings(None)),
        )],
        |_| {},
    )
    .await;
    let addr = addrs[0];
    let ca = pki.path("ca.pem");
    pki.client("good", "device-1", false);
    pki.client("expired", "device-2", true);
    let foreign = Ca::new("a CA the broker does not know").issue(
        Leaf::Client {
            common_name: "device-3",
            alt_name: None,
        },
        false,
    );
    foreign.write(pki.dir.path(), "foreign");
    let args = ["-V", "mqttv5", "-t", "mtls/t", "-q", "1", "-m", "x"];
    let none = mosquitto("mosquitto_pub", addr, &[&ca], &args).await;
    assert!(!none.success, "no client certificate got in: {none:?}");
    for name in ["foreign", "expired"] {
        let (cert, key) = (
            pki.path(&format!("{name}.pem")),
            pki.path(&format!("{name}.key")),
        );
        let refused = mosquitto("mosquitto_pub", addr, &[&ca, &cert, &key], &args).await;
        assert!(
            !refused.success,
            "{name} client certificate got in: {refused:?}"
        );
    }
    let (cert, key) = (pki.path("good.pem"), pki.path("good.key"));
    let good = mosquitto("mosquitto_pub", addr, &[&ca, &cert, &key], &args).await;
    assert!(good.success, "a valid client certificate: {good:?}");

    // The same with rustls: the handshake fails, or (TLS 1.3, where the client finishes first) the
    // first read after it; no CONNACK either way.
    for identity in [None, Some(&foreign)] {
        let config = client_config(&pki.roots(), identity, TLS12_AND_13, &[]);
        if let Ok(mut tls) = tls_connect(addr, config).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(&CONNECT_V311).await;
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(TIMEOUT, tls.read(&mut buf))
                .await
                .expect("an answer within the timeout");
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "refused certificate {:?} got {read:?} {buf:02x?}",
                identity.is_some()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_certificate_authenticates_when_anonymous_access_is_off() {
    let pki = Pki::new();
    let mut mtls = listener(
        "mtls",
        ListenerKind::Tcp,
        Some(pki.mtls_settings(Some(CertField::CommonName))),
    );
    // Certificates are required, so nobody on this listener is anonymous.
    mtls.allow_anonymous = Some(true);
    let mut plain = listener("plain", ListenerKind::Tcp, None);
    plain.allow_anonymous = Some(false);
    let (_broker, addrs) = start(vec![mtls, plain], |c| c.allow_anonymous = false).await;
    let device = pki.client("device", "device-1", false);

    let mut options = v5_over_tls("cert-client", addrs[0], &pki.roots(), Some(&device));
    // A user name in CONNECT is replaced by the certificate's.
    options.set_credentials("someone-else", "ignored");
    let mut client = v5::connect(options).await;
    client
        .subscribe("d/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;
    client
        .publish("d/1", rumqttc::v5::mqttbytes::QoS::AtMostOnce, false, b"m")
        .await;
    assert_eq!(&client.next_publish().await.payload[..], b"m");

    // The plain listener keeps its own default: anonymous clients are refused there.
    let code = v5::connect_refused(v5::options("anon", addrs[1])).await;
    assert_eq!(
        code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized
    );
}

// ---------------------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_reload_on_change_without_dropping_clients() {
    let pki = Pki::new();
    let settings = TlsSettings {
        reload_check: Some(Duration::from_millis(200)),
        ..pki.settings()
    };
    let (_broker, addrs) = start(
        vec![listener("tls", ListenerKind::Tcp, Some(settings))],
        |_| {},
    )
    .await;
    let addr = addrs[0];
    let mut before = v5::connect(v5_over_tls("before", addr, &pki.roots(), None)).await;
    before
        .subscribe("r/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;

    // A broken key file is refused by the reload: the old certificate stays in use.
    std::fs::write(pki.path("server.key"), "not a key").expect("break key");
    tokio::time::sleep(Duration::from_millis(600)).await;
    tls_connect(addr, client_config(&pki.roots(), None, TLS12_AND_13, &[]))
        .await
        .expect("old certificate still served after a failed reload");

    // New certificate from a new CA.
    let new_ca = Ca::new("the new CA");
    new_ca
        .issue(Leaf::Server(&["127.0.0.1"]), false)
        .write(pki.dir.path(), "server");
    let new_roots = vec![new_ca.der()];
    wait_until_served(addr, &new_roots).await;
    assert!(
        tls_connect(addr, client_config(&pki.roots(), None, TLS12_AND_13, &[]))
            .await
            .is_err(),
        "the old certificate is still served"
    );
    let mut after = v5::connect(v5_over_tls("after", addr, &new_roots, None)).await;
    after
        .publish(
            "r/1",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            b"after reload",
        )
        .await;
    // The connection made with the old certificate is still up and receives it.
    assert_eq!(&before.next_publish().await.payload[..], b"after reload");
}

/// Polls until a client trusting only `roots` completes a handshake with `addr`.
async fn wait_until_served(addr: SocketAddr, roots: &[CertificateDer<'static>]) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tls_connect(addr, client_config(roots, None, TLS12_AND_13, &[]))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_reload_on_sighup() {
    let pki = Pki::new();
    // reload_check_secs = 0: only SIGHUP reloads.
    let (_broker, addrs) = start(
        vec![listener("tls", ListenerKind::Tcp, Some(pki.settings()))],
        |_| {},
    )
    .await;
    let addr = addrs[0];
    let new_ca = Ca::new("the new CA");
    new_ca
        .issue(Leaf::Server(&["127.0.0.1"]), false)
        .write(pki.dir.path(), "server");
    tls_connect(addr, client_config(&pki.roots(), None, TLS12_AND_13, &[]))
        .await
        .expect("without SIGHUP the old certificate stays");
    // The broker runs in this process: signal it.
    let kill = cli::run(
        "kill",
        vec!["-HUP".into(), std::process::id().to_string()],
        Duration::from_secs(5),
    )
    .await;
    assert!(kill.success, "{kill:?}");
    wait_until_served(addr, &[new_ca.der()]).await;
}

// ---------------------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------------------

/// Room for the 100 kB payloads below (rumqttc's own limit is 10 KiB by default).
const BIG: usize = 200_000;

fn ws_options_v4(id: &str, url: String) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(id, url, 0);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(BIG, BIG);
    options
}

fn ws_options_v5(id: &str, url: String) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(id, url, 0);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(BIG as u32));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_secure_websocket_with_rumqttc() {
    let pki = Pki::new();
    let (_broker, addrs) = start(
        vec![
            listener("ws", ws(), None),
            listener("wss", ws(), Some(pki.settings())),
        ],
        |_| {},
    )
    .await;
    let mut options = ws_options_v5("ws-sub", format!("ws://127.0.0.1:{}/mqtt", addrs[0].port()));
    options.set_transport(Transport::Ws);
    let mut sub = v5::connect(options).await;
    sub.subscribe("w/#", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await;

    let mut options = ws_options_v4(
        "wss-pub",
        format!("wss://127.0.0.1:{}/mqtt", addrs[1].port()),
    );
    options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        Arc::new(client_config(
            &pki.roots(),
            None,
            TLS12_AND_13,
            &[b"http/1.1"],
        )),
    )));
    let mut publisher = v4::connect(options).await;
    for qos in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ] {
        let payload = vec![qos as u8; 100_000];
        publisher.publish("w/big", qos, false, &payload).await;
        let got = sub.next_publish().await;
        assert_eq!(got.payload.len(), payload.len());
        assert!(got.payload.iter().all(|b| *b == qos as u8));
    }
}

/// A raw WebSocket client to `addr` asking for `path` with these subprotocols.
async fn ws_client(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<
    async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>,
    async_tungstenite::tungstenite::Error,
> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().expect("header"));
    }
    tokio::time::timeout(TIMEOUT, async_tungstenite::tokio::connect_async(request))
        .await
        .expect("WebSocket handshake within the timeout")
        .map(|(socket, response)| {
            if protocols.is_some() {
                assert_eq!(
                    response
                        .headers()
                        .get("Sec-WebSocket-Protocol")
                        .map(|v| v.as_bytes()),
                    Some(&b"mqtt"[..]),
                    "MQTT-6.0.0-3: the server selects the mqtt subprotocol"
                );
            }
            socket
        })
}

/// The next binary message's bytes, or `None` when the connection closes.
async fn ws_next<S>(socket: &mut async_tungstenite::WebSocketStream<S>) -> Option<Vec<u8>>
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .expect("a message or the end within the timeout")
        {
            Some(Ok(Message::Binary(bytes))) => return Some(bytes.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

const CONNECT_V311: [u8; 15] = [
    0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'w',
];
const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// Sends a plain-TCP MQTT CONNECT to the `kind` listener at `addr` and checks that no CONNACK comes
/// back (the socket closes, or what comes is not a CONNACK).
async fn plain_connect_gets_no_connack(addr: SocketAddr, kind: &str) {
    let mut conn = Conn::open(addr).await;
    conn.send(&CONNECT_V311).await;
    assert!(
        conn.recv_packet_or_closed()
            .await
            .is_none_or(|bytes| bytes.first() != Some(&0x20)),
        "a plain CONNECT on the {kind} listener got a CONNACK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_packets_need_not_align_with_frames() {
    let (_broker, addrs) = start(vec![listener("ws", ws(), None)], |_| {}).await;
    let mut socket = ws_client(addrs[0], "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    // MQTT-6.0.0-2: a packet split over two messages, then two packets in one message.
    socket
        .send(Message::binary(CONNECT_V311[..5].to_vec()))
        .await
        .expect("send");
    socket
        .send(Message::binary(CONNECT_V311[5..].to_vec()))
        .await
        .expect("send");
    let mut received = Vec::new();
    while received.len() < CONNACK_OK.len() {
        received.extend(ws_next(&mut socket).await.expect("CONNACK"));
    }
    assert_eq!(received, CONNACK_OK);
    // PINGREQ twice in one message: two PINGRESPs come back.
    socket
        .send(Message::binary(vec![0xc0, 0, 0xc0, 0]))
        .await
        .expect("send");
    let mut received = Vec::new();
    while received.len() < 4 {
        received.extend(ws_next(&mut socket).await.expect("PINGRESP"));
    }
    assert_eq!(received, [0xd0, 0, 0xd0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_frame_closes_the_connection() {
    let (_broker, addrs) = start(vec![listener("ws", ws(), None)], |_| {}).await;
    let mut socket = ws_client(addrs[0], "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    socket
        .send(Message::binary(CONNECT_V311.to_vec()))
        .await
        .expect("send");
    assert_eq!(ws_next(&mut socket).await.expect("CONNACK"), CONNACK_OK);
    // MQTT-6.0.0-1: a data frame that is not binary closes the connection.
    socket.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws_next(&mut socket).await,
        None,
        "still open after a text frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_checks_path_and_subprotocol() {
    let (_broker, addrs) = start(vec![listener("ws", ws(), None)], |_| {}).await;
    let addr = addrs[0];
    let wrong_path = ws_client(addr, "/other", Some("mqtt")).await;
    assert!(
        matches!(&wrong_path, Err(async_tungstenite::tungstenite::Error::Http(r)) if r.status() == 404),
        "{wrong_path:?}"
    );
    let wrong_protocol = ws_client(addr, "/mqtt", Some("chat, superchat")).await;
    assert!(
        matches!(&wrong_protocol, Err(async_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "{wrong_protocol:?}"
    );
    ws_client(addr, "/mqtt", Some("mqttv3.1, mqtt"))
        .await
        .expect("mqtt among other offers");
    // A plain MQTT client on a WebSocket listener gets no CONNACK.
    plain_connect_gets_no_connack(addr, "WebSocket").await;
}

// ---------------------------------------------------------------------------------------------------------
// Slow handshakes
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_and_websocket_handshakes_are_closed_at_the_connect_timeout() {
    let pki = Pki::new();
    let (_broker, addrs) = start(
        vec![
            listener("tls", ListenerKind::Tcp, Some(pki.settings())),
            listener("ws", ws(), None),
        ],
        |c| c.limits.connect_timeout = Duration::from_secs(1),
    )
    .await;
    // Silent sockets, a TLS ClientHello cut short, an HTTP upgrade request never finished.
    let mut conns = Vec::new();
    for addr in &addrs {
        conns.push(Conn::open(*addr).await);
    }
    let mut partial_hello = Conn::open(addrs[0]).await;
    partial_hello
        .send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await;
    conns.push(partial_hello);
    let mut partial_upgrade = Conn::open(addrs[1]).await;
    partial_upgrade
        .send(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await;
    conns.push(partial_upgrade);
    for conn in &mut conns {
        conn.expect_closed_within(Duration::from_secs(3)).await;
    }
}
