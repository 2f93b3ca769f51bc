//! The malformed-input corpus: hostile or broken bytes, each answered as the spec says, without a panic, and
//! followed by a check that the broker still serves a fresh client. Then slow and idle sockets, which must
//! not pile up.
//!
//! Each test covers one normative statement (named as in `raw_protocol.rs`: `mqtt_<section>_<n>`, MQTT
//! 3.1.1 numbering where the statement is in both versions, otherwise MQTT 5.0's) with a table of [`Case`]s
//! for both versions:
//! - MQTT 3.1.1 and anything before CONNECT: the connection is closed without an answer (3.1.1 has no way
//!   to tell the client why).
//! - MQTT 5.0 after CONNACK: DISCONNECT with the reason code the spec names (0x81 Malformed Packet, 0x82
//!   Protocol Error, ...), then the close (4.13.1).
//! - A malformed 5.0 CONNECT: the close, optionally after a CONNACK with the reason code (5.0 3.1.4-1 allows
//!   both).

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use wasp::config::Config;
use wasp_tests::Broker;
use wasp_tests::raw::{
    Conn, connect, expect_disconnect, packet, publish_v5, publish_v311, remaining_length,
    simple_connect, string, subscribe_v311, v5_session, v311_session,
};

// ---- the table runner -------------------------------------------------------------------------------------

/// How the connection is opened before the bad bytes are sent.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// A bare socket: the bytes are the first thing the broker reads.
    Fresh,
    /// After a successful MQTT 3.1.1 CONNECT.
    V311,
    /// After a successful MQTT 5.0 CONNECT.
    V5,
}

/// What the broker must do with the bad bytes.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Close the connection without sending anything.
    Close,
    /// Send DISCONNECT with this reason code, then close.
    Disconnect(u8),
    /// A malformed 5.0 CONNECT: close, with or without a CONNACK carrying this reason code first.
    RefuseConnect(u8),
}

/// One bad input.
struct Case {
    what: &'static str,
    start: Start,
    bytes: Vec<u8>,
    answer: Answer,
}

/// A bad packet on a 3.1.1 connection: closed.
fn v311(what: &'static str, bytes: Vec<u8>) -> Case {
    Case {
        what,
        start: Start::V311,
        bytes,
        answer: Answer::Close,
    }
}

/// A bad packet on a 5.0 connection: DISCONNECT `reason`.
fn v5(what: &'static str, bytes: Vec<u8>, reason: u8) -> Case {
    Case {
        what,
        start: Start::V5,
        bytes,
        answer: Answer::Disconnect(reason),
    }
}

/// Bad first bytes (a 3.x CONNECT, or no CONNECT at all): closed.
fn first(what: &'static str, bytes: Vec<u8>) -> Case {
    Case {
        what,
        start: Start::Fresh,
        bytes,
        answer: Answer::Close,
    }
}

/// A bad 5.0 CONNECT: closed, perhaps after CONNACK `reason`.
fn connect_v5(what: &'static str, bytes: Vec<u8>, reason: u8) -> Case {
    Case {
        what,
        start: Start::Fresh,
        bytes,
        answer: Answer::RefuseConnect(reason),
    }
}

/// Panics seen on each thread, by thread name. `#[tokio::test]` runs the broker's tasks on the test's own
/// thread (a current-thread runtime), so a connection task that panics is recorded under the test's name
/// even though tokio catches the panic and only that connection dies.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How many panics were recorded on the current thread.
fn panics_here() -> usize {
    let this = std::thread::current().name().unwrap_or("").to_owned();
    let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    panics.iter().filter(|t| **t == this).count()
}

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(thread);
            default(info);
        }));
    });
}

/// A new client can still connect and is answered: the bad input harmed only its own connection.
async fn still_serves(broker: &Broker) {
    let mut c = v311_session(broker, b"fresh-after-bad-input").await;
    c.send(&[0xC0, 0x00]).await;
    assert_eq!(c.recv_exact(2).await, [0xD0, 0x00], "PINGRESP");
    c.send(&[0xE0, 0x00]).await;
    c.expect_closed().await;
}

/// Runs every case against one broker with the default configuration.
async fn check(cases: Vec<Case>) {
    check_with(|_| {}, cases).await
}

/// Runs every case against one broker configured by `configure`: opens the connection, sends the bytes,
/// checks the answer and that nothing panicked, then that a fresh client is served.
async fn check_with(configure: impl FnOnce(&mut Config), cases: Vec<Case>) {
    record_panics();
    let panics_before = panics_here();
    let broker = Broker::start_with(configure).await;
    for (i, case) in cases.into_iter().enumerate() {
        // Printed only when the test fails: names the case the assertion below is about.
        eprintln!(
            "case {i}: {} ({:?}, {:?})",
            case.what, case.start, case.answer
        );
        let id = format!("bad-input-{i}");
        let mut c = match case.start {
            Start::Fresh => Conn::open(broker.addr).await,
            Start::V311 => v311_session(&broker, id.as_bytes()).await,
            Start::V5 => v5_session(&broker, id.as_bytes()).await,
        };
        c.send(&case.bytes).await;
        match case.answer {
            Answer::Close => c.expect_closed().await,
            Answer::Disconnect(reason) => expect_disconnect(&mut c, reason).await,
            Answer::RefuseConnect(reason) => {
                if let Some(ack) = c.recv_packet_or_closed().await {
                    assert_eq!(
                        (ack[0], ack.get(3)),
                        (0x20, Some(&reason)),
                        "{}: a CONNACK with reason {reason:#04x} or nothing, got {ack:02x?}",
                        case.what
                    );
                    c.expect_closed().await;
                }
            }
        }
        assert_eq!(
            panics_here(),
            panics_before,
            "the broker panicked on {:?} (see the output above)",
            case.what
        );
        still_serves(&broker).await;
    }
}

// ---- packet builders --------------------------------------------------------------------------------------

/// The two versions' PUBLISH with one builder: 5.0 gets an empty property block.
fn publish(v5: bool, first: u8, topic: &[u8], packet_id: Option<u16>) -> Vec<u8> {
    if v5 {
        publish_v5(first, topic, packet_id, &[], b"x")
    } else {
        publish_v311(first, topic, packet_id, b"x")
    }
}

/// SUBSCRIBE (`first` carries the flags) to one filter; 5.0 gets the property block `properties`.
fn subscribe(v5: bool, first: u8, packet_id: u16, filter: &[u8], options: u8) -> Vec<u8> {
    subscribe_with(v5, first, packet_id, &[], filter, options)
}

fn subscribe_with(
    v5: bool,
    first: u8,
    packet_id: u16,
    properties: &[u8],
    filter: &[u8],
    options: u8,
) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.extend(remaining_length(properties.len()));
        body.extend_from_slice(properties);
    }
    body.extend(string(filter));
    body.push(options);
    packet(first, &body)
}

/// UNSUBSCRIBE (`first` carries the flags) from one filter.
fn unsubscribe(v5: bool, first: u8, packet_id: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend(string(filter));
    packet(first, &body)
}

/// A 5.0 CONNECT with the property block `properties`, `flags`, client id and the rest of the payload.
fn connect_v5_with(properties: &[u8], flags: u8, client_id: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, flags, 0, 60]);
    body.extend(remaining_length(properties.len()));
    body.extend_from_slice(properties);
    body.extend(string(client_id));
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// CONNECT with a Will (`flags` holds the Will QoS / Retain bits besides the Will Flag and clean start);
/// 5.0 Wills get the property block `will_properties`.
fn connect_with_will(level: u8, flags: u8, will_properties: &[u8], topic: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    if level == 5 {
        payload.extend(remaining_length(will_properties.len()));
        payload.extend_from_slice(will_properties);
    }
    payload.extend(string(topic));
    payload.extend(string(b"gone"));
    connect(level, 0x02 | 0x04 | flags, 60, b"will", &payload)
}

/// CONNECT with a user name (and no password).
fn connect_with_user(level: u8, user: &[u8]) -> Vec<u8> {
    connect(level, 0x02 | 0x80, 60, b"user", &string(user))
}

/// A UTF-8 string property (identifier `id`) holding `value`.
fn string_property(id: u8, value: &[u8]) -> Vec<u8> {
    let mut p = vec![id];
    p.extend(string(value));
    p
}

/// A User Property `key` = `value`.
fn user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = string_property(0x26, key);
    p.extend(string(value));
    p
}

/// A property block holding `property` twice.
fn twice(property: &[u8]) -> Vec<u8> {
    property.repeat(2)
}

/// Ill-formed UTF-8: a lone continuation byte after a lead byte, an encoded surrogate (U+D800) and an
/// overlong encoding of '/'.
const ILL_FORMED: [&[u8]; 3] = [b"a\xC3\x28", b"a\xED\xA0\x80", b"a\xC0\xAF"];

// ---- remaining length -------------------------------------------------------------------------------------

/// A Remaining Length must fit in four bytes (3.1.1 2.2.3, 5.0 1.5.5), in the fewest bytes (5.0 1.5.5-1),
/// and agree with the fields it covers: a packet that ends inside a field or has bytes after its last one is
/// malformed.
#[tokio::test]
async fn mqtt_2_2_3_bad_remaining_length() {
    let five_bytes = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    check(vec![
        v311("Remaining Length of five bytes", five_bytes.clone()),
        v5("Remaining Length of five bytes", five_bytes.clone(), 0x81),
        first("CONNECT with a five-byte Remaining Length", {
            let mut p = vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
            p.extend(&simple_connect(4, b"rl")[2..]);
            p
        }),
        v5(
            "Remaining Length 0 in two bytes (80 00)",
            vec![0xC0, 0x80, 0x00],
            0x81,
        ),
        v311(
            "PUBLISH ending inside its topic",
            vec![0x32, 0x03, 0x00, 0x05, b'a'],
        ),
        v5(
            "PUBLISH ending inside its topic",
            vec![0x32, 0x03, 0x00, 0x05, b'a'],
            0x81,
        ),
        v311("PUBACK ending inside its packet id", vec![0x40, 0x01, 0x00]),
        v5(
            "PUBACK ending inside its packet id",
            vec![0x40, 0x01, 0x00],
            0x81,
        ),
        v5(
            "PUBLISH whose property length exceeds the packet",
            vec![0x30, 0x05, 0x00, 0x01, b't', 0x09, 0x01],
            0x81,
        ),
        v311("PINGREQ with one byte of body", vec![0xC0, 0x01, 0x00]),
        v5(
            "PINGREQ with one byte of body",
            vec![0xC0, 0x01, 0x00],
            0x81,
        ),
        v311("PUBREL of three bytes", vec![0x62, 0x03, 0x00, 0x01, 0x00]),
    ])
    .await;
}

// ---- fixed header flags -----------------------------------------------------------------------------------

/// Reserved fixed-header flag bits must have the listed values (3.1.1 2.2.2-1, closed per 2.2.2-2; 5.0
/// 2.1.3-1, a Malformed Packet): SUBSCRIBE, UNSUBSCRIBE and PUBREL (3.8.1-1, 3.10.1-1, 3.6.1-1) need 0010,
/// every other non-PUBLISH packet 0000, CONNECT included.
#[tokio::test]
async fn mqtt_2_2_2_2_reserved_fixed_header_flags() {
    let mut cases = Vec::new();
    for v5_conn in [false, true] {
        let packets: [(&'static str, Vec<u8>); 8] = [
            ("SUBSCRIBE flags 0000", subscribe(v5_conn, 0x80, 1, b"a", 0)),
            ("SUBSCRIBE flags 0011", subscribe(v5_conn, 0x83, 1, b"a", 0)),
            (
                "UNSUBSCRIBE flags 0000",
                unsubscribe(v5_conn, 0xA0, 1, b"a"),
            ),
            (
                "UNSUBSCRIBE flags 1010",
                unsubscribe(v5_conn, 0xAA, 1, b"a"),
            ),
            ("PUBREL flags 0000", vec![0x60, 0x02, 0x00, 0x01]),
            ("PUBACK flags 0010", vec![0x42, 0x02, 0x00, 0x01]),
            ("PINGREQ flags 0001", vec![0xC1, 0x00]),
            ("PUBCOMP flags 0100", vec![0x74, 0x02, 0x00, 0x01]),
        ];
        for (what, bytes) in packets {
            cases.push(if v5_conn {
                v5(what, bytes, 0x81)
            } else {
                v311(what, bytes)
            });
        }
    }
    cases.push(v5("AUTH flags 0001", vec![0xF1, 0x00], 0x81));
    cases.push(v5("DISCONNECT flags 1000", vec![0xE8, 0x00], 0x81));
    let mut connect_flags = simple_connect(4, b"hdr");
    connect_flags[0] = 0x12;
    cases.push(first("3.1.1 CONNECT flags 0010", connect_flags));
    let mut connect_flags = simple_connect(5, b"hdr");
    connect_flags[0] = 0x18;
    cases.push(connect_v5("5.0 CONNECT flags 1000", connect_flags, 0x81));
    check(cases).await;
}

/// The reserved bit of CONNECT's Connect Flags must be 0 (3.1.2-3; 5.0: a Malformed Packet).
#[tokio::test]
async fn mqtt_3_1_2_3_connect_reserved_flag() {
    check(vec![
        first("3.1.1 CONNECT flags 0x03", connect(4, 0x03, 60, b"r", &[])),
        first("3.1 CONNECT flags 0x03", connect(3, 0x03, 60, b"r", &[])),
        connect_v5(
            "5.0 CONNECT flags 0x03",
            connect(5, 0x03, 60, b"r", &[]),
            0x81,
        ),
    ])
    .await;
}

// ---- UTF-8 ------------------------------------------------------------------------------------------------

/// UTF-8 strings must be well-formed (3.1.1 1.5.3-1, closed; 5.0 1.5.4-1, a Malformed Packet) in every
/// field: topic name, client identifier, user name, Will topic, topic filters, and 5.0 string properties.
#[tokio::test]
async fn mqtt_1_5_3_1_ill_formed_utf8() {
    check(utf8_cases(&ILL_FORMED)).await;
}

/// UTF-8 strings must not contain U+0000 (3.1.1 1.5.3-2, closed; 5.0 1.5.4-2, a Malformed Packet), in the
/// same fields.
#[tokio::test]
async fn mqtt_1_5_3_2_null_character() {
    check(utf8_cases(&[b"a\0b"])).await;
}

/// One case per string field and version for each bad string.
fn utf8_cases(bad: &[&'static [u8]]) -> Vec<Case> {
    let mut cases = Vec::new();
    for &s in bad {
        cases.extend([
            v311("PUBLISH topic", publish(false, 0x30, s, None)),
            v5("PUBLISH topic", publish(true, 0x30, s, None), 0x81),
            v311("SUBSCRIBE filter", subscribe(false, 0x82, 1, s, 0)),
            v5("SUBSCRIBE filter", subscribe(true, 0x82, 1, s, 0), 0x81),
            v311("UNSUBSCRIBE filter", unsubscribe(false, 0xA2, 1, s)),
            v5("UNSUBSCRIBE filter", unsubscribe(true, 0xA2, 1, s), 0x81),
            first("3.1.1 client identifier", simple_connect(4, s)),
            connect_v5("5.0 client identifier", simple_connect(5, s), 0x81),
            first("3.1.1 user name", connect_with_user(4, s)),
            connect_v5("5.0 user name", connect_with_user(5, s), 0x81),
            first("3.1.1 Will topic", connect_with_will(4, 0, &[], s)),
            connect_v5("5.0 Will topic", connect_with_will(5, 0, &[], s), 0x81),
            v5(
                "PUBLISH Content Type property",
                publish_v5(0x30, b"t", None, &string_property(0x03, s), b"x"),
                0x81,
            ),
            v5(
                "PUBLISH User Property name",
                publish_v5(0x30, b"t", None, &user_property(s, b"v"), b"x"),
                0x81,
            ),
            v5(
                "PUBLISH User Property value",
                publish_v5(0x30, b"t", None, &user_property(b"k", s), b"x"),
                0x81,
            ),
            v5(
                "PUBACK Reason String property",
                {
                    let props = string_property(0x1F, s);
                    let mut body = vec![0x00, 0x01, 0x00];
                    body.extend(remaining_length(props.len()));
                    body.extend(props);
                    packet(0x40, &body)
                },
                0x81,
            ),
            connect_v5(
                "CONNECT Authentication Method property",
                connect_v5_with(&string_property(0x15, s), 0x02, b"auth", &[]),
                0x81,
            ),
            connect_v5(
                "Will Content Type property",
                connect_with_will(5, 0, &string_property(0x03, s), b"w"),
                0x81,
            ),
        ]);
    }
    cases
}

// ---- topic names ------------------------------------------------------------------------------------------

/// Topic names are at least one character long (4.7.3-1): 3.1.1 closes; in 5.0 an empty PUBLISH topic
/// without a Topic Alias is a Protocol Error (5.0 3.3.2.1, 0x82), an empty Will topic refuses the
/// CONNECT.
#[tokio::test]
async fn mqtt_4_7_3_1_zero_length_topic() {
    check(vec![
        v311(
            "empty PUBLISH topic, QoS 0",
            publish(false, 0x30, b"", None),
        ),
        v311(
            "empty PUBLISH topic, QoS 1",
            publish(false, 0x32, b"", Some(1)),
        ),
        v5(
            "empty PUBLISH topic, no alias",
            publish(true, 0x30, b"", None),
            0x82,
        ),
        v5(
            "empty PUBLISH topic, QoS 2, no alias",
            publish(true, 0x34, b"", Some(1)),
            0x82,
        ),
        first("3.1.1 empty Will topic", connect_with_will(4, 0, &[], b"")),
        connect_v5(
            "5.0 empty Will topic",
            connect_with_will(5, 0, &[], b""),
            0x90,
        ),
    ])
    .await;
}

/// Wildcards are not allowed in topic names (4.7.0-1, 3.3.2-2): PUBLISH (5.0: 0x90 Topic Name invalid) and
/// Will topics; a '+' or '#' inside a level counts too.
#[tokio::test]
async fn mqtt_4_7_0_1_wildcards_in_topic_names() {
    let mut cases = Vec::new();
    for topic in [&b"+"[..], b"#", b"a/+/b", b"sport+", b"a/b#"] {
        cases.push(v311(
            "wildcard in PUBLISH topic",
            publish(false, 0x30, topic, None),
        ));
        cases.push(v5(
            "wildcard in PUBLISH topic",
            publish(true, 0x32, topic, Some(1)),
            0x90,
        ));
    }
    cases.push(first(
        "3.1.1 wildcard in Will topic",
        connect_with_will(4, 0, &[], b"a/#"),
    ));
    cases.push(connect_v5(
        "5.0 wildcard in Will topic",
        connect_with_will(5, 0, &[], b"a/+"),
        0x90,
    ));
    check(cases).await;
}

// ---- QoS 3 ------------------------------------------------------------------------------------------------

/// QoS 3 exists nowhere: PUBLISH (3.3.1-4, 0x81), Will QoS (3.1.2-14; 5.0: a Malformed Packet), a
/// SUBSCRIBE's requested QoS (3.8.3-4 closes; 5.0 3.8.3.1: a Protocol Error, 0x82) and the reserved bits of
/// its options byte (3.8.3-4; 5.0 3.8.3-5, a Malformed Packet).
#[tokio::test]
async fn mqtt_3_3_1_4_qos_3() {
    check(vec![
        v311("PUBLISH QoS 3", publish(false, 0x36, b"a", Some(1))),
        v5("PUBLISH QoS 3", publish(true, 0x36, b"a", Some(1)), 0x81),
        v5(
            "PUBLISH QoS 3, DUP",
            publish(true, 0x3E, b"a", Some(1)),
            0x81,
        ),
        first("3.1.1 Will QoS 3", connect_with_will(4, 0x18, &[], b"w")),
        connect_v5(
            "5.0 Will QoS 3",
            connect_with_will(5, 0x18, &[], b"w"),
            0x81,
        ),
        v311("SUBSCRIBE QoS 3", subscribe(false, 0x82, 1, b"a", 3)),
        v5(
            "SUBSCRIBE Maximum QoS 3",
            subscribe(true, 0x82, 1, b"a", 3),
            0x82,
        ),
        v311(
            "SUBSCRIBE reserved option bits",
            subscribe(false, 0x82, 1, b"a", 0x04),
        ),
        v5(
            "SUBSCRIBE reserved option bits",
            subscribe(true, 0x82, 1, b"a", 0x40),
            0x81,
        ),
        v5(
            "SUBSCRIBE Retain Handling 3",
            subscribe(true, 0x82, 1, b"a", 0x30),
            0x82,
        ),
    ])
    .await;
}

// ---- properties -------------------------------------------------------------------------------------------

/// A property other than User Property and Subscription Identifier (in PUBLISH) may appear once: "It is a
/// Protocol Error to include the ... more than once" (5.0 2.2.2.2 and each property's section): 0x82.
#[tokio::test]
async fn mqtt5_2_2_2_2_duplicate_property() {
    let payload_format = [0x01, 0x01];
    let expiry = [0x02, 0x00, 0x00, 0x00, 0x0A];
    let alias = [0x23, 0x00, 0x01];
    let session_expiry = [0x11, 0x00, 0x00, 0x00, 0x0A];
    let receive_maximum = [0x21, 0x00, 0x0A];
    let will_delay = [0x18, 0x00, 0x00, 0x00, 0x01];
    let subscription_id = [0x0B, 0x01];
    check(vec![
        v5(
            "PUBLISH Payload Format Indicator twice",
            publish_v5(0x30, b"t", None, &twice(&payload_format), b"x"),
            0x82,
        ),
        v5(
            "PUBLISH Message Expiry Interval twice",
            publish_v5(0x32, b"t", Some(1), &twice(&expiry), b"x"),
            0x82,
        ),
        v5(
            "PUBLISH Topic Alias twice",
            publish_v5(0x30, b"t", None, &twice(&alias), b"x"),
            0x82,
        ),
        v5(
            "PUBLISH Content Type twice",
            publish_v5(0x30, b"t", None, &twice(&string_property(0x03, b"c")), b"x"),
            0x82,
        ),
        v5(
            "PUBLISH Response Topic twice",
            publish_v5(0x30, b"t", None, &twice(&string_property(0x08, b"r")), b"x"),
            0x82,
        ),
        v5(
            "SUBSCRIBE Subscription Identifier twice",
            subscribe_with(true, 0x82, 1, &twice(&subscription_id), b"a", 0),
            0x82,
        ),
        v5(
            "DISCONNECT Session Expiry Interval twice",
            {
                let mut body = vec![0x00, 10];
                body.extend(twice(&session_expiry));
                packet(0xE0, &body)
            },
            0x82,
        ),
        connect_v5(
            "CONNECT Session Expiry Interval twice",
            connect_v5_with(&twice(&session_expiry), 0x02, b"dup", &[]),
            0x82,
        ),
        connect_v5(
            "CONNECT Receive Maximum twice",
            connect_v5_with(&twice(&receive_maximum), 0x02, b"dup", &[]),
            0x82,
        ),
        connect_v5(
            "Will Delay Interval twice",
            connect_with_will(5, 0, &twice(&will_delay), b"w"),
            0x82,
        ),
    ])
    .await;
}

/// Where a property may appear and what values it may take (5.0 2.2.2.2): an identifier not valid for the
/// packet is a Malformed Packet (0x81), a value outside the property's range a Protocol Error (0x82).
#[tokio::test]
async fn mqtt5_2_2_2_2_property_placement_and_values() {
    check(vec![
        v5(
            "PUBLISH with Session Expiry Interval",
            publish_v5(0x30, b"t", None, &[0x11, 0, 0, 0, 1], b"x"),
            0x81,
        ),
        v5(
            "PUBLISH with an undefined property 0x7F",
            publish_v5(0x30, b"t", None, &[0x7F, 0x00], b"x"),
            0x81,
        ),
        v5(
            "PUBLISH Payload Format Indicator 2",
            publish_v5(0x30, b"t", None, &[0x01, 0x02], b"x"),
            0x82,
        ),
        v5(
            "SUBSCRIBE Subscription Identifier 0",
            subscribe_with(true, 0x82, 1, &[0x0B, 0x00], b"a", 0),
            0x82,
        ),
        v5(
            "PUBLISH from the client with a Subscription Identifier",
            publish_v5(0x30, b"t", None, &[0x0B, 0x01], b"x"),
            0x82,
        ),
        connect_v5(
            "CONNECT Receive Maximum 0",
            connect_v5_with(&[0x21, 0x00, 0x00], 0x02, b"rm0", &[]),
            0x82,
        ),
        connect_v5(
            "CONNECT Maximum Packet Size 0",
            connect_v5_with(&[0x27, 0, 0, 0, 0], 0x02, b"mps0", &[]),
            0x82,
        ),
        connect_v5(
            "CONNECT Request Problem Information 2",
            connect_v5_with(&[0x17, 0x02], 0x02, b"rpi2", &[]),
            0x82,
        ),
        connect_v5(
            "CONNECT with Topic Alias",
            connect_v5_with(&[0x23, 0x00, 0x01], 0x02, b"alias", &[]),
            0x81,
        ),
    ])
    .await;
}

/// The control for the duplicate-property test: User Property may appear more than once (5.0 3.3.2.3.7),
/// and is delivered in order.
#[tokio::test]
async fn mqtt5_3_3_2_3_7_user_property_may_repeat() {
    let broker = Broker::start().await;
    let mut sub = v5_session(&broker, b"up-sub").await;
    sub.send(&subscribe(true, 0x82, 1, b"up/t", 0)).await;
    assert_eq!(
        sub.recv_packet().await,
        [0x90, 0x04, 0x00, 0x01, 0x00, 0x00],
        "SUBACK"
    );

    let mut props = user_property(b"k", b"1");
    props.extend(user_property(b"k", b"2"));
    let mut publisher = v5_session(&broker, b"up-pub").await;
    publisher
        .send(&publish_v5(0x32, b"up/t", Some(9), &props, b"x"))
        .await;
    let ack = publisher.recv_packet().await;
    assert_eq!(
        &ack[..4],
        &[0x40, ack[1], 0x00, 0x09],
        "PUBACK for id 9: {ack:02x?}"
    );
    assert!(
        ack.len() == 4 || ack[4] < 0x80,
        "PUBACK success: {ack:02x?}"
    );
    assert_eq!(
        sub.recv_packet().await,
        publish_v5(0x30, b"up/t", None, &props, b"x"),
        "both user properties delivered in order"
    );
}

// ---- packet identifiers -----------------------------------------------------------------------------------

/// SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH need a non-zero Packet Identifier (3.1.1 2.3.1-1; 5.0
/// 2.2.1-3, a Protocol Error 0x82); so do the acknowledgements that carry one back.
#[tokio::test]
async fn mqtt_2_3_1_1_packet_id_zero() {
    let mut cases = Vec::new();
    for v5_conn in [false, true] {
        let packets: [(&'static str, Vec<u8>); 5] = [
            ("PUBLISH QoS 1, id 0", publish(v5_conn, 0x32, b"a", Some(0))),
            ("PUBLISH QoS 2, id 0", publish(v5_conn, 0x34, b"a", Some(0))),
            ("SUBSCRIBE id 0", subscribe(v5_conn, 0x82, 0, b"a", 0)),
            ("UNSUBSCRIBE id 0", unsubscribe(v5_conn, 0xA2, 0, b"a")),
            ("PUBREL id 0", vec![0x62, 0x02, 0x00, 0x00]),
        ];
        for (what, bytes) in packets {
            cases.push(if v5_conn {
                v5(what, bytes, 0x82)
            } else {
                v311(what, bytes)
            });
        }
    }
    check(cases).await;
}

// ---- connection state -------------------------------------------------------------------------------------

/// The first packet must be CONNECT (3.1.0-1): a PUBLISH (or anything else, or bytes of another protocol
/// sent to the MQTT port) first is closed without an answer.
#[tokio::test]
async fn mqtt_3_1_0_1_packets_before_connect() {
    check(vec![
        first("PUBLISH QoS 0", publish_v311(0x30, b"a", None, b"x")),
        first("PUBLISH QoS 1", publish_v311(0x32, b"a", Some(1), b"x")),
        first("SUBSCRIBE", subscribe_v311(1, b"#", 0)),
        first("UNSUBSCRIBE", unsubscribe(false, 0xA2, 1, b"a")),
        first("PUBACK", vec![0x40, 0x02, 0x00, 0x01]),
        first("PUBREL", vec![0x62, 0x02, 0x00, 0x01]),
        first("PINGREQ", vec![0xC0, 0x00]),
        first("DISCONNECT", vec![0xE0, 0x00]),
        first("AUTH", vec![0xF0, 0x00]),
        first("CONNACK", vec![0x20, 0x02, 0x00, 0x00]),
        first("reserved packet type 0", vec![0x00, 0x00]),
        first(
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        first(
            "a TLS ClientHello's first bytes",
            vec![
                0x16, 0x03, 0x01, 0x00, 0x2F, 0x01, 0x00, 0x00, 0x2B, 0x03, 0x03,
            ],
        ),
    ])
    .await;
}

/// A second CONNECT (3.1.0-2; 5.0: a Protocol Error, 0x82), and packets only a server sends (5.0: Protocol
/// Error), on an established connection.
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_and_server_packets() {
    check(vec![
        v311("second CONNECT", simple_connect(4, b"again")),
        v311("second CONNECT, 5.0", simple_connect(5, b"again")),
        v5("second CONNECT", simple_connect(5, b"again"), 0x82),
        v5("second CONNECT, 3.1.1", simple_connect(4, b"again"), 0x82),
        v311("CONNACK from the client", vec![0x20, 0x02, 0x00, 0x00]),
        v311("SUBACK from the client", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
        v311("PINGRESP from the client", vec![0xD0, 0x00]),
        v311("AUTH in 3.1.1", vec![0xF0, 0x00]),
        v5(
            "CONNACK from the client",
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            0x82,
        ),
        v5("PINGRESP from the client", vec![0xD0, 0x00], 0x82),
    ])
    .await;
}

// ---- size -------------------------------------------------------------------------------------------------

/// Packets above the broker's maximum packet size: 5.0 DISCONNECT 0x95 Packet too large (3.2.2.3.6, 4.13),
/// 3.1.1 closed. The limit applies as soon as a fixed header announces the size: the broker neither waits
/// for nor buffers the body, even before CONNECT and even for the largest Remaining Length.
#[tokio::test]
async fn mqtt_3_2_2_3_6_oversized_packets() {
    let big = publish_v311(0x30, b"t", None, &[b'x'; 2000]);
    // The fixed header of a PUBLISH announcing 268,435,455 bytes, none of which follow.
    let announced_only = vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    check_with(
        |c| c.limits.max_packet_size = 1024,
        vec![
            v311("PUBLISH of 2 KB", big),
            v5(
                "PUBLISH of 2 KB",
                publish_v5(0x30, b"t", None, &[], &[b'x'; 2000]),
                0x95,
            ),
            v311("PUBLISH announcing 256 MB", announced_only.clone()),
            v5("PUBLISH announcing 256 MB", announced_only, 0x95),
            first("3.1.1 CONNECT of 2 KB", {
                let mut c = simple_connect(4, &[b'c'; 2000]);
                c.truncate(600);
                c
            }),
            connect_v5(
                "5.0 CONNECT announcing 256 MB",
                vec![
                    0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 5,
                ],
                0x95,
            ),
        ],
    )
    .await;
}

// ---- slow and idle sockets --------------------------------------------------------------------------------

/// Many sockets that connect and never send anything are all closed at the CONNECT timeout: they do not
/// pile up.
#[tokio::test]
async fn idle_sockets_closed_after_connect_timeout() {
    const SOCKETS: usize = 50;
    let connect_timeout = Duration::from_millis(500);
    let broker = Broker::start_with(|c| c.limits.connect_timeout = connect_timeout).await;
    let start = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..SOCKETS {
        idle.push(Conn::open(broker.addr).await);
    }
    for c in &mut idle {
        c.expect_closed_within(Duration::from_secs(3)).await;
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after {elapsed:?}, before the CONNECT timeout"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "{SOCKETS} idle sockets took {elapsed:?} to be closed"
    );
    still_serves(&broker).await;
}

/// Slowloris: a CONNECT sent one byte at a time, slower than the CONNECT timeout allows, is cut off at the
/// CONNECT deadline, not when the trickle stops: bytes arriving do not move the deadline.
#[tokio::test]
async fn slow_connect_cut_off_at_connect_deadline() {
    let connect_timeout = Duration::from_millis(800);
    let broker = Broker::start_with(|c| c.limits.connect_timeout = connect_timeout).await;
    let connect = simple_connect(4, b"slowloris-client");
    let mut c = Conn::open(broker.addr).await;
    let start = Instant::now();
    let mut sent = 0;
    let closed = loop {
        if sent == connect.len() {
            break false;
        }
        c.send(&connect[sent..=sent]).await;
        sent += 1;
        // One byte every 100 ms: the whole CONNECT would take 3 s.
        if c.closed_within(Duration::from_millis(100)).await {
            break true;
        }
    };
    let elapsed = start.elapsed();
    assert!(
        closed,
        "the trickled CONNECT was never cut off ({sent} bytes in {elapsed:?})"
    );
    assert!(sent < connect.len(), "cut off only after the whole CONNECT");
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(2000),
        "cut off after {elapsed:?}, the CONNECT timeout is {connect_timeout:?}"
    );
    still_serves(&broker).await;
}

/// A connected client whose packet never completes is closed at 1.5 x keep alive (3.1.2-24): only whole
/// packets count as received, so neither a partial packet left hanging nor one trickled byte by byte keeps
/// the connection open.
#[tokio::test]
async fn mqtt_3_1_2_24_partial_packet_closed_at_keep_alive() {
    let broker = Broker::start().await;
    // The first bytes of a PUBLISH announcing 100 bytes.
    let partial = [0x30, 100, 0x00, 0x03, b'a', b'/', b'b', b'x'];
    for trickle in [false, true] {
        let mut c = Conn::open(broker.addr).await;
        c.send(&connect(4, 0x02, 1, b"half-open", &[])).await;
        assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
        let start = Instant::now();
        let closed = if trickle {
            let mut closed = false;
            for byte in partial {
                c.send(&[byte]).await;
                if c.closed_within(Duration::from_millis(300)).await {
                    closed = true;
                    break;
                }
            }
            closed || c.closed_within(Duration::from_secs(2)).await
        } else {
            c.send(&partial).await;
            c.closed_within(Duration::from_secs(3)).await
        };
        let elapsed = start.elapsed();
        assert!(closed, "trickle {trickle}: still open after {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(1300) && elapsed < Duration::from_millis(2500),
            "trickle {trickle}: closed after {elapsed:?}, keep alive 1 s allows 1.5 s"
        );
    }
    still_serves(&broker).await;
}
