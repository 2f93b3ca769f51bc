//! Byte-exact encodings of every packet type for MQTT 3.1, 3.1.1 and 5.0, decoded and encoded both ways.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use wasp_mqtt::*;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX: u32 = u32::MAX;

/// Decodes `bytes` (which must hold exactly one packet) for `version`.
fn decode_all(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, MAX)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    packet
}

fn encode_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let n = encode(packet, version, &mut buf, MAX).expect("encodes");
    assert_eq!(n, buf.len());
    buf.to_vec()
}

/// `bytes` decode to `packet` and `packet` encodes to `bytes`.
fn both_ways(bytes: &[u8], packet: Packet, version: ProtocolVersion) {
    let decode_version = if matches!(packet, Packet::Connect(_)) {
        None
    } else {
        Some(version)
    };
    assert_eq!(decode_all(bytes, decode_version), packet);
    assert_eq!(encode_vec(&packet, version), bytes);
}

fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "abc".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

#[test]
fn connect_v311_minimal() {
    let bytes = [
        0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 3, b'a', b'b', b'c',
    ];
    both_ways(&bytes, Packet::Connect(Box::new(connect(V311))), V311);
}

#[test]
fn connect_v31_uses_mqisdp_level_3() {
    let bytes = [
        0x10, 0x11, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 3, b'a', b'b',
        b'c',
    ];
    both_ways(
        &bytes,
        Packet::Connect(Box::new(connect(ProtocolVersion::V31))),
        ProtocolVersion::V31,
    );
}

#[test]
fn connect_v311_with_will_username_password() {
    let mut c = connect(V311);
    c.clean_start = false;
    c.will = Some(Will {
        topic: Arc::from("w/t"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"pw"));
    #[rustfmt::skip]
    let bytes = [
        0x10, 32,
        0, 4, b'M', b'Q', b'T', b'T', 4,
        0b1110_1100, // user name, password, will retain, will QoS 1, will flag
        0, 60,
        0, 3, b'a', b'b', b'c',
        0, 3, b'w', b'/', b't',
        0, 3, b'b', b'y', b'e',
        0, 1, b'u',
        0, 2, b'p', b'w',
    ];
    both_ways(&bytes, Packet::Connect(Box::new(c)), V311);
}

#[test]
fn connect_v5_spec_example_with_properties_and_will_properties() {
    // The variable header of the spec's example (3.1.2.12): flags 0xCE, keep alive 10, Session Expiry 10.
    let mut c = connect(V5);
    c.keep_alive = 10;
    c.properties.session_expiry_interval = Some(10);
    c.will = Some(Will {
        topic: Arc::from("t"),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(5),
            ..Properties::default()
        },
    });
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"p"));
    #[rustfmt::skip]
    let bytes = [
        0x10, 39,
        0, 4, b'M', b'Q', b'T', b'T', 5, 0xCE, 0, 10,
        5, 0x11, 0, 0, 0, 10,
        0, 3, b'a', b'b', b'c',
        5, 0x18, 0, 0, 0, 5,
        0, 1, b't',
        0, 1, b'x',
        0, 1, b'u',
        0, 1, b'p',
    ];
    both_ways(&bytes, Packet::Connect(Box::new(c)), V5);
}

#[test]
fn connect_v5_password_without_user_name_is_allowed() {
    let mut c = connect(V5);
    c.password = Some(Bytes::from_static(b"p"));
    let bytes = encode_vec(&Packet::Connect(Box::new(c.clone())), V5);
    assert_eq!(bytes[9], 0x42);
    assert_eq!(decode_all(&bytes, None), Packet::Connect(Box::new(c)));
}

#[test]
fn connect_is_decoded_by_its_own_level_whatever_the_connection_version() {
    let bytes = encode_vec(&Packet::Connect(Box::new(connect(V5))), V5);
    assert_eq!(
        decode_all(&bytes, Some(V311)),
        Packet::Connect(Box::new(connect(V5)))
    );
}

#[test]
fn connack_v311_and_v31() {
    let p = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    both_ways(&[0x20, 2, 1, 0], p.clone(), V311);
    both_ways(&[0x20, 2, 1, 0], p, ProtocolVersion::V31);
    for (code, reason) in [
        (1, ReasonCode::UnsupportedProtocolVersion),
        (2, ReasonCode::ClientIdentifierNotValid),
        (3, ReasonCode::ServerUnavailable),
        (4, ReasonCode::BadUserNameOrPassword),
        (5, ReasonCode::NotAuthorized),
    ] {
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Properties::default(),
        });
        both_ways(&[0x20, 2, 0, code], p, V311);
    }
}

#[test]
fn connack_v311_maps_5_0_reasons_to_return_codes() {
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Banned,
        properties: Properties {
            receive_maximum: Some(10),
            ..Properties::default()
        },
    });
    assert_eq!(encode_vec(&p, V311), [0x20, 2, 0, 5]);
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::QuotaExceeded,
        properties: Properties::default(),
    });
    assert_eq!(encode_vec(&p, V311), [0x20, 2, 0, 3]);
}

#[test]
fn connack_v5_with_properties() {
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties {
            receive_maximum: Some(20),
            maximum_qos: Some(1),
            retain_available: Some(0),
            maximum_packet_size: Some(1024),
            assigned_client_identifier: Some("id".into()),
            topic_alias_maximum: Some(5),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(0),
            server_keep_alive: Some(30),
            ..Properties::default()
        },
    });
    #[rustfmt::skip]
    let bytes = [
        0x20, 32, 0, 0x00, 29,
        0x12, 0, 2, b'i', b'd',
        0x13, 0, 30,
        0x21, 0, 20,
        0x22, 0, 5,
        0x24, 1,
        0x25, 0,
        0x27, 0, 0, 4, 0,
        0x28, 1,
        0x29, 1,
        0x2A, 0,
    ];
    both_ways(&bytes, p, V5);
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::UnsupportedProtocolVersion,
        properties: Properties::default(),
    });
    both_ways(&[0x20, 3, 0, 0x84, 0], p, V5);
}

fn publish(qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Arc::from("a/b"),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::from_static(b"hi"),
    }
}

#[test]
fn publish_v311_qos0_qos1_and_flags() {
    both_ways(
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(publish(QoS::AtMostOnce, None)),
        V311,
    );
    let mut p = publish(QoS::ExactlyOnce, Some(0x1234));
    p.dup = true;
    p.retain = true;
    both_ways(
        &[0x3D, 9, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'h', b'i'],
        Packet::Publish(p),
        V311,
    );
    let bytes = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 1, b'h', b'i'];
    both_ways(
        &bytes,
        Packet::Publish(publish(QoS::AtLeastOnce, Some(1))),
        V311,
    );
}

#[test]
fn publish_v311_payload_is_a_zero_copy_slice_of_the_input() {
    let mut buf = BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i', 0xC0, 0][..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(V311), MAX).unwrap() else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.payload.as_ptr() as usize, base + 7);
    assert_eq!(
        decode(&mut buf, Some(V311), MAX).unwrap(),
        Some(Packet::PingReq)
    );
    assert!(buf.is_empty());
}

#[test]
fn publish_v5_content_type_and_user_properties_are_zero_copy_slices_of_the_input() {
    #[rustfmt::skip]
    let mut buf = BytesMut::from(&[
        0x30, 19, 0, 1, b't',
        13,
        0x03, 0, 1, b'c',
        0x26, 0, 2, b'k', b'1', 0, 2, b'v', b'1',
        b'h', b'i',
    ][..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(V5), MAX).unwrap() else {
        panic!("not a PUBLISH")
    };
    let content_type = p.properties.content_type.as_ref().expect("content type");
    assert_eq!(&**content_type, "c");
    assert_eq!(content_type.as_ptr() as usize, base + 9);
    let user = &p.properties.user_properties;
    assert_eq!(*user, [("k1", "v1")]);
    // One slice of the packet, from the identifier 0x26 on.
    assert_eq!(user.wire().as_ptr() as usize, base + 10);
    assert_eq!(user.wire().len(), 9);
    let (key, value) = user.iter().next().expect("one");
    assert_eq!(key.as_ptr() as usize, base + 13);
    assert_eq!(value.as_ptr() as usize, base + 17);
}

#[test]
fn publish_v5_user_properties_between_other_properties_keep_their_order() {
    #[rustfmt::skip]
    let input = [
        0x30, 32, 0, 1, b't',
        26,
        0x26, 0, 2, b'k', b'1', 0, 2, b'v', b'1',
        0x03, 0, 1, b'c',
        0x26, 0, 2, b'k', b'2', 0, 0,
        0x26, 0, 0, 0, 1, b'v',
        b'h', b'i',
    ];
    let mut buf = BytesMut::from(&input[..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(V5), MAX).unwrap() else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        p.properties.user_properties,
        [("k1", "v1"), ("k2", ""), ("", "v")]
    );
    assert_eq!(p.properties.content_type.as_deref(), Some("c"));
    assert_eq!(&p.payload[..], b"hi");
    // Encoded back, the user properties are consecutive (after the content type).
    let out = encode_vec(&Packet::Publish(p), V5);
    #[rustfmt::skip]
    let expected = [
        0x30, 32, 0, 1, b't',
        26,
        0x03, 0, 1, b'c',
        0x26, 0, 2, b'k', b'1', 0, 2, b'v', b'1',
        0x26, 0, 2, b'k', b'2', 0, 0,
        0x26, 0, 0, 0, 1, b'v',
        b'h', b'i',
    ];
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn publish_v5_with_properties_and_empty_topic_with_alias() {
    let mut p = publish(QoS::AtLeastOnce, Some(7));
    p.properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("t".into()),
        response_topic: Some("r".into()),
        correlation_data: Some(Bytes::from_static(b"c")),
        subscription_identifiers: vec![1, 200],
        topic_alias: Some(3),
        user_properties: UserProperties::from_pairs([("k", "v"), ("k", "w")]).unwrap(),
        ..Properties::default()
    };
    #[rustfmt::skip]
    let bytes = [
        0x32, 51, 0, 3, b'a', b'/', b'b', 0, 7,
        41,
        0x01, 1,
        0x02, 0, 0, 0, 60,
        0x03, 0, 1, b't',
        0x08, 0, 1, b'r',
        0x09, 0, 1, b'c',
        0x0B, 1,
        0x0B, 0xC8, 0x01,
        0x23, 0, 3,
        0x26, 0, 1, b'k', 0, 1, b'v',
        0x26, 0, 1, b'k', 0, 1, b'w',
        b'h', b'i',
    ];
    both_ways(&bytes, Packet::Publish(p), V5);

    let mut p = publish(QoS::AtMostOnce, None);
    p.topic = Arc::from("");
    p.properties.topic_alias = Some(1);
    both_ways(
        &[0x30, 8, 0, 0, 3, 0x23, 0, 1, b'h', b'i'],
        Packet::Publish(p),
        V5,
    );
}

fn pub_response(packet_type: u8, r: PubResponse) -> Packet {
    match packet_type {
        4 => Packet::PubAck(r),
        5 => Packet::PubRec(r),
        6 => Packet::PubRel(r),
        _ => Packet::PubComp(r),
    }
}

#[test]
fn pub_responses_v311() {
    for (t, first) in [(4, 0x40), (5, 0x50), (6, 0x62), (7, 0x70)] {
        both_ways(
            &[first, 2, 0x01, 0x02],
            pub_response(t, PubResponse::success(0x0102)),
            V311,
        );
        // 5.0 fields are not written for 3.x.
        let r = PubResponse {
            packet_id: 1,
            reason: ReasonCode::UnspecifiedError,
            properties: Properties {
                reason_string: Some("x".into()),
                ..Properties::default()
            },
        };
        assert_eq!(encode_vec(&pub_response(t, r), V311), [first, 2, 0, 1]);
    }
}

#[test]
fn pub_responses_v5_short_and_long_forms() {
    for (t, first, reason) in [
        (4, 0x40, ReasonCode::NoMatchingSubscribers),
        (5, 0x50, ReasonCode::QuotaExceeded),
        (6, 0x62, ReasonCode::PacketIdentifierNotFound),
        (7, 0x70, ReasonCode::PacketIdentifierNotFound),
    ] {
        // Remaining length 2: Success without properties.
        both_ways(
            &[first, 2, 0, 9],
            pub_response(t, PubResponse::success(9)),
            V5,
        );
        // Remaining length 3: a reason without properties.
        let r = PubResponse {
            packet_id: 9,
            reason,
            properties: Properties::default(),
        };
        both_ways(&[first, 3, 0, 9, reason.as_u8()], pub_response(t, r), V5);
        // Success written in full also decodes (reason + property length 0).
        assert_eq!(
            decode_all(&[first, 4, 0, 9, 0, 0], Some(V5)),
            pub_response(t, PubResponse::success(9))
        );
        assert_eq!(
            decode_all(&[first, 3, 0, 9, 0], Some(V5)),
            pub_response(t, PubResponse::success(9))
        );
        // With properties.
        let r = PubResponse {
            packet_id: 9,
            reason,
            properties: Properties {
                reason_string: Some("no".into()),
                ..Properties::default()
            },
        };
        both_ways(
            &[first, 9, 0, 9, reason.as_u8(), 5, 0x1F, 0, 2, b'n', b'o'],
            pub_response(t, r),
            V5,
        );
    }
}

#[test]
fn subscribe_v311_and_v5() {
    let p = Packet::Subscribe(Subscribe {
        packet_id: 10,
        properties: Properties::default(),
        filters: vec![
            (
                "a/+".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            ),
            (
                "#".into(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            ),
        ],
    });
    both_ways(
        &[0x82, 12, 0, 10, 0, 3, b'a', b'/', b'+', 1, 0, 1, b'#', 2],
        p,
        V311,
    );

    let p = Packet::Subscribe(Subscribe {
        packet_id: 10,
        properties: Properties {
            subscription_identifiers: vec![5],
            ..Properties::default()
        },
        filters: vec![(
            "a".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
    });
    both_ways(
        &[0x82, 9, 0, 10, 2, 0x0B, 5, 0, 1, b'a', 0b0010_1101],
        p.clone(),
        V5,
    );
    // 3.x writes only the QoS of the options.
    let Packet::Subscribe(s) = p else {
        unreachable!()
    };
    assert_eq!(
        encode_vec(&Packet::Subscribe(s), V311),
        [0x82, 6, 0, 10, 0, 1, b'a', 1]
    );
}

#[test]
fn suback_v311_and_v5() {
    let p = Packet::SubAck(SubAck {
        packet_id: 10,
        properties: Properties::default(),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::Success,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    });
    both_ways(&[0x90, 6, 0, 10, 1, 0, 2, 0x80], p, V311);
    // Every 3.x failure is 0x80.
    let p = Packet::SubAck(SubAck {
        packet_id: 10,
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::NotAuthorized, ReasonCode::TopicFilterInvalid],
    });
    assert_eq!(encode_vec(&p, V311), [0x90, 4, 0, 10, 0x80, 0x80]);
    both_ways(&[0x90, 5, 0, 10, 0, 0x87, 0x8F], p, V5);
}

#[test]
fn unsubscribe_and_unsuback() {
    let p = Packet::Unsubscribe(Unsubscribe {
        packet_id: 3,
        properties: Properties::default(),
        filters: vec!["a".into(), "b/#".into()],
    });
    both_ways(
        &[0xA2, 10, 0, 3, 0, 1, b'a', 0, 3, b'b', b'/', b'#'],
        p.clone(),
        V311,
    );
    both_ways(
        &[0xA2, 11, 0, 3, 0, 0, 1, b'a', 0, 3, b'b', b'/', b'#'],
        p,
        V5,
    );

    let p = Packet::UnsubAck(UnsubAck {
        packet_id: 3,
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    });
    both_ways(&[0xB0, 5, 0, 3, 0, 0x00, 0x11], p.clone(), V5);
    // 3.x UNSUBACK has no reason codes.
    assert_eq!(encode_vec(&p, V311), [0xB0, 2, 0, 3]);
    let empty = Packet::UnsubAck(UnsubAck {
        packet_id: 3,
        properties: Properties::default(),
        reason_codes: Vec::new(),
    });
    both_ways(&[0xB0, 2, 0, 3], empty, V311);
}

#[test]
fn ping_packets() {
    for v in [V311, V5] {
        both_ways(&[0xC0, 0], Packet::PingReq, v);
        both_ways(&[0xD0, 0], Packet::PingResp, v);
    }
}

#[test]
fn disconnect_v311_and_v5() {
    let normal = Packet::Disconnect(Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties::default(),
    });
    both_ways(&[0xE0, 0], normal.clone(), V311);
    both_ways(&[0xE0, 0], normal.clone(), V5);
    assert_eq!(decode_all(&[0xE0, 1, 0], Some(V5)), normal);
    assert_eq!(decode_all(&[0xE0, 2, 0, 0], Some(V5)), normal);
    let p = Packet::Disconnect(Disconnect {
        reason: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::default(),
    });
    both_ways(&[0xE0, 1, 0x04], p.clone(), V5);
    // 3.x DISCONNECT has no body.
    assert_eq!(encode_vec(&p, V311), [0xE0, 0]);
    let p = Packet::Disconnect(Disconnect {
        reason: ReasonCode::ServerMoved,
        properties: Properties {
            session_expiry_interval: Some(0),
            server_reference: Some("s".into()),
            ..Properties::default()
        },
    });
    both_ways(
        &[0xE0, 11, 0x9D, 9, 0x11, 0, 0, 0, 0, 0x1C, 0, 1, b's'],
        p,
        V5,
    );
}

#[test]
fn auth_v5() {
    let ok = Packet::Auth(Auth {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    both_ways(&[0xF0, 0], ok, V5);
    let p = Packet::Auth(Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
            ..Properties::default()
        },
    });
    both_ways(
        &[0xF0, 10, 0x18, 8, 0x15, 0, 1, b'm', 0x16, 0, 1, b'd'],
        p,
        V5,
    );
}

#[test]
fn several_packets_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    let packets = [
        Packet::Publish(publish(QoS::AtLeastOnce, Some(1))),
        Packet::PingReq,
        Packet::PubAck(PubResponse::success(1)),
    ];
    let mut total = 0;
    for p in &packets {
        total += encode(p, V5, &mut buf, MAX).unwrap();
    }
    assert_eq!(buf.len(), total);
    for p in &packets {
        assert_eq!(decode(&mut buf, Some(V5), MAX).unwrap().as_ref(), Some(p));
    }
    assert_eq!(decode(&mut buf, Some(V5), MAX).unwrap(), None);
}

#[test]
fn incremental_decoding_returns_none_until_the_last_byte() {
    let mut c = connect(V5);
    // Remaining length over 127: 2 bytes.
    c.properties.user_properties = UserProperties::from_pairs([("k", "v".repeat(200))]).unwrap();
    let packets = [
        (Packet::Connect(Box::new(c)), None),
        (
            Packet::Publish(publish(QoS::AtLeastOnce, Some(1))),
            Some(V5),
        ),
        (Packet::PingReq, Some(V5)),
    ];
    for (packet, version) in packets {
        let bytes = encode_vec(&packet, V5);
        let mut buf = BytesMut::new();
        for (i, &b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let before = buf.clone();
            let got = decode(&mut buf, version, MAX).unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(
                    got,
                    None,
                    "{} decoded after {} of {} bytes",
                    packet.name(),
                    i + 1,
                    bytes.len()
                );
                assert_eq!(
                    buf, before,
                    "an incomplete decode must leave the buffer untouched"
                );
            } else {
                assert_eq!(got, Some(packet.clone()));
                assert!(buf.is_empty());
            }
        }
    }
}

#[test]
fn remaining_length_boundaries() {
    // 127 fits one byte, 128 needs two.
    for (payload, header) in [(120usize, vec![0x30, 127]), (121, vec![0x30, 0x80, 0x01])] {
        let mut p = publish(QoS::AtMostOnce, None);
        p.topic = Arc::from("abcde");
        p.payload = Bytes::from(vec![7u8; payload]);
        let bytes = encode_vec(&Packet::Publish(p.clone()), V311);
        assert_eq!(bytes[..header.len()], header[..]);
        assert_eq!(decode_all(&bytes, Some(V311)), Packet::Publish(p));
    }
    // The largest remaining length, 268,435,455 = FF FF FF 7F, is accepted (and waits for the body).
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, b'a'][..]);
    assert_eq!(decode(&mut buf, Some(V311), MAX), Ok(None));
    assert_eq!(buf.len(), 8);
}

#[test]
fn packet_helpers_name_the_type() {
    assert_eq!(Packet::PingReq.name(), "PINGREQ");
    assert_eq!(Packet::PingReq.packet_type(), 12);
    assert!(codec::reason_code_allowed(
        4,
        ReasonCode::NoMatchingSubscribers
    ));
    assert!(!codec::reason_code_allowed(
        6,
        ReasonCode::NoMatchingSubscribers
    ));
    assert!(!codec::reason_code_allowed(3, ReasonCode::Success));
}
