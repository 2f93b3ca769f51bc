//! Persistence in an in-process broker: a graceful restart on either storage backend (the embedded
//! storage-redb, storage-redis on a real Redis server) keeps retained messages, sessions and their
//! queues; a storage backend that fails or is slow (the flaky test program, and a Redis server that is
//! killed or paused) holds acknowledgements, refuses new work with the spec's reason codes, and the broker
//! recovers when it comes back. (The crash test, SIGKILL of the real binary, is
//! `broker/tests/storage.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasp_mqtt::{
    Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};
use wasp_plugin_harness::redis::RedisServer;
use wasp_plugin_host::test_programs;
use wasp_tests::raw::Conn;
use wasp_tests::{Broker, QUIET, storage};

async fn start_redb(dir: &Path) -> Broker {
    let spec = storage::redb(&storage::plugin_wasm("storage-redb"), dir);
    Broker::start_with(|c| storage::install(c, spec, Duration::ZERO)).await
}

/// A broker on storage-redis, on `redis`.
async fn start_redis(redis: &RedisServer) -> Broker {
    let spec = storage::redis(&storage::plugin_wasm("storage-redis"), redis);
    Broker::start_with(|c| storage::install(c, spec, Duration::ZERO)).await
}

/// A 5.0 CONNECT; `expiry` > 0 asks for a persistent session.
async fn connect_v5(
    broker: &Broker,
    id: &str,
    clean: bool,
    expiry: u32,
) -> (Conn, wasp_mqtt::ConnAck) {
    let mut c = Conn::open(broker.addr).await;
    c.send_v5(&Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: (expiry > 0).then_some(expiry),
            ..Properties::default()
        },
    })))
    .await;
    match c.recv_v5().await {
        Packet::ConnAck(ack) => (c, ack),
        other => panic!("{id}: CONNACK expected, got {other:?}"),
    }
}

async fn subscribe(c: &mut Conn, filter: &str, qos: QoS) {
    c.send_v5(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.to_owned(),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
    }))
    .await;
    match c.recv_v5().await {
        Packet::SubAck(ack) => assert!(!ack.reason_codes[0].is_error(), "{ack:?}"),
        other => panic!("SUBACK expected, got {other:?}"),
    }
}

async fn disconnect(mut c: Conn) {
    c.send_v5(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    c.expect_closed().await;
}

fn publish(topic: &str, qos: QoS, id: u16, payload: &'static [u8], retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: Arc::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then_some(id),
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

async fn puback(c: &mut Conn) -> PubResponse {
    match c.recv_v5().await {
        Packet::PubAck(ack) => ack,
        other => panic!("PUBACK expected, got {other:?}"),
    }
}

/// The next PUBLISH, acknowledged.
async fn delivery(c: &mut Conn) -> Publish {
    match c.recv_v5().await {
        Packet::Publish(p) => {
            if let Some(id) = p.packet_id {
                c.send_v5(&Packet::PubAck(PubResponse::success(id))).await;
            }
            p
        }
        other => panic!("PUBLISH expected, got {other:?}"),
    }
}

#[tokio::test]
async fn sessions_queues_and_retained_messages_survive_a_restart_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    survive_a_restart(|| start_redb(dir.path())).await;
}

#[tokio::test]
async fn sessions_queues_and_retained_messages_survive_a_restart_on_redis() {
    let redis = RedisServer::start().expect("a Redis server (tests/setup installs it)");
    survive_a_restart(|| start_redis(&redis)).await;
}

/// Restarts of the broker on the storage `start` opens, each time on the same data.
async fn survive_a_restart<F: Future<Output = Broker>>(start: impl Fn() -> F) {
    let broker = start().await;
    let (mut sub, _) = connect_v5(&broker, "keeper", true, 3600).await;
    subscribe(&mut sub, "kept/#", QoS::AtLeastOnce).await;
    disconnect(sub).await;
    let (mut publisher, _) = connect_v5(&broker, "pub", true, 0).await;
    publisher
        .send_v5(&publish("kept/retained", QoS::AtLeastOnce, 1, b"r", true))
        .await;
    assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);
    publisher
        .send_v5(&publish("kept/queued", QoS::AtLeastOnce, 2, b"q", false))
        .await;
    assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);
    disconnect(publisher).await;
    broker.stop().await;

    let broker = start().await;
    assert_eq!(broker.state.retained_count(), 1);
    assert_eq!(broker.state.session_count(), 1);
    let (mut sub, ack) = connect_v5(&broker, "keeper", false, 3600).await;
    assert!(ack.session_present, "the session came back: {ack:?}");
    // The queued messages, in order, then nothing else.
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = delivery(&mut sub).await;
        got.push((p.topic.to_string(), p.payload.clone()));
    }
    assert_eq!(
        got,
        [
            ("kept/retained".to_owned(), Bytes::from_static(b"r")),
            ("kept/queued".to_owned(), Bytes::from_static(b"q")),
        ]
    );
    sub.expect_open_for(QUIET).await;
    // The subscription is back.
    let (mut publisher, _) = connect_v5(&broker, "pub", true, 0).await;
    publisher
        .send_v5(&publish("kept/new", QoS::AtLeastOnce, 3, b"n", false))
        .await;
    assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);
    assert_eq!(&*delivery(&mut sub).await.topic, "kept/new");
    // Acknowledged messages are gone from storage: a second restart queues nothing again.
    disconnect(sub).await;
    disconnect(publisher).await;
    broker.stop().await;
    let broker = start().await;
    let (mut sub, ack) = connect_v5(&broker, "keeper", false, 3600).await;
    assert!(ack.session_present);
    sub.expect_open_for(QUIET).await;
    // A clean start ends the session, in storage too.
    disconnect(sub).await;
    let (sub, ack) = connect_v5(&broker, "keeper", true, 0).await;
    assert!(!ack.session_present);
    disconnect(sub).await;
    broker.stop().await;
    let broker = start().await;
    assert_eq!(broker.state.session_count(), 0);
    assert_eq!(broker.state.retained_count(), 1);
}

/// The flaky test backend, with its control directory (`fail`, `slow` files).
async fn start_flaky(ctl: &Path) -> Broker {
    let spec = storage::with_dir(Path::new(test_programs::FLAKY_STORAGE), ctl, "/ctl", "{}");
    Broker::start_with(|c| storage::install(c, spec, Duration::ZERO)).await
}

#[tokio::test]
async fn a_failing_backend_holds_acknowledgements_and_the_broker_recovers() {
    let ctl = tempfile::tempdir().unwrap();
    let broker = start_flaky(ctl.path()).await;
    let fail = ctl.path().join("fail");
    outage(&broker, |down| {
        if down {
            std::fs::write(&fail, b"").unwrap();
        } else {
            std::fs::remove_file(&fail).unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_slow_backend_delays_the_acknowledgement_only() {
    let ctl = tempfile::tempdir().unwrap();
    let broker = start_flaky(ctl.path()).await;
    // Each write takes 300 ms.
    slow_write(&broker, Duration::from_millis(150), || {
        std::fs::write(ctl.path().join("slow"), b"").unwrap();
    })
    .await;
}

/// With the backend made slow by `slow_down` (for longer than `stalled`), a QoS 1 PUBLISH to a persistent
/// session is not acknowledged for `stalled`, then it is, and the online subscriber got it meanwhile.
async fn slow_write(broker: &Broker, stalled: Duration, slow_down: impl FnOnce()) {
    let (mut sub, _) = connect_v5(broker, "persistent", true, 3600).await;
    subscribe(&mut sub, "slow", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect_v5(broker, "pub", true, 0).await;
    slow_down();
    publisher
        .send_v5(&publish("slow", QoS::AtLeastOnce, 1, b"s", false))
        .await;
    // Nothing is acknowledged before it is stored...
    publisher.expect_open_for(stalled).await;
    // ...and then it is, while the online subscriber got the message meanwhile.
    assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);
    assert_eq!(&delivery(&mut sub).await.payload[..], b"s");
}

#[tokio::test]
async fn redis_down_holds_acknowledgements_and_the_broker_recovers() {
    let mut redis = RedisServer::start().expect("a Redis server (tests/setup installs it)");
    let broker = start_redis(&redis).await;
    // The server crashes, then comes back with its data (append-only file); the plugin reconnects.
    outage(&broker, |down| {
        if down {
            redis.kill();
        } else {
            redis.restart().unwrap();
        }
    })
    .await;
}

/// The storage backend goes down (`set_down(true)`) while a persistent session is offline, and comes
/// back (`set_down(false)`): the PUBLISH whose write fails is held, not acknowledged; meanwhile new
/// QoS 1 work is refused with the spec's codes; once the backend is back the retried write lands, the
/// held PUBACK goes out, then the refusals, in order; the session gets what was acknowledged only.
async fn outage(broker: &Broker, mut set_down: impl FnMut(bool)) {
    let (mut sub, _) = connect_v5(broker, "offline", true, 3600).await;
    subscribe(&mut sub, "t", QoS::AtLeastOnce).await;
    disconnect(sub).await;
    let (mut publisher, _) = connect_v5(broker, "pub", true, 0).await;
    publisher
        .send_v5(&publish("t", QoS::AtLeastOnce, 1, b"1", false))
        .await;
    assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);

    // Down: the message is routed and stays unacknowledged while its write fails.
    set_down(true);
    publisher
        .send_v5(&publish("t", QoS::AtLeastOnce, 2, b"2", false))
        .await;
    publisher.expect_open_for(QUIET).await;
    // Meanwhile new QoS 1 work is refused with the spec's codes: PUBLISH 0x80 (behind the held PUBACK
    // on the first connection, at once on a new one), persistent CONNECT 0x88; clean sessions connect.
    publisher
        .send_v5(&publish("t", QoS::AtLeastOnce, 3, b"3", false))
        .await;
    let (mut other, _) = connect_v5(broker, "pub-2", true, 0).await;
    other
        .send_v5(&publish("t", QoS::AtLeastOnce, 1, b"x", false))
        .await;
    let refused = puback(&mut other).await;
    assert_eq!(refused.reason, ReasonCode::UnspecifiedError, "{refused:?}");
    assert_eq!(
        refused.properties.reason_string.as_deref(),
        Some("storage is unavailable")
    );
    let (_, ack) = connect_v5(broker, "wants-a-session", true, 60).await;
    assert_eq!(ack.reason, ReasonCode::ServerUnavailable);

    // Back: the held PUBACK goes out (the write is retried), then the refusal, in order.
    set_down(false);
    let held = tokio::time::timeout(Duration::from_secs(10), puback(&mut publisher))
        .await
        .expect("the held PUBACK after the backend came back");
    assert_eq!((held.packet_id, held.reason), (2, ReasonCode::Success));
    let after = puback(&mut publisher).await;
    assert_eq!(
        (after.packet_id, after.reason),
        (3, ReasonCode::UnspecifiedError)
    );
    let (_, ack) = connect_v5(broker, "wants-a-session", true, 60).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    // $SYS and the metrics count the failed writes.
    let (writes, failures, _) = broker.state.store().expect("storage").counts();
    assert!(failures >= 1, "{failures} failed writes counted");
    assert!(writes >= 2, "{writes} writes counted");
    // The session got what was acknowledged, not what was refused.
    let (mut sub, ack) = connect_v5(broker, "offline", false, 3600).await;
    assert!(ack.session_present);
    assert_eq!(&delivery(&mut sub).await.payload[..], b"1");
    assert_eq!(&delivery(&mut sub).await.payload[..], b"2");
    sub.expect_open_for(QUIET).await;
}

#[tokio::test]
async fn a_paused_redis_delays_the_acknowledgement_only() {
    let redis = RedisServer::start().expect("a Redis server (tests/setup installs it)");
    let broker = start_redis(&redis).await;
    // Redis answers nothing for 600 ms (DEBUG SLEEP), as a server stalled on its disk would.
    slow_write(&broker, Duration::from_millis(300), || {
        redis.pause(Duration::from_millis(600))
    })
    .await;
}

#[tokio::test]
async fn a_qos1_message_in_flight_is_sent_again_with_its_packet_id_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_redb(dir.path()).await;
    let (mut sub, _) = connect_v5(&broker, "in-flight", true, 3600).await;
    subscribe(&mut sub, "f", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect_v5(&broker, "pub", true, 0).await;
    for (id, payload) in [(1, b"1"), (2, b"2"), (3, b"3")] {
        publisher
            .send_v5(&publish("f", QoS::AtLeastOnce, id, payload, false))
            .await;
        assert_eq!(puback(&mut publisher).await.reason, ReasonCode::Success);
    }
    // The first two are acknowledged; the third is received and not.
    delivery(&mut sub).await;
    delivery(&mut sub).await;
    let unacknowledged = match sub.recv_v5().await {
        Packet::Publish(p) => p,
        other => panic!("PUBLISH expected, got {other:?}"),
    };
    assert_eq!(&unacknowledged.payload[..], b"3");
    disconnect(sub).await;
    disconnect(publisher).await;
    broker.stop().await;

    // After the restart the session sends it again with its packet identifier and DUP set
    // (MQTT-4.4.0-1), not as a new message.
    let broker = start_redb(dir.path()).await;
    let (mut sub, ack) = connect_v5(&broker, "in-flight", false, 3600).await;
    assert!(ack.session_present);
    let again = delivery(&mut sub).await;
    assert_eq!(&again.payload[..], b"3");
    assert_eq!(again.packet_id, unacknowledged.packet_id);
    assert!(again.dup, "{again:?}");
    sub.expect_open_for(QUIET).await;
}
