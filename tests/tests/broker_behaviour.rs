//! Broker behaviour that no client library exposes well, checked with a small client built on the
//! project's codec: shutdown notice, the client's Maximum Packet Size, the bound of a session's queue.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasp_mqtt::{
    Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};
use wasp_tests::{Broker, QUIET, TIMEOUT};

/// A 5.0 client that speaks packets through `wasp_mqtt`.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(
        broker: &Broker,
        id: &str,
        clean: bool,
        properties: Properties,
    ) -> (Client, bool) {
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
        };
        client
            .send(Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: clean,
                keep_alive: 60,
                client_id: id.into(),
                will: None,
                username: None,
                password: None,
                properties,
            })))
            .await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
                (client, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        wasp_mqtt::encode(&packet, ProtocolVersion::V5, &mut out, u32::MAX).expect("encodes");
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet, or `None` when the broker closed the connection. Panics after [`TIMEOUT`].
    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(TIMEOUT)
            .await
            .expect("a packet or the close within the timeout")
    }

    /// `Err(())` when nothing arrived within `limit`.
    async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(p) = wasp_mqtt::decode(&mut self.buf, Some(ProtocolVersion::V5), u32::MAX)
                .expect("decodes")
            {
                return Ok(Some(p));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(filter.into(), options)],
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.reason_codes, vec![ReasonCode::granted(qos)])
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    async fn publish_qos1(&mut self, packet_id: u16, topic: &str, payload: Vec<u8>) {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload: Bytes::from(payload),
        }))
        .await;
        match self.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, packet_id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// The payloads of the PUBLISHes that arrive until nothing comes for [`QUIET`], acknowledging them.
    async fn drain_payloads(&mut self) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        while let Ok(Some(packet)) = self.recv_within(QUIET).await {
            let Packet::Publish(p) = packet else {
                panic!("expected PUBLISH, got {packet:?}")
            };
            if let Some(id) = p.packet_id {
                self.send(Packet::PubAck(PubResponse::success(id))).await;
            }
            payloads.push(p.payload.to_vec());
        }
        payloads
    }

    async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect {
            reason: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::default(),
        }))
        .await;
    }
}

/// 5.0 section 4.13 / 3.14: a server that shuts down tells its 5.0 clients with DISCONNECT 0x8B.
#[tokio::test]
async fn shutdown_sends_server_shutting_down() {
    let broker = Broker::start().await;
    let (mut client, _) = Client::connect(&broker, "bye", true, Properties::default()).await;
    drop(broker);
    match client.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::ServerShuttingDown, "{d:?}")
        }
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert_eq!(
        client.recv().await,
        None,
        "the connection closes after the DISCONNECT"
    );
}

/// Every connection hears of the shutdown (each is woken through its session, see
/// `Broker::shut_down_connections`), persistent sessions and clean ones, idle or not.
#[tokio::test]
async fn shutdown_reaches_every_connection() {
    let broker = Broker::start().await;
    let persistent = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let mut clients = Vec::new();
    for i in 0..20 {
        let properties = if i % 2 == 0 {
            persistent.clone()
        } else {
            Properties::default()
        };
        let (mut client, _) = Client::connect(&broker, &format!("bye-{i}"), true, properties).await;
        if i % 4 == 0 {
            client.subscribe("bye/#", QoS::AtLeastOnce).await;
        }
        clients.push(client);
    }
    drop(broker);
    for (i, client) in clients.iter_mut().enumerate() {
        match client.recv().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::ServerShuttingDown, "bye-{i}: {d:?}")
            }
            other => panic!("bye-{i}: expected DISCONNECT 0x8B, got {other:?}"),
        }
    }
}

/// A takeover reaches the connection it replaces whatever the two sessions are (each is woken through
/// its session, see `ClientSlot::kick`): a persistent session resumed, replaced by a clean one, that one
/// resumed; every replaced connection gets DISCONNECT 0x8E (MQTT-3.1.4-3) and the last one is served.
#[tokio::test]
async fn takeover_reaches_the_connection_in_every_session_state() {
    let broker = Broker::start().await;
    let persistent = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let (mut current, present) = Client::connect(&broker, "twin", true, persistent.clone()).await;
    assert!(!present);
    current.subscribe("twin/#", QoS::AtLeastOnce).await;
    // (clean start, session present expected)
    for (step, (clean_start, expect_present)) in
        [(false, true), (true, false), (false, true), (false, true)]
            .into_iter()
            .enumerate()
    {
        let (mut next, present) =
            Client::connect(&broker, "twin", clean_start, persistent.clone()).await;
        assert_eq!(present, expect_present, "step {step}: session present");
        if !present {
            next.subscribe("twin/#", QoS::AtLeastOnce).await;
        }
        match current.recv().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::SessionTakenOver, "step {step}: {d:?}")
            }
            other => panic!("step {step}: expected DISCONNECT 0x8E, got {other:?}"),
        }
        current = next;
    }
    let (mut publisher, _) =
        Client::connect(&broker, "twin-pub", true, Properties::default()).await;
    publisher.publish_qos1(1, "twin/x", b"after".to_vec()).await;
    assert_eq!(current.drain_payloads().await, vec![b"after".to_vec()]);
}

/// MQTT-3.1.2-24/25: the server does not send a packet above the client's Maximum Packet Size; it drops
/// that message for this client and goes on with the next one.
#[tokio::test]
async fn client_maximum_packet_size_is_honoured() {
    let broker = Broker::start().await;
    let small_max = Properties {
        maximum_packet_size: Some(64),
        ..Properties::default()
    };
    let (mut sub, _) = Client::connect(&broker, "small", true, small_max).await;
    sub.subscribe("size/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(&broker, "big-pub", true, Properties::default()).await;
    publisher.publish_qos1(1, "size/big", vec![b'x'; 200]).await;
    publisher
        .publish_qos1(2, "size/small", b"fits".to_vec())
        .await;
    assert_eq!(sub.drain_payloads().await, vec![b"fits".to_vec()]);
}

/// A persistent session's queue is bounded by `limits.max_queued_messages`: when it is full, newer
/// messages are dropped and the queued ones are delivered in order on resume.
#[tokio::test]
async fn full_session_queue_keeps_the_oldest_messages() {
    let broker = Broker::start_with(|c| c.limits.max_queued_messages = 3).await;
    let persistent = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let (mut sub, present) = Client::connect(&broker, "queued", true, persistent.clone()).await;
    assert!(!present);
    sub.subscribe("q/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Client::connect(&broker, "q-pub", true, Properties::default()).await;
    for i in 0..6u16 {
        publisher
            .publish_qos1(i + 1, "q/t", vec![b'0' + i as u8])
            .await;
    }

    let (mut sub, present) = Client::connect(&broker, "queued", false, persistent).await;
    assert!(present, "the session was kept");
    assert_eq!(
        sub.drain_payloads().await,
        vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]
    );
}

/// MQTT-3.3.4-7/8: the server sends no more unacknowledged QoS 1 PUBLISHes than the client's Receive
/// Maximum; acknowledging frees the window.
#[tokio::test]
async fn client_receive_maximum_bounds_the_outbound_window() {
    let broker = Broker::start().await;
    let window = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let (mut sub, _) = Client::connect(&broker, "window", true, window).await;
    sub.subscribe("w/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(&broker, "w-pub", true, Properties::default()).await;
    for i in 0..5u16 {
        publisher
            .publish_qos1(i + 1, "w/t", vec![b'0' + i as u8])
            .await;
    }
    let mut ids = Vec::new();
    while let Ok(Some(Packet::Publish(p))) = sub.recv_within(QUIET).await {
        ids.push((p.packet_id.expect("QoS 1 has an id"), p.payload.to_vec()));
    }
    assert_eq!(
        ids.len(),
        2,
        "only the window is sent before any PUBACK: {ids:?}"
    );
    sub.send(Packet::PubAck(PubResponse::success(ids[0].0)))
        .await;
    sub.send(Packet::PubAck(PubResponse::success(ids[1].0)))
        .await;
    // The other three follow, in order, as the window frees.
    let rest = sub.drain_payloads().await;
    assert_eq!(rest, vec![b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]);
}

/// 5.0 section 3.2.2.3.4: with `limits.maximum_qos = 1` the broker announces Maximum QoS 1, grants at
/// most QoS 1, and a PUBLISH at QoS 2 is answered with DISCONNECT 0x9B (MQTT-3.2.2-11).
#[tokio::test]
async fn maximum_qos_is_announced_granted_and_enforced() {
    let broker = Broker::start_with(|c| c.limits.maximum_qos = QoS::AtLeastOnce).await;
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    let mut c = Client {
        stream,
        buf: BytesMut::new(),
    };
    c.send(Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "maxqos".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    })))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.properties.maximum_qos, Some(1), "{ack:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            "m/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..SubscriptionOptions::default()
            },
        )],
    }))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes, vec![ReasonCode::GrantedQoS1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    c.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "m/x".into(),
        packet_id: Some(7),
        properties: Properties::default(),
        payload: Bytes::from_static(b"2"),
    }))
    .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::QoSNotSupported, "{d:?}"),
        other => panic!("expected DISCONNECT 0x9B, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
}

/// 5.0 section 3.2.2.3.14: a client asking for no keep alive (0) or more than `limits.max_keep_alive_secs`
/// is told the broker's value as Server Keep Alive.
#[tokio::test]
async fn server_keep_alive_caps_the_clients_keep_alive() {
    let broker = Broker::start_with(|c| c.limits.max_keep_alive = 30).await;
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    let mut c = Client {
        stream,
        buf: BytesMut::new(),
    };
    for keep_alive in [60u16, 0] {
        c.send(Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive,
            client_id: format!("ka-{keep_alive}"),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.properties.server_keep_alive, Some(30), "{ack:?}")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        c = Client {
            stream,
            buf: BytesMut::new(),
        };
    }
}

/// MQTT-3.1.2-23 / 4.1.1: a session whose Session Expiry Interval has passed is gone: the client comes
/// back to a new session (Session Present 0) without its subscriptions.
#[tokio::test]
async fn expired_session_is_discarded() {
    let broker = Broker::start().await;
    let short = Properties {
        session_expiry_interval: Some(1),
        ..Properties::default()
    };
    let (mut sub, _) = Client::connect(&broker, "expiring", true, short.clone()).await;
    sub.subscribe("e/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut publisher, _) = Client::connect(&broker, "e-pub", true, Properties::default()).await;
    publisher.publish_qos1(1, "e/t", b"late".to_vec()).await;
    let (mut sub, present) = Client::connect(&broker, "expiring", false, short).await;
    assert!(!present, "the session expired");
    assert_eq!(sub.drain_payloads().await, Vec::<Vec<u8>>::new());
}
