//! Negative paths in raw bytes: malformed packets and protocol violations, each checked for the exact answer
//! (CONNACK return code / DISCONNECT reason code) and for the closed socket that must follow.
//!
//! Tests are named after the normative statement they check (`mqtt_<section>_<n>`: MQTT 3.1.1 numbering where
//! the statement is in both versions, otherwise MQTT 5.0's).

use std::time::{Duration, Instant};

use wasp_tests::Broker;
use wasp_tests::raw::{
    Conn, connect, expect_disconnect, packet, publish_v5, publish_v311, simple_connect, string,
    subscribe_v311, v5_session, v311_session,
};

// ---- CONNECT ----------------------------------------------------------------------------------------------

/// 3.1.1: unsupported protocol level: CONNACK 0x01 (unacceptable protocol version), then close (3.1.2-2).
#[tokio::test]
async fn mqtt_3_1_2_2_unsupported_protocol_level() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(6, 0x02, 60, b"lvl6", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x01]);
    c.expect_closed().await;
}

/// 5.0: a CONNECT with level 5 that is not MQTT 5.0 (protocol name "MQIsdp"): CONNACK 0x84 Unsupported
/// Protocol Version in 5.0 format, then close (5.0 3.1.2-1, 3.1.2-2).
#[tokio::test]
async fn mqtt5_3_1_2_2_unsupported_protocol_version() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    let mut body = string(b"MQIsdp");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    body.extend(string(b"odd"));
    c.send(&packet(0x10, &body)).await;
    let ack = c.recv_packet().await;
    assert_eq!(ack[0], 0x20, "CONNACK expected: {ack:02x?}");
    assert_eq!(&ack[2..4], &[0x00, 0x84], "v5 CONNACK 0x84: {ack:02x?}");
    c.expect_closed().await;
}

/// The first packet must be CONNECT; anything else closes the connection without an answer (3.1.0-1).
#[tokio::test]
async fn mqtt_3_1_0_1_first_packet_not_connect() {
    let broker = Broker::start().await;
    for first in [
        &[0xC0u8, 0x00][..],
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'][..],
    ] {
        let mut c = Conn::open(broker.addr).await;
        c.send(first).await;
        c.expect_closed().await;
    }
}

/// 3.1.1: a second CONNECT is a protocol violation: the connection is closed (3.1.0-2).
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_v311() {
    let broker = Broker::start().await;
    let mut c = v311_session(&broker, b"twice").await;
    c.send(&simple_connect(4, b"twice")).await;
    c.expect_closed().await;
}

/// 5.0: a second CONNECT is a Protocol Error: DISCONNECT 0x82, then close (3.1.0-2).
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_v5() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"twice").await;
    c.send(&simple_connect(5, b"twice")).await;
    expect_disconnect(&mut c, 0x82).await;
}

/// CONNECT's reserved flag (bit 0) must be 0, otherwise the connection is closed (3.1.2-3).
#[tokio::test]
async fn mqtt_3_1_2_3_connect_reserved_flag() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x03, 60, b"reserved", &[])).await;
    c.expect_closed().await;
}

/// 3.1.1: an empty client id with clean session 0: CONNACK 0x02 (identifier rejected), then close (3.1.3-8).
#[tokio::test]
async fn mqtt_3_1_3_8_empty_client_id_without_clean_session() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x00, 60, b"", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x02]);
    c.expect_closed().await;
}

/// A socket that never sends CONNECT is closed after the connect timeout.
#[tokio::test]
async fn connect_timeout_closes_silent_socket() {
    let broker =
        Broker::start_with(|c| c.limits.connect_timeout = Duration::from_millis(300)).await;
    let mut c = Conn::open(broker.addr).await;
    let start = Instant::now();
    c.expect_closed_within(Duration::from_secs(3)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        start.elapsed()
    );
}

/// Keep alive: no packet within 1.5 x keep alive closes the connection (3.1.2-24), which publishes the will.
#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_timeout_publishes_will() {
    let broker = Broker::start().await;
    let mut watcher = v311_session(&broker, b"watcher").await;
    watcher.send(&subscribe_v311(1, b"ka/will", 0)).await;
    assert_eq!(watcher.recv_exact(5).await, [0x90, 0x03, 0x00, 0x01, 0x00]);

    let mut will = string(b"ka/will");
    will.extend(string(b"timed out"));
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x02 | 0x04, 1, b"sleepy", &will)).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    let start = Instant::now();
    // Allowed to stay silent for 1.5 s; closed soon after.
    c.expect_open_for(Duration::from_millis(1300)).await;
    c.expect_closed_within(Duration::from_millis(1700)).await;
    assert!(start.elapsed() >= Duration::from_millis(1300));
    assert_eq!(
        watcher.recv_packet().await,
        publish_v311(0x30, b"ka/will", None, b"timed out"),
        "will published as QoS 0 PUBLISH"
    );
}

/// 3.1.1 3.1.2.10: with keep alive 0 the server is "not required" to close an idle connection; once
/// `limits.max_keep_alive_secs` is set, Wasp holds such a client to it so idle sockets cannot stay forever.
#[tokio::test]
async fn mqtt_3_1_2_10_keep_alive_zero_held_to_the_maximum_v311() {
    let broker = Broker::start_with(|c| c.limits.max_keep_alive = 1).await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x02, 0, b"no-keep-alive", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    let start = Instant::now();
    c.expect_open_for(Duration::from_millis(1300)).await;
    c.expect_closed_within(Duration::from_millis(1700)).await;
    assert!(start.elapsed() >= Duration::from_millis(1300));
    // With the default maximum (65535, "none") keep alive 0 still means no timeout.
    let unbounded = Broker::start().await;
    let mut c = Conn::open(unbounded.addr).await;
    c.send(&connect(4, 0x02, 0, b"no-keep-alive", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    c.expect_open_for(Duration::from_millis(2000)).await;
}

/// A 3.x client asking for a keep alive above `limits.max_keep_alive_secs` cannot be told a lower one
/// (5.0 has Server Keep Alive): refused with return code 2, as Mosquitto does; the broker keeps serving.
#[tokio::test]
async fn keep_alive_above_the_maximum_refused_v311() {
    let broker = Broker::start_with(|c| c.limits.max_keep_alive = 5).await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x02, 6, b"long-keep-alive", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x02]);
    c.expect_closed().await;
    let mut ok = Conn::open(broker.addr).await;
    ok.send(&connect(4, 0x02, 5, b"keeps-to-it", &[])).await;
    assert_eq!(ok.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
}

/// PINGREQ is answered with PINGRESP and keeps the connection alive past the keep alive (3.12.4-1).
#[tokio::test]
async fn mqtt_3_12_4_1_pingreq_keeps_connection() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&connect(4, 0x02, 1, b"pinger", &[])).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.send(&[0xC0, 0x00]).await;
        assert_eq!(c.recv_exact(2).await, [0xD0, 0x00]);
    }
}

// ---- fixed header -----------------------------------------------------------------------------------------

/// Reserved flags of the fixed header must be as specified, otherwise the packet is malformed (2.1.3-1):
/// SUBSCRIBE with flags 0000 instead of 0010.
#[tokio::test]
async fn mqtt_2_1_3_1_reserved_flags_v5() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"flags").await;
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend(string(b"a"));
    body.push(0x00);
    c.send(&packet(0x80, &body)).await;
    expect_disconnect(&mut c, 0x81).await;
}

/// The same in 3.1.1: the connection is closed (2.2.2-2).
#[tokio::test]
async fn mqtt_2_1_3_1_reserved_flags_v311() {
    let broker = Broker::start().await;
    let mut c = v311_session(&broker, b"flags").await;
    let mut bad = subscribe_v311(1, b"a", 0);
    bad[0] = 0x80; // flags 0000 instead of 0010
    c.send(&bad).await;
    c.expect_closed().await;
}

/// A Remaining Length longer than four bytes is malformed (2.2.3 / 1.5.5): v5 DISCONNECT 0x81.
#[tokio::test]
async fn mqtt_1_5_5_remaining_length_too_long() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"rl").await;
    c.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    expect_disconnect(&mut c, 0x81).await;
}

// ---- PUBLISH ----------------------------------------------------------------------------------------------

/// QoS 3 in a PUBLISH is malformed (3.3.1-4): v5 DISCONNECT 0x81.
#[tokio::test]
async fn mqtt_3_3_1_4_publish_qos3_v5() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"qos3").await;
    c.send(&publish_v5(0x36, b"a", Some(1), &[], b"x")).await;
    expect_disconnect(&mut c, 0x81).await;
}

/// The same in 3.1.1: the connection is closed.
#[tokio::test]
async fn mqtt_3_3_1_4_publish_qos3_v311() {
    let broker = Broker::start().await;
    let mut c = v311_session(&broker, b"qos3").await;
    c.send(&publish_v311(0x36, b"a", Some(1), b"x")).await;
    c.expect_closed().await;
}

/// DUP must be 0 for QoS 0 (3.3.1-2): v5 DISCONNECT 0x81.
#[tokio::test]
async fn mqtt_3_3_1_2_dup_with_qos0() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"dup").await;
    c.send(&publish_v5(0x38, b"a", None, &[], b"x")).await;
    expect_disconnect(&mut c, 0x81).await;
}

/// Wildcards are not allowed in a PUBLISH topic name (3.3.2-2): v5 DISCONNECT 0x90 Topic Name invalid.
#[tokio::test]
async fn mqtt_3_3_2_2_wildcard_in_publish_topic() {
    let broker = Broker::start().await;
    for topic in [&b"a/+"[..], b"a/#", b"+"] {
        let mut c = v5_session(&broker, b"wild").await;
        c.send(&publish_v5(0x30, topic, None, &[], b"x")).await;
        expect_disconnect(&mut c, 0x90).await;
    }
}

/// The same in 3.1.1: the connection is closed.
#[tokio::test]
async fn mqtt_3_3_2_2_wildcard_in_publish_topic_v311() {
    let broker = Broker::start().await;
    let mut c = v311_session(&broker, b"wild").await;
    c.send(&publish_v311(0x30, b"a/#", None, b"x")).await;
    c.expect_closed().await;
}

/// A topic alias above the Topic Alias Maximum in CONNACK (3.3.2-9): DISCONNECT 0x94 Topic Alias invalid.
#[tokio::test]
async fn mqtt_3_3_2_9_topic_alias_above_maximum() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(5, b"alias")).await;
    let connack = c.recv_packet().await;
    let maximum = property_u16(&connack[4..], 0x22).unwrap_or(0);
    let mut props = vec![0x23];
    props.extend_from_slice(&(maximum + 1).to_be_bytes());
    c.send(&publish_v5(0x30, b"t", None, &props, b"x")).await;
    expect_disconnect(&mut c, 0x94).await;
}

/// A topic alias of 0 is not permitted (3.3.2-8). The spec names no reason code for it (Mosquitto answers
/// 0x81): any error DISCONNECT, then close.
#[tokio::test]
async fn mqtt_3_3_2_8_topic_alias_zero() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"alias0").await;
    c.send(&publish_v5(0x30, b"t", None, &[0x23, 0x00, 0x00], b"x"))
        .await;
    let p = c.recv_packet().await;
    assert_eq!(p[0], 0xE0, "DISCONNECT expected, got {p:02x?}");
    assert!(
        p.len() >= 3 && p[2] >= 0x80,
        "an error reason code: {p:02x?}"
    );
    c.expect_closed().await;
}

/// An empty topic with an alias that was never set is a Protocol Error (3.3.4 / 3.3.2.3.4): DISCONNECT 0x82.
#[tokio::test]
async fn mqtt_3_3_2_3_4_unknown_topic_alias() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"alias").await;
    c.send(&publish_v5(0x30, b"", None, &[0x23, 0x00, 0x01], b"x"))
        .await;
    expect_disconnect(&mut c, 0x82).await;
}

/// A packet above the broker's Maximum Packet Size (advertised in CONNACK): DISCONNECT 0x95 (3.2.2.3.6, 4.13).
#[tokio::test]
async fn mqtt_3_2_2_3_6_packet_too_large() {
    let broker = Broker::start_with(|c| c.limits.max_packet_size = 1024).await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(5, b"big")).await;
    let connack = c.recv_packet().await;
    assert_eq!(&connack[2..4], &[0x00, 0x00], "{connack:02x?}");
    assert_eq!(
        property_u32(&connack[4..], 0x27),
        Some(1024),
        "CONNACK Maximum Packet Size: {connack:02x?}"
    );
    c.send(&publish_v5(0x30, b"t", None, &[], &[0u8; 2000]))
        .await;
    expect_disconnect(&mut c, 0x95).await;
}

/// A topic name that is not well-formed UTF-8 makes the packet malformed (1.5.4-1): DISCONNECT 0x81.
#[tokio::test]
async fn mqtt_1_5_4_1_ill_formed_utf8_topic() {
    let broker = Broker::start().await;
    for topic in [&[b'a', 0xC3, 0x28][..], &[b'a', 0x00, b'b'][..]] {
        let mut c = v5_session(&broker, b"utf8").await;
        c.send(&publish_v5(0x30, topic, None, &[], b"x")).await;
        expect_disconnect(&mut c, 0x81).await;
    }
}

/// More unacknowledged QoS 2 PUBLISHes than the broker's Receive Maximum: DISCONNECT 0x93 (3.3.4-9).
#[tokio::test]
async fn mqtt_3_3_4_9_receive_maximum_exceeded() {
    let broker = Broker::start_with(|c| c.limits.receive_maximum = 2).await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(5, b"flood")).await;
    let connack = c.recv_packet().await;
    assert_eq!(
        property_u16(&connack[4..], 0x21),
        Some(2),
        "CONNACK Receive Maximum: {connack:02x?}"
    );
    for id in 1..=2u16 {
        c.send(&publish_v5(0x34, b"t", Some(id), &[], b"x")).await;
        let pubrec = c.recv_packet().await;
        // PUBREC for this packet id, with a success reason (0x00, or 0x10 No matching subscribers).
        assert_eq!(
            (pubrec[0], &pubrec[2..4]),
            (0x50, &id.to_be_bytes()[..]),
            "PUBREC: {pubrec:02x?}"
        );
        assert!(
            pubrec.len() == 4 || pubrec[4] < 0x80,
            "PUBREC: {pubrec:02x?}"
        );
    }
    c.send(&publish_v5(0x34, b"t", Some(3), &[], b"x")).await;
    expect_disconnect(&mut c, 0x93).await;
}

// ---- QoS flows --------------------------------------------------------------------------------------------

/// QoS 2: a PUBLISH resent (DUP) before PUBREL is not delivered twice (4.3.3-10 / exactly once), and PUBREL
/// gets PUBCOMP.
#[tokio::test]
async fn mqtt_4_3_3_qos2_duplicate_delivered_once() {
    let broker = Broker::start().await;
    let mut sub = v311_session(&broker, b"sub").await;
    sub.send(&subscribe_v311(1, b"q2", 0)).await;
    assert_eq!(sub.recv_exact(5).await, [0x90, 0x03, 0x00, 0x01, 0x00]);

    let mut publisher = v311_session(&broker, b"pub").await;
    publisher
        .send(&publish_v311(0x34, b"q2", Some(7), b"once"))
        .await;
    assert_eq!(
        publisher.recv_exact(4).await,
        [0x50, 0x02, 0x00, 0x07],
        "PUBREC"
    );
    // The same message again, DUP set.
    publisher
        .send(&publish_v311(0x3C, b"q2", Some(7), b"once"))
        .await;
    assert_eq!(
        publisher.recv_exact(4).await,
        [0x50, 0x02, 0x00, 0x07],
        "PUBREC for the duplicate"
    );
    publisher.send(&[0x62, 0x02, 0x00, 0x07]).await;
    assert_eq!(
        publisher.recv_exact(4).await,
        [0x70, 0x02, 0x00, 0x07],
        "PUBCOMP"
    );

    assert_eq!(
        sub.recv_packet().await,
        publish_v311(0x30, b"q2", None, b"once")
    );
    sub.expect_open_for(Duration::from_millis(500)).await;
}

/// An unacknowledged QoS 1 message is resent with DUP 1 and the same packet identifier when the session
/// resumes (4.4.0-1, 3.3.1-1).
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_qos1_resent_on_resume() {
    let broker = Broker::start().await;
    let mut first = Conn::open(broker.addr).await;
    first.send(&connect(4, 0x00, 60, b"resume", &[])).await;
    assert_eq!(first.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    first.send(&subscribe_v311(1, b"r1", 1)).await;
    assert_eq!(first.recv_exact(5).await, [0x90, 0x03, 0x00, 0x01, 0x01]);

    let mut publisher = v311_session(&broker, b"pub").await;
    publisher
        .send(&publish_v311(0x32, b"r1", Some(1), b"again"))
        .await;
    assert_eq!(
        publisher.recv_exact(4).await,
        [0x40, 0x02, 0x00, 0x01],
        "PUBACK"
    );

    let delivered = first.recv_packet().await;
    assert_eq!(delivered[0], 0x32, "QoS 1 PUBLISH, DUP 0: {delivered:02x?}");
    drop(first); // no PUBACK

    let mut second = Conn::open(broker.addr).await;
    second.send(&connect(4, 0x00, 60, b"resume", &[])).await;
    assert_eq!(
        second.recv_exact(4).await,
        [0x20, 0x02, 0x01, 0x00],
        "CONNACK session present"
    );
    let resent = second.recv_packet().await;
    let mut expected = delivered.clone();
    expected[0] = 0x3A; // DUP 1
    assert_eq!(resent, expected, "the same PUBLISH with DUP set");
    let id = &resent[2 + 2 + 2..2 + 2 + 2 + 2];
    second.send(&[0x40, 0x02, id[0], id[1]]).await;
    second.expect_open_for(Duration::from_millis(500)).await;
}

/// MQTT 3.1 ("MQIsdp", level 3) is accepted: CONNACK 0x00.
#[tokio::test]
async fn mqtt_3_1_protocol_level_3_accepted() {
    let broker = Broker::start().await;
    let mut c = Conn::open(broker.addr).await;
    c.send(&simple_connect(3, b"old-client")).await;
    assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    c.send(&[0xC0, 0x00]).await;
    assert_eq!(c.recv_exact(2).await, [0xD0, 0x00]);
}

// ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------------

/// SUBSCRIBE without any filter is a Protocol Error (3.8.3-2): DISCONNECT 0x82.
#[tokio::test]
async fn mqtt_3_8_3_2_subscribe_without_filters() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"nosub").await;
    c.send(&packet(0x82, &[0x00, 0x01, 0x00])).await;
    expect_disconnect(&mut c, 0x82).await;
}

/// UNSUBSCRIBE without any filter is a Protocol Error (3.10.3-2): DISCONNECT 0x82.
#[tokio::test]
async fn mqtt_3_10_3_2_unsubscribe_without_filters() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"nounsub").await;
    c.send(&packet(0xA2, &[0x00, 0x01, 0x00])).await;
    expect_disconnect(&mut c, 0x82).await;
}

/// An invalid filter is refused in SUBACK with 0x8F Topic Filter invalid, the connection stays (3.8.4-6):
/// the other filter of the same SUBSCRIBE is granted.
#[tokio::test]
async fn mqtt_4_7_1_invalid_filter_in_suback() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"badfilter").await;
    let mut body = vec![0x00, 0x07, 0x00];
    body.extend(string(b"a/#/b"));
    body.push(0x01);
    body.extend(string(b"ok/+"));
    body.push(0x01);
    c.send(&packet(0x82, &body)).await;
    let ack = c.recv_packet().await;
    assert_eq!(ack[0], 0x90, "SUBACK expected: {ack:02x?}");
    assert_eq!(&ack[2..4], &[0x00, 0x07], "packet id echoed");
    let props_len = usize::from(ack[4]);
    assert_eq!(
        &ack[5 + props_len..],
        &[0x8F, 0x01],
        "reason codes: {ack:02x?}"
    );
    c.send(&[0xC0, 0x00]).await;
    assert_eq!(
        c.recv_exact(2).await,
        [0xD0, 0x00],
        "connection still usable"
    );
}

/// No Local on a shared subscription is a Protocol Error (3.8.3-4): DISCONNECT 0x82.
#[tokio::test]
async fn mqtt_3_8_3_4_no_local_on_shared_subscription() {
    let broker = Broker::start().await;
    let mut c = v5_session(&broker, b"sharednl").await;
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend(string(b"$share/g/t"));
    body.push(0x05); // QoS 1 + No Local
    c.send(&packet(0x82, &body)).await;
    expect_disconnect(&mut c, 0x82).await;
}

// ---- takeover ---------------------------------------------------------------------------------------------

/// Session takeover: the existing connection gets DISCONNECT 0x8E, then is closed (3.1.4-3).
#[tokio::test]
async fn mqtt_3_1_4_3_takeover_disconnect_0x8e() {
    let broker = Broker::start().await;
    let mut first = v5_session(&broker, b"same").await;
    let _second = v5_session(&broker, b"same").await;
    expect_disconnect(&mut first, 0x8E).await;
}

// ---- property helpers -------------------------------------------------------------------------------------

/// Finds a property in a CONNACK property block that starts with its Variable Byte Integer length.
fn find_property(block: &[u8], id: u8) -> Option<&[u8]> {
    let (mut len, mut i, mut shift) = (0usize, 0usize, 0);
    loop {
        let b = *block.get(i)?;
        len |= usize::from(b & 0x7F) << shift;
        i += 1;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let props = block.get(i..i + len)?;
    let mut p = 0;
    while p < props.len() {
        let pid = props[p];
        p += 1;
        let size = match pid {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([props[p], props[p + 1]]))
            }
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([props[p], props[p + 1]]));
                k + 2 + usize::from(u16::from_be_bytes([props[p + k], props[p + k + 1]]))
            }
            other => panic!("unexpected CONNACK property {other:#04x}"),
        };
        if pid == id {
            return props.get(p..p + size);
        }
        p += size;
    }
    None
}

fn property_u16(block: &[u8], id: u8) -> Option<u16> {
    find_property(block, id).map(|v| u16::from_be_bytes([v[0], v[1]]))
}

fn property_u32(block: &[u8], id: u8) -> Option<u32> {
    find_property(block, id).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}
