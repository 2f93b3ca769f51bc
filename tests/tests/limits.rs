//! The limits of `[limits]` and of a listener's `max_connections`: each one enforced with the answer its
//! protocol version allows (5.0 reason codes; 3.x return codes, disconnection or back-pressure), and
//! counted in the broker's `Stats`, which `$SYS` publishes (the last test reads one from `$SYS`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, SubscribeReasonCode as Sub5};
use rumqttc::{ConnectReturnCode as Return4, QoS as QoS4, SubscribeReasonCode as Sub4};
use wasp_mqtt::{Packet, Properties, PubResponse, Publish, QoS, ReasonCode};
use wasp_tests::raw::{Conn, connect, packet, simple_connect, string};
use wasp_tests::{Broker, QUIET, v4, v5};

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A raw 5.0 connection whose CONNACK was a success.
async fn raw_v5(broker: &Broker, id: &str) -> Conn {
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(5, id.as_bytes())).await;
    match c.recv_v5().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}"),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    c
}

/// A raw 3.1.1 connection whose CONNACK was a success.
async fn raw_v311(broker: &Broker, id: &str) -> Conn {
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(4, id.as_bytes())).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    c
}

fn publish(qos: QoS, topic: &str, packet_id: Option<u16>, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// A 5.0 PUBLISH encoded, for sending several in one write.
fn publish_bytes(qos: QoS, topic: &str, packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    wasp_mqtt::encode(
        &publish(qos, topic, packet_id, payload),
        wasp_mqtt::ProtocolVersion::V5,
        &mut buf,
        u32::MAX,
    )
    .expect("encode");
    buf.to_vec()
}

/// A 3.1.1 QoS 1 PUBLISH.
fn publish_v311_qos1(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// Reads the next 5.0 packet, expecting a PUBACK (or PUBREC) for `id`; returns its reason code.
async fn ack_reason(c: &mut Conn, id: u16) -> ReasonCode {
    match c.recv_v5().await {
        Packet::PubAck(PubResponse {
            packet_id, reason, ..
        })
        | Packet::PubRec(PubResponse {
            packet_id, reason, ..
        }) if packet_id == id => reason,
        other => panic!("PUBACK/PUBREC {id} expected, got {other:?}"),
    }
}

/// Expects a 5.0 DISCONNECT with `reason`, then the closed socket.
async fn expect_disconnect(c: &mut Conn, reason: ReasonCode) {
    match c.recv_v5().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason, "{d:?}"),
        other => panic!("DISCONNECT expected, got {other:?}"),
    }
    c.expect_closed().await;
}

// ---- connections ------------------------------------------------------------------------------------------

/// `[[listeners]] max_connections`: a client beyond it is refused as the global limit refuses (5.0 CONNACK
/// 0x89 Server busy, 3.1.1 return code 3), other listeners keep their room, and the place is given back
/// when a client leaves.
#[tokio::test]
async fn listener_max_connections() {
    let (broker, addrs) = Broker::start_listeners(|c| {
        c.listeners[0].max_connections = 1;
        let mut other = c.listeners[0].clone();
        other.name = "other".into();
        other.max_connections = 0;
        c.listeners.push(other);
    })
    .await;
    let (small, other) = (addrs[0].1, addrs[1].1);
    let first = v4::connect(v4::options("first", small)).await;
    assert_eq!(
        v4::connect_refused(v4::options("second-v4", small)).await,
        Return4::ServiceUnavailable
    );
    assert_eq!(
        v5::connect_refused(v5::options("second-v5", small)).await,
        ConnectReturnCode::ServerBusy
    );
    let elsewhere = v5::connect(v5::options("elsewhere", other)).await;
    let stats = &broker.state.stats;
    assert_eq!(count(&stats.refused_listener_connections), 2);
    assert_eq!(count(&stats.refused_max_connections), 0);

    first.disconnect().await;
    let listener = broker.state.listener_count("default").expect("listener");
    for _ in 0..100 {
        if listener.connected.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = v4::connect(v4::options("again", small)).await;
    again.disconnect().await;
    elsewhere.disconnect().await;
    assert_eq!(count(&stats.refused_listener_connections), 2);
}

/// `limits.max_connections`: 5.0 CONNACK 0x89, 3.1.1 return code 3; counted.
#[tokio::test]
async fn global_max_connections() {
    let broker = Broker::start_with(|c| c.limits.max_connections = 1).await;
    let first = v5::connect(v5::options("first", broker.addr)).await;
    assert_eq!(
        v4::connect_refused(v4::options("second-v4", broker.addr)).await,
        Return4::ServiceUnavailable
    );
    assert_eq!(
        v5::connect_refused(v5::options("second-v5", broker.addr)).await,
        ConnectReturnCode::ServerBusy
    );
    assert_eq!(count(&broker.state.stats.refused_max_connections), 2);
    first.disconnect().await;
}

/// `limits.max_connections_per_sec`: a socket beyond the rate is closed right after accept, before any
/// MQTT, and counted.
#[tokio::test]
async fn connection_rate() {
    let broker = Broker::start_with(|c| c.limits.max_connections_per_sec = 1).await;
    let mut first = Conn::open(broker.addr).await;
    first.send(&simple_connect(4, b"first")).await;
    assert_eq!(first.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    let mut second = Conn::open(broker.addr).await;
    second.send(&simple_connect(4, b"second")).await;
    second.expect_closed().await;
    assert_eq!(count(&broker.state.stats.refused_connection_rate), 1);
    // The connection admitted is not affected.
    first.send(&[0xC0, 0x00]).await;
    assert_eq!(first.recv_exact(2).await, [0xD0, 0x00]);
}

/// `limits.connect_timeout_secs`: a socket that sends no CONNECT is closed and counted.
#[tokio::test]
async fn connect_timeout() {
    let broker = Broker::start_with(|c| c.limits.connect_timeout = Duration::from_secs(1)).await;
    let mut silent = Conn::open(broker.addr).await;
    silent.expect_closed().await;
    assert_eq!(count(&broker.state.stats.connect_timeouts), 1);
}

// ---- packets ----------------------------------------------------------------------------------------------

/// `limits.max_packet_size`: 5.0 DISCONNECT 0x95 Packet too large, 3.1.1 the socket closes; counted.
#[tokio::test]
async fn oversize_packets() {
    let broker = Broker::start_with(|c| c.limits.max_packet_size = 64).await;
    let mut c5 = raw_v5(&broker, "big5").await;
    c5.send_v5(&publish(QoS::AtMostOnce, "t", None, &[b'x'; 100]))
        .await;
    expect_disconnect(&mut c5, ReasonCode::PacketTooLarge).await;
    let mut c4 = raw_v311(&broker, "big4").await;
    let mut body = string(b"t");
    body.extend_from_slice(&[b'x'; 100]);
    c4.send(&packet(0x30, &body)).await;
    c4.expect_closed().await;
    assert_eq!(count(&broker.state.stats.oversize_packets), 2);
}

/// `limits.receive_maximum`: a QoS 2 PUBLISH beyond it gets DISCONNECT 0x93; counted.
#[tokio::test]
async fn receive_maximum() {
    let broker = Broker::start_with(|c| c.limits.receive_maximum = 1).await;
    let mut c = raw_v5(&broker, "q2").await;
    c.send_v5(&publish(QoS::ExactlyOnce, "t", Some(1), b"1"))
        .await;
    assert_eq!(
        ack_reason(&mut c, 1).await,
        ReasonCode::NoMatchingSubscribers
    );
    c.send_v5(&publish(QoS::ExactlyOnce, "t", Some(2), b"2"))
        .await;
    expect_disconnect(&mut c, ReasonCode::ReceiveMaximumExceeded).await;
    assert_eq!(count(&broker.state.stats.refused_receive_maximum), 1);
}

// ---- topics -----------------------------------------------------------------------------------------------

/// `limits.max_topic_length` and `max_topic_levels` on PUBLISH: 5.0 QoS 1/2 get 0x90 Topic Name invalid
/// in PUBACK/PUBREC and stay connected, 5.0 QoS 0 gets DISCONNECT 0x90, 3.1.1 is disconnected without an
/// acknowledgement; nothing beyond the limits is routed. A Will topic beyond them refuses the CONNECT.
#[tokio::test]
async fn publish_topic_limits() {
    let broker = Broker::start_with(|c| {
        c.limits.max_topic_length = 16;
        c.limits.max_topic_levels = 3;
    })
    .await;
    let mut sub = v5::connect(v5::options("sub", broker.addr)).await;
    sub.subscribe("#", QoS5::AtLeastOnce).await;

    let mut c5 = raw_v5(&broker, "pub5").await;
    c5.send_v5(&publish(QoS::AtLeastOnce, "a/b/c/d", Some(1), b"levels"))
        .await;
    assert_eq!(ack_reason(&mut c5, 1).await, ReasonCode::TopicNameInvalid);
    c5.send_v5(&publish(
        QoS::ExactlyOnce,
        "seventeen-bytes!!",
        Some(2),
        b"length",
    ))
    .await;
    assert_eq!(ack_reason(&mut c5, 2).await, ReasonCode::TopicNameInvalid);
    c5.send_v5(&publish(QoS::AtLeastOnce, "a/b/c", Some(3), b"fits"))
        .await;
    assert_eq!(ack_reason(&mut c5, 3).await, ReasonCode::Success);
    assert_eq!(sub.next_publish().await.topic, "a/b/c");
    c5.send_v5(&publish(QoS::AtMostOnce, "a/b/c/d", None, b"qos0"))
        .await;
    expect_disconnect(&mut c5, ReasonCode::TopicNameInvalid).await;

    let mut c4 = raw_v311(&broker, "pub4").await;
    c4.send(&publish_v311_qos1("a/b/c/d", 1, b"v311")).await;
    c4.expect_closed().await;

    // A Will topic beyond the limits: CONNACK 0x90.
    let mut will = Vec::new();
    will.push(0); // Will Properties
    will.extend(string(b"w/x/y/z"));
    will.extend(string(b"gone"));
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(5, 0x06, 60, b"willing", &will)).await;
    match c.recv_v5().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::TopicNameInvalid),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    c.expect_closed().await;

    sub.no_publish(QUIET).await;
    assert_eq!(count(&broker.state.stats.refused_publish_topic), 5);
}

/// The same limits on SUBSCRIBE: 0x8F Topic Filter invalid per filter (3.1.1: 0x80); a shared
/// subscription's levels are counted without its `$share/{group}/` prefix.
#[tokio::test]
async fn subscribe_topic_limits() {
    let broker = Broker::start_with(|c| {
        c.limits.max_topic_length = 20;
        c.limits.max_topic_levels = 3;
    })
    .await;
    let mut c5 = v5::connect(v5::options("sub5", broker.addr)).await;
    assert_eq!(
        c5.subscribe("a/b/c/d", QoS5::AtLeastOnce).await,
        [Sub5::TopicFilterInvalid]
    );
    assert_eq!(
        c5.subscribe("twenty-one-bytes-long", QoS5::AtLeastOnce)
            .await,
        [Sub5::TopicFilterInvalid]
    );
    assert_eq!(
        c5.subscribe("$share/g/a/+/#", QoS5::AtLeastOnce).await,
        [Sub5::Success(QoS5::AtLeastOnce)]
    );
    let mut c4 = v4::connect(v4::options("sub4", broker.addr)).await;
    assert_eq!(
        c4.subscribe("a/b/c/d", QoS4::AtLeastOnce).await,
        [Sub4::Failure]
    );
    assert_eq!(
        c4.subscribe("a/b/c", QoS4::AtLeastOnce).await,
        [Sub4::Success(QoS4::AtLeastOnce)]
    );
    assert_eq!(count(&broker.state.stats.refused_subscribe_topic), 3);
    assert_eq!(count(&broker.state.stats.refused_publish_topic), 0);
}

/// `limits.max_subscriptions_per_client`: a filter beyond it gets 0x97 Quota exceeded (3.1.1: 0x80);
/// re-subscribing to a filter the session has does not count twice, and unsubscribing makes room.
#[tokio::test]
async fn max_subscriptions_per_client() {
    let broker = Broker::start_with(|c| c.limits.max_subscriptions_per_client = 2).await;
    let mut c5 = v5::connect(v5::options("many5", broker.addr)).await;
    for filter in ["a", "b", "a"] {
        assert_eq!(
            c5.subscribe(filter, QoS5::AtLeastOnce).await,
            [Sub5::Success(QoS5::AtLeastOnce)],
            "{filter}"
        );
    }
    assert_eq!(
        c5.subscribe("c", QoS5::AtLeastOnce).await,
        [Sub5::QuotaExceeded]
    );
    c5.client
        .unsubscribe("a")
        .await
        .expect("unsubscribe queued");
    c5.inbox
        .wait_for("UNSUBACK", |item| match item {
            wasp_tests::Item::Packet(rumqttc::v5::mqttbytes::v5::Packet::UnsubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(
        c5.subscribe("c", QoS5::AtLeastOnce).await,
        [Sub5::Success(QoS5::AtLeastOnce)]
    );

    let mut c4 = v4::connect(v4::options("many4", broker.addr)).await;
    for filter in ["a", "b"] {
        assert_eq!(
            c4.subscribe(filter, QoS4::AtMostOnce).await,
            [Sub4::Success(QoS4::AtMostOnce)]
        );
    }
    assert_eq!(c4.subscribe("c", QoS4::AtMostOnce).await, [Sub4::Failure]);
    assert_eq!(count(&broker.state.stats.refused_subscriptions), 2);
}

// ---- publish rate and bandwidth ---------------------------------------------------------------------------

/// `limits.max_publish_rate`, 5.0: beyond it QoS 1/2 get 0x97 Quota exceeded and QoS 0 are dropped; none
/// of them is routed.
#[tokio::test]
async fn publish_rate_v5_refuses() {
    let broker = Broker::start_with(|c| c.limits.max_publish_rate = 2).await;
    let mut sub = v5::connect(v5::options("sub", broker.addr)).await;
    sub.subscribe("r", QoS5::AtLeastOnce).await;
    let mut c = raw_v5(&broker, "fast5").await;
    // One write: the three arrive together, well within one second.
    let mut burst = Vec::new();
    for id in 1..=3u16 {
        burst.extend(publish_bytes(
            QoS::AtLeastOnce,
            "r",
            Some(id),
            id.to_string().as_bytes(),
        ));
    }
    burst.extend(publish_bytes(QoS::AtMostOnce, "r", None, b"qos0"));
    c.send(&burst).await;
    assert_eq!(ack_reason(&mut c, 1).await, ReasonCode::Success);
    assert_eq!(ack_reason(&mut c, 2).await, ReasonCode::Success);
    assert_eq!(ack_reason(&mut c, 3).await, ReasonCode::QuotaExceeded);
    assert_eq!(&sub.next_publish().await.payload[..], b"1");
    assert_eq!(&sub.next_publish().await.payload[..], b"2");
    sub.no_publish(QUIET).await;
    let stats = &broker.state.stats;
    assert_eq!(count(&stats.refused_publish_rate), 2);
    assert_eq!(count(&stats.throttled_publishes), 0);
}

/// `limits.max_publish_rate`, 3.1.1: nothing is refused or lost; the broker stops reading until the bucket
/// refills, so every PUBLISH is acknowledged and delivered, in order.
#[tokio::test]
async fn publish_rate_v311_throttles() {
    let broker = Broker::start_with(|c| c.limits.max_publish_rate = 2).await;
    let mut sub = v4::connect(v4::options("sub", broker.addr)).await;
    sub.subscribe("r", QoS4::AtLeastOnce).await;
    let mut c = raw_v311(&broker, "fast4").await;
    let mut burst = Vec::new();
    for id in 1..=4u16 {
        burst.extend(publish_v311_qos1("r", id, id.to_string().as_bytes()));
    }
    c.send(&burst).await;
    for id in 1..=4u16 {
        let [hi, lo] = id.to_be_bytes();
        assert_eq!(c.recv_exact(4).await, [0x40, 0x02, hi, lo]);
        assert_eq!(
            &sub.next_publish().await.payload[..],
            id.to_string().as_bytes()
        );
    }
    let stats = &broker.state.stats;
    assert!(count(&stats.throttled_publishes) >= 1);
    assert_eq!(count(&stats.refused_publish_rate), 0);
    // Still connected and answering.
    c.send(&[0xC0, 0x00]).await;
    assert_eq!(c.recv_exact(2).await, [0xD0, 0x00]);
}

/// `limits.max_publish_bytes_per_sec` (topic + payload): 5.0 gets 0x97 beyond it, 3.1.1 is throttled.
#[tokio::test]
async fn publish_bandwidth() {
    let broker = Broker::start_with(|c| c.limits.max_publish_bytes_per_sec = 100).await;
    let mut c5 = raw_v5(&broker, "wide5").await;
    let mut burst = publish_bytes(QoS::AtLeastOnce, "b", Some(1), &[b'x'; 60]);
    burst.extend(publish_bytes(QoS::AtLeastOnce, "b", Some(2), &[b'x'; 60]));
    c5.send(&burst).await;
    assert_eq!(
        ack_reason(&mut c5, 1).await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(ack_reason(&mut c5, 2).await, ReasonCode::QuotaExceeded);

    let mut c4 = raw_v311(&broker, "wide4").await;
    let mut burst = publish_v311_qos1("b", 1, &[b'x'; 60]);
    burst.extend(publish_v311_qos1("b", 2, &[b'x'; 60]));
    c4.send(&burst).await;
    assert_eq!(c4.recv_exact(4).await, [0x40, 0x02, 0, 1]);
    assert_eq!(c4.recv_exact(4).await, [0x40, 0x02, 0, 2]);
    let stats = &broker.state.stats;
    assert_eq!(count(&stats.refused_publish_bandwidth), 1);
    assert_eq!(count(&stats.throttled_publishes), 1);
}

// ---- queue memory ceiling ---------------------------------------------------------------------------------

/// `limits.max_queued_bytes`: while the session queues hold it, 5.0 QoS 1 publishes get 0x97 and QoS 0
/// deliveries are dropped; a 3.1.1 QoS 1 publisher is paused, not refused, and its message goes through
/// (and is acknowledged) once the queues drain.
#[tokio::test]
async fn queued_bytes_ceiling() {
    let broker = Broker::start_with(|c| c.limits.max_queued_bytes = 1000).await;
    // An offline persistent session keeps what is published to "q".
    let mut keeper_options = v5::options("keeper", broker.addr);
    keeper_options.set_clean_start(false);
    keeper_options.set_session_expiry_interval(Some(300));
    let mut keeper = v5::connect(keeper_options.clone()).await;
    keeper.subscribe("q", QoS5::AtLeastOnce).await;
    keeper.disconnect().await;
    let mut watcher = v5::connect(v5::options("watcher", broker.addr)).await;
    watcher.subscribe("z", QoS5::AtMostOnce).await;

    let mut c5 = raw_v5(&broker, "pub5").await;
    for id in 1..=2 {
        c5.send_v5(&publish(QoS::AtLeastOnce, "q", Some(id), &[b'x'; 600]))
            .await;
        assert_eq!(ack_reason(&mut c5, id).await, ReasonCode::Success);
    }
    // Admitted below the ceiling, both are queued: 2 x (1 + 600) bytes.
    assert_eq!(broker.state.queue_budget.used(), 1202);
    c5.send_v5(&publish(QoS::AtLeastOnce, "q", Some(3), b"refused"))
        .await;
    assert_eq!(ack_reason(&mut c5, 3).await, ReasonCode::QuotaExceeded);
    c5.send_v5(&publish(QoS::AtMostOnce, "z", None, b"dropped"))
        .await;
    watcher.no_publish(QUIET).await;

    let mut c4 = raw_v311(&broker, "pub4").await;
    c4.send(&publish_v311_qos1("q", 7, b"late")).await;
    c4.expect_open_for(QUIET).await;

    // The keeper comes back and takes its messages: the queue drains and the paused PUBLISH goes on.
    let mut keeper = v5::connect(keeper_options).await;
    assert!(keeper.connack.session_present);
    for _ in 0..2 {
        assert_eq!(keeper.next_publish().await.payload.len(), 600);
    }
    assert_eq!(&keeper.next_publish().await.payload[..], b"late");
    assert_eq!(c4.recv_exact(4).await, [0x40, 0x02, 0, 7]);

    let stats = &broker.state.stats;
    assert_eq!(count(&stats.refused_queued_bytes), 1);
    assert_eq!(count(&stats.dropped_queued_bytes), 1);
    assert_eq!(count(&stats.throttled_publishes), 1);
    keeper.disconnect().await;
}

// ---- $SYS -------------------------------------------------------------------------------------------------

/// The counters reach `$SYS`: a refused subscription shows in `$SYS/broker/subscriptions/refused/maximum`.
#[tokio::test]
async fn limit_counters_are_published_in_sys() {
    let broker = Broker::start_with(|c| {
        c.limits.max_subscriptions_per_client = 1;
        c.sys_interval = Some(Duration::from_secs(1));
    })
    .await;
    let mut c = v4::connect(v4::options("greedy", broker.addr)).await;
    c.subscribe("a", QoS4::AtMostOnce).await;
    assert_eq!(c.subscribe("b", QoS4::AtMostOnce).await, [Sub4::Failure]);
    let mut sys = v4::connect(v4::options("sys", broker.addr)).await;
    sys.subscribe(
        "$SYS/broker/subscriptions/refused/maximum",
        QoS4::AtMostOnce,
    )
    .await;
    // The retained value may predate the refusal; a newer one follows within the interval.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let p = sys.next_publish().await;
        seen.push(String::from_utf8_lossy(&p.payload).into_owned());
        if p.payload == "1" {
            return;
        }
    }
    panic!("no $SYS value 1 among {seen:?}");
}
