//! Every normative rule the decoder enforces, each with a packet that breaks it, and the encoder's refusals.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use wasp_mqtt::*;

const V31: Option<ProtocolVersion> = Some(ProtocolVersion::V31);
const V311: Option<ProtocolVersion> = Some(ProtocolVersion::V311);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);
const MAX: u32 = u32::MAX;

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;
const TOPIC_INVALID: ReasonCode = ReasonCode::TopicNameInvalid;

/// A packet: the first byte, the remaining length, then `body`.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let b = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(body);
    out
}

fn decode_err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, MAX) {
        Err(e) => e,
        Ok(p) => panic!("expected an error, decoded {p:?}"),
    }
}

/// Asserts that `bytes` fail to decode with `code`, and that the message contains `needle`.
#[track_caller]
fn assert_fails(bytes: &[u8], version: Option<ProtocolVersion>, code: ReasonCode, needle: &str) {
    let e = decode_err(bytes, version);
    assert_eq!(e.reason_code(), code, "{e}");
    assert!(
        e.to_string().contains(needle),
        "message {:?} lacks {needle:?}",
        e.to_string()
    );
}

#[track_caller]
fn assert_decodes(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, MAX)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty());
    p
}

/// A 5.0 CONNECT body with `props` as its property block contents and client id "c".
fn connect_v5_body(flags: u8, props: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        flags,
        0,
        60,
        props.len() as u8,
    ];
    b.extend_from_slice(props);
    b.extend_from_slice(&[0, 1, b'c']);
    b.extend_from_slice(rest);
    b
}

fn connect_v311(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'c'];
    b.extend_from_slice(rest);
    frame(0x10, &b)
}

/// A 5.0 QoS 0 PUBLISH to "a" with the given property block contents.
fn publish_v5(props: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 1, b'a', props.len() as u8];
    b.extend_from_slice(props);
    b.extend_from_slice(b"payload");
    frame(0x30, &b)
}

// ---- Variable byte integers -------------------------------------------------------------------------------

#[test]
fn remaining_length_with_a_fifth_byte_is_malformed() {
    assert_fails(
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        V311,
        MALFORMED,
        "variable byte integer longer than 4 bytes",
    );
    // Detected as soon as the fourth byte shows a continuation, without waiting for the fifth.
    assert_fails(
        &[0x30, 0x80, 0x80, 0x80, 0x80],
        V311,
        MALFORMED,
        "remaining length",
    );
}

#[test]
fn remaining_length_not_in_shortest_form_is_malformed() {
    assert_fails(&[0xC0, 0x80, 0x00], V311, MALFORMED, "shortest form");
}

#[test]
fn property_length_with_a_fifth_byte_is_malformed() {
    let bytes = frame(0x30, &[0, 1, b'a', 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert_fails(
        &bytes,
        V5,
        MALFORMED,
        "property length: variable byte integer longer than 4 bytes",
    );
}

#[test]
fn property_length_exceeding_the_packet_is_malformed() {
    assert_fails(
        &frame(0x30, &[0, 1, b'a', 10, 0x23, 0, 1]),
        V5,
        MALFORMED,
        "property length exceeds the packet",
    );
    assert_fails(
        &frame(0x40, &[0, 1, 0x10, 4, 0x1F, 0]),
        V5,
        MALFORMED,
        "property length exceeds the packet",
    );
}

#[test]
fn property_value_running_past_the_property_block_is_malformed() {
    // Topic Alias needs two bytes but the block holds one (followed by payload bytes).
    assert_fails(
        &frame(0x30, &[0, 1, b'a', 2, 0x23, 0, 1, 2]),
        V5,
        MALFORMED,
        "packet ends inside Topic Alias",
    );
}

#[test]
fn subscription_identifier_rules() {
    assert_fails(
        &publish_v5(&[0x0B, 0]),
        V5,
        PROTOCOL,
        "property 0x0b Subscription Identifier has invalid value 0",
    );
    assert_fails(
        &publish_v5(&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]),
        V5,
        MALFORMED,
        "longer than 4 bytes",
    );
    // Repeatable in PUBLISH...
    let Packet::Publish(p) =
        assert_decodes(&publish_v5(&[0x0B, 1, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F]), V5)
    else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, [1, 268_435_455]);
    // ...but not in SUBSCRIBE.
    let bytes = frame(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]);
    assert_fails(
        &bytes,
        V5,
        PROTOCOL,
        "property 0x0b Subscription Identifier appears twice in SUBSCRIBE",
    );
    let bytes = frame(0x82, &[0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]);
    assert_fails(&bytes, V5, PROTOCOL, "invalid value 0 in SUBSCRIBE");
}

// ---- Fixed header -----------------------------------------------------------------------------------------

#[test]
fn reserved_flags_must_have_their_fixed_values() {
    // (first byte with wrong flags, a body that is otherwise valid)
    let cases: [(u8, &[u8]); 13] = [
        (0x11, &[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0]),
        (0x21, &[0, 0]),
        (0x41, &[0, 1]),
        (0x51, &[0, 1]),
        (0x60, &[0, 1]),
        (0x63, &[0, 1]),
        (0x71, &[0, 1]),
        (0x80, &[0, 1, 0, 1, b'a', 0]),
        (0x91, &[0, 1, 0]),
        (0xA0, &[0, 1, 0, 1, b'a']),
        (0xB8, &[0, 1]),
        (0xC4, &[]),
        (0xE2, &[]),
    ];
    for (first, body) in cases {
        let version = if first >> 4 == 1 { None } else { V311 };
        let e = decode_err(&frame(first, body), version);
        assert!(
            matches!(e, DecodeError::InvalidFlags { flags, .. } if flags == first & 0x0F),
            "{first:#x}: {e}"
        );
        assert_eq!(e.reason_code(), MALFORMED);
    }
    assert_fails(
        &[0xD1, 0],
        V5,
        MALFORMED,
        "PINGRESP: invalid fixed header flags",
    );
    assert_fails(
        &[0xF1, 0],
        V5,
        MALFORMED,
        "AUTH: invalid fixed header flags",
    );
    // The flags are checked from the first byte alone.
    assert_fails(
        &[0x60],
        V311,
        MALFORMED,
        "PUBREL: invalid fixed header flags 0b0000",
    );
}

#[test]
fn packet_type_0_is_reserved() {
    assert_fails(&[0x00, 0], V311, MALFORMED, "reserved packet type 0");
    assert_fails(&[0x00, 0], None, MALFORMED, "reserved packet type 0");
}

#[test]
fn auth_exists_only_in_5_0() {
    assert_fails(&[0xF0, 0], V311, MALFORMED, "AUTH exists only in MQTT 5.0");
    assert_fails(&[0xF0, 0], V31, MALFORMED, "reserved packet type 15");
    assert!(matches!(assert_decodes(&[0xF0, 0], V5), Packet::Auth(_)));
}

#[test]
fn only_connect_before_connect() {
    let e = decode_err(&[0xC0, 0], None);
    assert_eq!(e, DecodeError::ExpectedConnect { packet: "PINGREQ" });
    assert_eq!(e.reason_code(), PROTOCOL);
    assert_fails(
        &frame(0x30, &[0, 1, b'a']),
        None,
        PROTOCOL,
        "PUBLISH received before CONNECT",
    );
}

#[test]
fn packet_too_large_is_reported_as_soon_as_the_fixed_header_is_complete() {
    // A PUBLISH announcing 1000 bytes of which none has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    let e = decode(&mut buf, V5, 100).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            packet: "PUBLISH",
            size: 1003,
            max: 100
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
    // Exactly at the limit is fine.
    let bytes = frame(0x30, &[0, 1, b'a', b'x']);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(
        decode(&mut buf, V311, bytes.len() as u32)
            .unwrap()
            .is_some()
    );
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        decode(&mut buf, V311, bytes.len() as u32 - 1),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_are_malformed() {
    assert_fails(
        &[0xC0, 1, 0],
        V311,
        MALFORMED,
        "PINGREQ: 1 unexpected bytes",
    );
    assert_fails(
        &[0xE0, 1, 0],
        V311,
        MALFORMED,
        "DISCONNECT: 1 unexpected bytes",
    );
    assert_fails(
        &[0x40, 3, 0, 1, 0],
        V311,
        MALFORMED,
        "PUBACK: 1 unexpected bytes",
    );
    assert_fails(
        &[0xB0, 3, 0, 1, 0],
        V311,
        MALFORMED,
        "UNSUBACK: 1 unexpected bytes",
    );
    assert_fails(
        &[0x20, 3, 0, 0, 0],
        V311,
        MALFORMED,
        "CONNACK: 1 unexpected bytes",
    );
    assert_fails(
        &connect_v311(0x02, &[9]),
        None,
        MALFORMED,
        "CONNECT: 1 unexpected bytes",
    );
}

#[test]
fn truncated_bodies_are_malformed() {
    assert_fails(
        &[0x40, 1, 0],
        V311,
        MALFORMED,
        "PUBACK: packet ends inside packet identifier",
    );
    assert_fails(
        &frame(0x30, &[0, 5, b'a']),
        V311,
        MALFORMED,
        "PUBLISH: packet ends inside topic name",
    );
    assert_fails(
        &frame(0x32, &[0, 1, b'a', 0]),
        V311,
        MALFORMED,
        "packet identifier",
    );
    assert_fails(
        &frame(0x10, &[0, 4, b'M', b'Q']),
        None,
        MALFORMED,
        "protocol name",
    );
}

// ---- PUBLISH ----------------------------------------------------------------------------------------------

#[test]
fn publish_qos_3_is_malformed() {
    for v in [V311, V5] {
        assert_fails(
            &frame(0x36, &[0, 1, b'a', 0, 1]),
            v,
            MALFORMED,
            "PUBLISH: QoS 3",
        );
    }
}

#[test]
fn publish_qos_0_with_dup_is_malformed() {
    for v in [V311, V5] {
        assert_fails(
            &frame(0x38, &[0, 1, b'a']),
            v,
            MALFORMED,
            "DUP flag set on a QoS 0 message",
        );
    }
    // DUP with QoS 1 is fine.
    assert!(
        matches!(assert_decodes(&frame(0x3A, &[0, 1, b'a', 0, 1]), V311), Packet::Publish(p) if p.dup)
    );
}

#[test]
fn publish_packet_identifier_must_be_non_zero() {
    assert_fails(
        &frame(0x32, &[0, 1, b'a', 0, 0]),
        V311,
        PROTOCOL,
        "packet identifier is 0",
    );
    assert_fails(
        &frame(0x34, &[0, 1, b'a', 0, 0, 0]),
        V5,
        PROTOCOL,
        "packet identifier is 0",
    );
}

#[test]
fn publish_topic_with_wildcards_is_invalid() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+"] {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic);
        assert_fails(
            &frame(0x30, &body),
            V311,
            TOPIC_INVALID,
            "PUBLISH: topic name contains a wildcard",
        );
        body.push(0);
        assert_fails(
            &frame(0x30, &body),
            V5,
            TOPIC_INVALID,
            "PUBLISH: topic name contains a wildcard",
        );
    }
}

#[test]
fn publish_empty_topic() {
    // 3.x: always invalid.
    assert_fails(
        &frame(0x30, &[0, 0, b'x']),
        V311,
        TOPIC_INVALID,
        "topic name is empty",
    );
    // 5.0: a protocol error without a Topic Alias, fine with one.
    assert_fails(
        &frame(0x30, &[0, 0, 0, b'x']),
        V5,
        PROTOCOL,
        "topic name is empty and there is no Topic Alias",
    );
    assert!(matches!(
        assert_decodes(&frame(0x30, &[0, 0, 3, 0x23, 0, 1]), V5),
        Packet::Publish(_)
    ));
}

// ---- UTF-8 strings and binary data ------------------------------------------------------------------------

#[test]
fn strings_must_be_valid_utf8() {
    assert_fails(
        &frame(0x30, &[0, 2, b'a', 0xFF]),
        V311,
        MALFORMED,
        "PUBLISH: topic name is not valid UTF-8",
    );
    // An encoded surrogate (U+D800) is not valid UTF-8.
    assert_fails(
        &frame(0x30, &[0, 3, 0xED, 0xA0, 0x80]),
        V311,
        MALFORMED,
        "not valid UTF-8",
    );
    assert_fails(
        &frame(0xA2, &[0, 1, 0, 1, 0xC3]),
        V311,
        MALFORMED,
        "UNSUBSCRIBE: topic filter is not valid UTF-8",
    );
    assert_fails(
        &publish_v5(&[0x03, 0, 1, 0x80]),
        V5,
        MALFORMED,
        "PUBLISH: Content Type is not valid UTF-8",
    );
    assert_fails(
        &publish_v5(&[0x26, 0, 1, b'k', 0, 1, 0xFE]),
        V5,
        MALFORMED,
        "User Property value is not valid",
    );
}

#[test]
fn strings_must_not_contain_nul() {
    assert_fails(
        &frame(0x30, &[0, 2, b'a', 0]),
        V311,
        MALFORMED,
        "PUBLISH: topic name contains the null character",
    );
    assert_fails(
        &connect_v311(0x82, &[0, 2, b'u', 0]),
        None,
        MALFORMED,
        "CONNECT: User Name contains the null",
    );
    assert_fails(
        &frame(0x82, &[0, 1, 0, 1, 0, 0]),
        V311,
        MALFORMED,
        "SUBSCRIBE: topic filter contains the null",
    );
    assert_fails(
        &publish_v5(&[0x26, 0, 2, b'k', 0, 0, 1, b'v']),
        V5,
        MALFORMED,
        "PUBLISH: User Property name contains the null",
    );
    // Binary data may contain zero bytes.
    let Packet::Connect(c) = assert_decodes(&connect_v311(0xC2, &[0, 1, b'u', 0, 2, 0, 0]), None)
    else {
        panic!()
    };
    assert_eq!(c.password.as_deref(), Some(&[0u8, 0][..]));
}

// ---- CONNECT ----------------------------------------------------------------------------------------------

#[test]
fn connect_unsupported_protocol_is_its_own_error() {
    let cases: [(&[u8], u8, &str); 5] = [
        (b"MQTT", 3, "MQTT"),
        (b"MQTT", 6, "MQTT"),
        (b"MQIsdp", 4, "MQIsdp"),
        (b"MQIsdp", 5, "MQIsdp"),
        (b"HTTP", 4, "HTTP"),
    ];
    for (name, level, expect_name) in cases {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 2, 0, 60, 0, 1, b'c']);
        let e = decode_err(&frame(0x10, &body), None);
        assert_eq!(
            e,
            DecodeError::UnsupportedProtocol {
                name: expect_name.into(),
                level
            }
        );
        assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    }
}

#[test]
fn connect_reserved_flag_must_be_zero() {
    assert_fails(
        &connect_v311(0x03, &[]),
        None,
        MALFORMED,
        "CONNECT: reserved connect flag is set",
    );
    assert_fails(
        &frame(0x10, &connect_v5_body(0x03, &[], &[])),
        None,
        MALFORMED,
        "reserved connect flag",
    );
}

#[test]
fn connect_will_qos_3_is_malformed() {
    assert_fails(
        &connect_v311(0x1E, &[0, 1, b't', 0, 0]),
        None,
        MALFORMED,
        "CONNECT: Will QoS 3",
    );
}

#[test]
fn connect_will_qos_and_retain_need_the_will_flag() {
    assert_fails(
        &connect_v311(0x0A, &[]),
        None,
        MALFORMED,
        "Will QoS or Will Retain set without the Will Flag",
    );
    assert_fails(
        &connect_v311(0x22, &[]),
        None,
        MALFORMED,
        "Will QoS or Will Retain set without the Will Flag",
    );
    assert_fails(
        &frame(0x10, &connect_v5_body(0x12, &[], &[])),
        None,
        MALFORMED,
        "without the Will Flag",
    );
}

#[test]
fn connect_password_without_user_name() {
    assert_fails(
        &connect_v311(0x42, &[0, 1, b'p']),
        None,
        MALFORMED,
        "Password Flag set without the User Name Flag",
    );
    let mut v31 = vec![
        0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x42, 0, 60, 0, 1, b'c', 0, 1, b'p',
    ];
    assert_fails(
        &frame(0x10, &v31),
        None,
        MALFORMED,
        "without the User Name Flag",
    );
    v31[9] = 0xC2;
    v31.splice(15..15, [0, 1, b'u']);
    assert!(matches!(
        assert_decodes(&frame(0x10, &v31), None),
        Packet::Connect(_)
    ));
    // Allowed in 5.0.
    let Packet::Connect(c) = assert_decodes(
        &frame(0x10, &connect_v5_body(0x42, &[], &[0, 1, b'p'])),
        None,
    ) else {
        panic!()
    };
    assert_eq!(
        (c.username, c.password),
        (None, Some(Bytes::from_static(b"p")))
    );
}

#[test]
fn connect_will_topic_is_a_topic_name() {
    assert_fails(
        &connect_v311(0x06, &[0, 3, b'a', b'/', b'#', 0, 0]),
        None,
        TOPIC_INVALID,
        "Will Topic contains a wildcard",
    );
    assert_fails(
        &connect_v311(0x06, &[0, 0, 0, 0]),
        None,
        TOPIC_INVALID,
        "Will Topic is empty",
    );
    let bytes = frame(0x10, &connect_v5_body(0x06, &[], &[0, 0, 1, b'+', 0, 0]));
    assert_fails(
        &bytes,
        None,
        TOPIC_INVALID,
        "Will Topic contains a wildcard",
    );
}

#[test]
fn connect_payload_fields_are_read_in_order() {
    // client id, will properties, will topic, will payload, user name, password.
    let rest = [
        5, 0x18, 0, 0, 0, 9, 0, 1, b't', 0, 1, b'w', 0, 1, b'u', 0, 1, b'p',
    ];
    let Packet::Connect(c) = assert_decodes(&frame(0x10, &connect_v5_body(0xC6, &[], &rest)), None)
    else {
        panic!()
    };
    let w = c.will.unwrap();
    assert_eq!(
        (&*w.topic, &w.payload[..], w.properties.will_delay_interval),
        ("t", &b"w"[..], Some(9))
    );
    assert_eq!(
        (c.username.as_deref(), c.password.as_deref()),
        (Some("u"), Some(&b"p"[..]))
    );
    // A Will property that is not allowed among the Will properties.
    let rest = [3, 0x23, 0, 1, 0, 1, b't', 0, 0];
    assert_fails(
        &frame(0x10, &connect_v5_body(0x06, &[], &rest)),
        None,
        MALFORMED,
        "property 0x23 Topic Alias is not allowed in CONNECT Will properties",
    );
    // A Will-only property in the CONNECT properties.
    assert_fails(
        &frame(0x10, &connect_v5_body(0x02, &[0x18, 0, 0, 0, 1], &[])),
        None,
        MALFORMED,
        "0x18 Will Delay Interval is not allowed in CONNECT",
    );
}

// ---- Properties -------------------------------------------------------------------------------------------

#[test]
fn property_not_allowed_in_the_packet_is_malformed() {
    assert_fails(
        &publish_v5(&[0x11, 0, 0, 0, 1]),
        V5,
        MALFORMED,
        "property 0x11 Session Expiry Interval is not allowed in PUBLISH",
    );
    assert_fails(
        &frame(0x10, &connect_v5_body(2, &[0x23, 0, 1], &[])),
        None,
        MALFORMED,
        "0x23 Topic Alias is not allowed in CONNECT",
    );
    assert_fails(
        &frame(0x40, &[0, 1, 0, 3, 0x23, 0, 1]),
        V5,
        MALFORMED,
        "Topic Alias is not allowed in PUBACK",
    );
    assert_fails(
        &frame(0x62, &[0, 1, 0, 3, 0x23, 0, 1]),
        V5,
        MALFORMED,
        "Topic Alias is not allowed in PUBREL",
    );
    assert_fails(
        &frame(0xE0, &[0, 2, 0x24, 1]),
        V5,
        MALFORMED,
        "0x24 Maximum QoS is not allowed in DISCONNECT",
    );
    assert_fails(
        &frame(0xF0, &[0x18, 2, 0x1A, 0]),
        V5,
        MALFORMED,
        "Response Information is not allowed in AUTH",
    );
    assert_fails(
        &frame(0xA2, &[0, 1, 2, 0x1F, 0, 0, 1, b'a']),
        V5,
        MALFORMED,
        "Reason String is not allowed in UNSUBSCRIBE",
    );
    assert_fails(
        &frame(0x20, &[0, 0, 2, 0x17, 1]),
        V5,
        MALFORMED,
        "Request Problem Information is not allowed in CONNACK",
    );
}

#[test]
fn unknown_property_is_malformed() {
    assert_fails(
        &publish_v5(&[0x04, 0]),
        V5,
        MALFORMED,
        "PUBLISH: unknown property identifier 0x04",
    );
    assert_fails(
        &publish_v5(&[0x7F, 0]),
        V5,
        MALFORMED,
        "unknown property identifier 0x7f",
    );
    // Identifiers are variable byte integers: 0x80 0x02 is 256.
    assert_fails(
        &publish_v5(&[0x80, 0x02, 0]),
        V5,
        MALFORMED,
        "unknown property identifier 0x100",
    );
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    assert_fails(
        &publish_v5(&[0x23, 0, 1, 0x23, 0, 2]),
        V5,
        PROTOCOL,
        "property 0x23 Topic Alias appears twice in PUBLISH",
    );
    assert_fails(
        &frame(0x10, &connect_v5_body(2, &[0x21, 0, 1, 0x21, 0, 1], &[])),
        None,
        PROTOCOL,
        "0x21 Receive Maximum appears twice in CONNECT",
    );
    assert_fails(
        &frame(0x40, &[0, 1, 0, 6, 0x1F, 0, 0, 0x1F, 0, 0]),
        V5,
        PROTOCOL,
        "0x1f Reason String appears twice in PUBACK",
    );
    // User Property may repeat.
    let Packet::Publish(p) = assert_decodes(&publish_v5(&[0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0]), V5)
    else {
        panic!()
    };
    assert_eq!(p.properties.user_properties.len(), 2);
}

#[test]
fn property_value_ranges() {
    let connect = |props: &[u8]| frame(0x10, &connect_v5_body(2, props, &[]));
    let connack = |props: &[u8]| {
        let mut b = vec![0, 0, props.len() as u8];
        b.extend_from_slice(props);
        frame(0x20, &b)
    };
    let cases: [(Vec<u8>, &str); 14] = [
        (
            connect(&[0x21, 0, 0]),
            "0x21 Receive Maximum has invalid value 0 in CONNECT",
        ),
        (
            connack(&[0x21, 0, 0]),
            "0x21 Receive Maximum has invalid value 0 in CONNACK",
        ),
        (
            connect(&[0x27, 0, 0, 0, 0]),
            "0x27 Maximum Packet Size has invalid value 0",
        ),
        (
            connack(&[0x27, 0, 0, 0, 0]),
            "0x27 Maximum Packet Size has invalid value 0",
        ),
        (
            publish_v5(&[0x23, 0, 0]),
            "0x23 Topic Alias has invalid value 0",
        ),
        (
            publish_v5(&[0x01, 2]),
            "0x01 Payload Format Indicator has invalid value 2",
        ),
        (
            connect(&[0x17, 2]),
            "0x17 Request Problem Information has invalid value 2",
        ),
        (
            connect(&[0x19, 5]),
            "0x19 Request Response Information has invalid value 5",
        ),
        (connack(&[0x24, 2]), "0x24 Maximum QoS has invalid value 2"),
        (
            connack(&[0x25, 2]),
            "0x25 Retain Available has invalid value 2",
        ),
        (
            connack(&[0x28, 2]),
            "0x28 Wildcard Subscription Available has invalid value 2",
        ),
        (
            connack(&[0x29, 0xFF]),
            "0x29 Subscription Identifier Available has invalid value 255",
        ),
        (
            connack(&[0x2A, 2]),
            "0x2a Shared Subscription Available has invalid value 2",
        ),
        (
            connect(&[0x16, 0, 0]),
            "Authentication Data without an Authentication Method",
        ),
    ];
    for (bytes, needle) in cases {
        let version = if bytes[0] == 0x10 { None } else { V5 };
        assert_fails(&bytes, version, PROTOCOL, needle);
    }
    // The boundary values are accepted.
    assert!(matches!(
        assert_decodes(
            &connack(&[0x24, 1, 0x25, 0, 0x21, 0, 1, 0x27, 0, 0, 0, 1]),
            V5
        ),
        Packet::ConnAck(_)
    ));
}

#[test]
fn response_topic_is_a_topic_name() {
    assert_fails(
        &publish_v5(&[0x08, 0, 1, b'#']),
        V5,
        TOPIC_INVALID,
        "PUBLISH: Response Topic contains a wildcard",
    );
}

// ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------------

#[test]
fn subscribe_needs_a_filter() {
    assert_fails(
        &frame(0x82, &[0, 1]),
        V311,
        PROTOCOL,
        "SUBSCRIBE: no topic filter",
    );
    assert_fails(
        &frame(0x82, &[0, 1, 0]),
        V5,
        PROTOCOL,
        "SUBSCRIBE: no topic filter",
    );
    assert_fails(
        &frame(0x82, &[0, 0, 0, 1, b'a', 0]),
        V311,
        PROTOCOL,
        "SUBSCRIBE: packet identifier is 0",
    );
}

#[test]
fn subscribe_options_v5() {
    let sub = |options: u8| frame(0x82, &[0, 1, 0, 0, 1, b'a', options]);
    assert_fails(
        &sub(0x40),
        V5,
        MALFORMED,
        "reserved bits of the subscription options are set",
    );
    assert_fails(
        &sub(0x80),
        V5,
        MALFORMED,
        "reserved bits of the subscription options are set",
    );
    assert_fails(&sub(0x30), V5, PROTOCOL, "Retain Handling 3");
    assert_fails(&sub(0x03), V5, PROTOCOL, "QoS 3");
    let shared = frame(
        0x82,
        &[
            0, 1, 0, 0, 9, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', 0x04,
        ],
    );
    assert_fails(
        &shared,
        V5,
        PROTOCOL,
        "No Local set on a shared subscription",
    );
    // Options byte missing after the filter.
    assert_fails(
        &frame(0x82, &[0, 1, 0, 0, 1, b'a']),
        V5,
        MALFORMED,
        "packet ends inside subscription options",
    );
}

#[test]
fn subscribe_requested_qos_v3() {
    let sub = |options: u8| frame(0x82, &[0, 1, 0, 1, b'a', options]);
    for bits in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
        assert_fails(
            &sub(bits),
            V311,
            MALFORMED,
            "reserved bits of the requested QoS byte are set",
        );
    }
    assert_fails(&sub(0x03), V311, MALFORMED, "requested QoS 3");
    assert_fails(&sub(0x04), V31, MALFORMED, "reserved bits");
}

#[test]
fn unsubscribe_needs_a_filter() {
    assert_fails(
        &frame(0xA2, &[0, 1]),
        V311,
        PROTOCOL,
        "UNSUBSCRIBE: no topic filter",
    );
    assert_fails(
        &frame(0xA2, &[0, 1, 0]),
        V5,
        PROTOCOL,
        "UNSUBSCRIBE: no topic filter",
    );
}

// ---- Acknowledgements and reason codes --------------------------------------------------------------------

#[test]
fn acks_reject_reason_codes_the_packet_cannot_carry() {
    let cases: [(Vec<u8>, &str); 8] = [
        (frame(0x40, &[0, 1, 0x92]), "PUBACK: reason code 0x92"),
        (frame(0x62, &[0, 1, 0x10]), "PUBREL: reason code 0x10"),
        (frame(0x70, &[0, 1, 0x80]), "PUBCOMP: reason code 0x80"),
        (frame(0x90, &[0, 1, 0, 0x11]), "SUBACK: reason code 0x11"),
        (frame(0xB0, &[0, 1, 0, 0x02]), "UNSUBACK: reason code 0x02"),
        (frame(0xE0, &[0x18]), "DISCONNECT: reason code 0x18"),
        (frame(0xF0, &[0x04, 0]), "AUTH: reason code 0x04"),
        (frame(0x20, &[0, 0x03, 0]), "CONNACK: reason code 0x03"),
    ];
    for (bytes, needle) in cases {
        assert_fails(&bytes, V5, PROTOCOL, needle);
    }
    // 3.x: SUBACK return codes 0, 1, 2, 0x80 only; CONNACK return codes 0..=5 only.
    assert_fails(
        &frame(0x90, &[0, 1, 0x81]),
        V311,
        PROTOCOL,
        "SUBACK: reason code 0x81",
    );
    assert_fails(
        &frame(0x90, &[0, 1, 0x03]),
        V311,
        PROTOCOL,
        "SUBACK: reason code 0x03",
    );
    assert_fails(
        &frame(0x20, &[0, 6]),
        V311,
        PROTOCOL,
        "CONNACK: reason code 0x06",
    );
}

#[test]
fn acks_need_reason_codes_and_a_non_zero_packet_identifier() {
    assert_fails(
        &frame(0x90, &[0, 1]),
        V311,
        PROTOCOL,
        "SUBACK: no reason code",
    );
    assert_fails(
        &frame(0x90, &[0, 1, 0]),
        V5,
        PROTOCOL,
        "SUBACK: no reason code",
    );
    assert_fails(
        &frame(0xB0, &[0, 1, 0]),
        V5,
        PROTOCOL,
        "UNSUBACK: no reason code",
    );
    assert_fails(
        &frame(0x40, &[0, 0]),
        V311,
        PROTOCOL,
        "PUBACK: packet identifier is 0",
    );
}

#[test]
fn connack_flags() {
    assert_fails(
        &frame(0x20, &[0x02, 0]),
        V311,
        MALFORMED,
        "reserved connect acknowledge flags",
    );
    assert_fails(
        &frame(0x20, &[0x80, 0, 0]),
        V5,
        MALFORMED,
        "reserved connect acknowledge flags",
    );
    assert_fails(
        &frame(0x20, &[0x01, 0x05]),
        V311,
        PROTOCOL,
        "Session Present set with a non-zero reason code",
    );
    assert_fails(
        &frame(0x20, &[0x01, 0x87, 0]),
        V5,
        PROTOCOL,
        "Session Present set with a non-zero reason code",
    );
}

#[test]
fn auth_with_a_reason_needs_an_authentication_method() {
    assert_fails(
        &frame(0xF0, &[0x18, 0]),
        V5,
        PROTOCOL,
        "AUTH: Authentication Method is missing",
    );
    assert_fails(
        &frame(0xF0, &[0x19]),
        V5,
        PROTOCOL,
        "AUTH: Authentication Method is missing",
    );
}

#[test]
fn every_error_names_the_packet() {
    let e = decode_err(&publish_v5(&[0x23, 0, 1, 0x23, 0, 2]), V5);
    assert_eq!(
        e.to_string(),
        "property 0x23 Topic Alias appears twice in PUBLISH"
    );
    let e = decode_err(&frame(0x30, &[0, 1, b'+', 0]), V5);
    assert_eq!(e.to_string(), "PUBLISH: topic name contains a wildcard");
}

// ---- Encoder ----------------------------------------------------------------------------------------------

fn publish(topic: &str, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Arc::from(topic),
        packet_id: None,
        properties: Properties::default(),
        payload,
    })
}

/// Asserts that encoding fails with `expected` and leaves a non-empty buffer unchanged.
#[track_caller]
fn assert_encode_fails(packet: &Packet, version: ProtocolVersion, max: u32, expected: EncodeError) {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert_eq!(encode(packet, version, &mut buf, max), Err(expected));
    assert_eq!(&buf[..], b"prefix");
}

#[test]
fn encode_packet_too_large_leaves_the_buffer_unchanged() {
    let p = publish("a", Bytes::from_static(b"12345"));
    // 2 header + 3 topic + 5 payload = 10 bytes.
    assert_encode_fails(
        &p,
        ProtocolVersion::V311,
        9,
        EncodeError::PacketTooLarge {
            packet: "PUBLISH",
            size: 10,
            max: 9,
        },
    );
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert_eq!(encode(&p, ProtocolVersion::V311, &mut buf, 10), Ok(10));
    assert_eq!(buf.len(), 16);
}

#[test]
fn encode_strings_over_65535_bytes_fail() {
    let long = "x".repeat(65_536);
    assert_encode_fails(
        &publish(&long, Bytes::new()),
        ProtocolVersion::V311,
        MAX,
        EncodeError::FieldTooLong {
            packet: "PUBLISH",
            field: "topic name",
            len: 65_536,
        },
    );
    let p = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties {
            reason_string: Some(long.clone()),
            ..Properties::default()
        },
    });
    assert_encode_fails(
        &p,
        ProtocolVersion::V5,
        MAX,
        EncodeError::FieldTooLong {
            packet: "DISCONNECT",
            field: "Reason String",
            len: 65_536,
        },
    );
    // 3.x does not write properties, so the same packet encodes.
    assert!(encode(&p, ProtocolVersion::V311, &mut BytesMut::new(), MAX).is_ok());
    let c = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: String::new(),
        will: None,
        username: None,
        password: Some(Bytes::from(vec![0u8; 70_000])),
        properties: Properties::default(),
    }));
    assert_encode_fails(
        &c,
        ProtocolVersion::V311,
        MAX,
        EncodeError::FieldTooLong {
            packet: "CONNECT",
            field: "Password",
            len: 70_000,
        },
    );
    // Exactly 65,535 bytes is fine.
    let mut buf = BytesMut::new();
    encode(
        &publish(&long[1..], Bytes::new()),
        ProtocolVersion::V311,
        &mut buf,
        MAX,
    )
    .unwrap();
    assert_eq!(
        decode(&mut buf, V311, MAX).unwrap(),
        Some(publish(&long[1..], Bytes::new()))
    );
}

#[test]
fn encode_remaining_length_over_the_maximum_fails() {
    // A zeroed allocation is lazily mapped: this does not touch 256 MiB.
    let payload = Bytes::from(vec![0u8; 268_435_455]);
    let e = encode(
        &publish("a", payload),
        ProtocolVersion::V311,
        &mut BytesMut::new(),
        MAX,
    )
    .unwrap_err();
    assert_eq!(
        e,
        EncodeError::TooLong {
            packet: "PUBLISH",
            field: "remaining length",
            len: 268_435_458
        }
    );
}

#[test]
fn encode_subscription_identifier_over_the_maximum_fails() {
    let p = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties {
            subscription_identifiers: vec![268_435_456],
            ..Properties::default()
        },
        filters: vec![("a".into(), SubscriptionOptions::default())],
    });
    assert_encode_fails(
        &p,
        ProtocolVersion::V5,
        MAX,
        EncodeError::SubscriptionIdentifierTooLarge {
            packet: "SUBSCRIBE",
            value: 268_435_456,
        },
    );
}

#[test]
fn encode_publish_packet_id_must_match_qos() {
    let Packet::Publish(mut p) = publish("a", Bytes::new()) else {
        unreachable!()
    };
    p.packet_id = Some(1);
    assert_encode_fails(
        &Packet::Publish(p.clone()),
        ProtocolVersion::V5,
        MAX,
        EncodeError::PacketIdMismatch("a QoS 0 message cannot carry a packet identifier"),
    );
    p.packet_id = None;
    p.qos = QoS::AtLeastOnce;
    assert!(matches!(
        encode(
            &Packet::Publish(p),
            ProtocolVersion::V5,
            &mut BytesMut::new(),
            MAX
        ),
        Err(EncodeError::PacketIdMismatch(_))
    ));
}

#[test]
fn encode_auth_is_5_0_only() {
    let p = Packet::Auth(Auth {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    for v in [ProtocolVersion::V31, ProtocolVersion::V311] {
        assert_encode_fails(
            &p,
            v,
            MAX,
            EncodeError::NotInVersion {
                packet: "AUTH",
                version: v,
            },
        );
    }
}

#[test]
fn encode_connect_for_another_version_fails() {
    let c = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }));
    assert_encode_fails(
        &c,
        ProtocolVersion::V311,
        MAX,
        EncodeError::ConnectVersionMismatch {
            connect: ProtocolVersion::V5,
            version: ProtocolVersion::V311,
        },
    );
}
