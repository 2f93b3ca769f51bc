//! Property tests: any valid packet for MQTT 3.1.1 or 5.0 encodes and decodes back to itself, also when fed
//! in arbitrary chunks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use wasp_mqtt::*;

const MAX: u32 = u32::MAX;

fn text() -> impl Strategy<Value = String> {
    // Multi-byte characters included; no U+0000 (forbidden in MQTT strings).
    "[a-zA-Z0-9/ éß€😀$+#]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9/é€ ]{1,12}"
}

fn filter() -> impl Strategy<Value = String> {
    "[a-z0-9/+#]{1,12}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(|c| ReasonCode::from_u8(c).unwrap())
}

/// Which properties a packet may carry.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// Arbitrary properties, valid for `ctx`: only allowed properties, in range.
fn properties(ctx: Ctx) -> impl Strategy<Value = Properties> {
    let flag = || option::of(0u8..=1);
    let a = (
        flag(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
        option::of(binary()),
        flag(),
    );
    let b = (
        option::of(any::<u32>()),
        flag(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u16..),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1u32..),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(move |(a, b, c)| {
        use Ctx::*;
        let on = |allowed: &[Ctx]| allowed.contains(&ctx);
        let mut p = Properties::default();
        if on(&[Publish, Will]) {
            p.payload_format_indicator = a.0;
            p.message_expiry_interval = a.1;
            p.content_type = a.2.map(Into::into);
            p.response_topic = a.3.map(Into::into);
            p.correlation_data = a.4;
        }
        if ctx == Publish {
            p.subscription_identifiers = a.5;
        } else if ctx == Subscribe {
            p.subscription_identifiers = a.5.into_iter().take(1).collect();
        }
        if on(&[Connect, ConnAck, Disconnect]) {
            p.session_expiry_interval = a.6;
        }
        if ctx == ConnAck {
            p.assigned_client_identifier = a.7;
            p.server_keep_alive = a.8;
            p.response_information = b.2;
            p.maximum_qos = b.8;
            p.retain_available = b.9;
            p.wildcard_subscription_available = c.0;
            p.subscription_identifier_available = c.1;
            p.shared_subscription_available = c.2;
        }
        if on(&[Connect, ConnAck, Auth]) {
            p.authentication_method = a.9;
            // Authentication Data only with an Authentication Method.
            if p.authentication_method.is_some() {
                p.authentication_data = a.10;
            }
        }
        if ctx == Connect {
            p.request_problem_information = a.11;
            p.request_response_information = b.1;
        }
        if ctx == Will {
            p.will_delay_interval = b.0;
        }
        if on(&[ConnAck, Disconnect]) {
            p.server_reference = b.3;
        }
        if on(&[ConnAck, Ack, Disconnect, Auth]) {
            p.reason_string = b.4;
        }
        if on(&[Connect, ConnAck]) {
            p.receive_maximum = b.5;
            p.topic_alias_maximum = b.6;
            p.maximum_packet_size = b.11;
        }
        if ctx == Publish {
            p.topic_alias = b.7;
        }
        p.user_properties = UserProperties::from_pairs(b.10).expect("short strings");
        p
    })
}

fn no_properties() -> impl Strategy<Value = Properties> {
    Just(Properties::default())
}

fn props_for(v5: bool, ctx: Ctx) -> BoxedStrategy<Properties> {
    if v5 {
        properties(ctx).boxed()
    } else {
        no_properties().boxed()
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props_for(v5, Ctx::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        props_for(v5, Ctx::Connect),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                mut password,
                properties,
            )| {
                // 3.x: a password needs a user name.
                if !v5 && username.is_none() {
                    password = None;
                }
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

const V3_CONNACK: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL: &[u8] = &[0x00, 0x92];
const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const V3_SUBACK: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn pub_response(v5: bool, codes: &'static [u8]) -> impl Strategy<Value = PubResponse> {
    let codes: &'static [u8] = if v5 { codes } else { &[0x00] };
    (packet_id(), reason(codes), props_for(v5, Ctx::Ack)).prop_map(
        |(packet_id, reason, properties)| PubResponse {
            packet_id,
            reason,
            properties,
        },
    )
}

fn subscription_options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        },
    )
}

/// Any valid packet for `version`.
fn packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let connack = (
        any::<bool>(),
        reason(if v5 { CONNACK } else { V3_CONNACK }),
        props_for(v5, Ctx::ConnAck),
    )
        .prop_map(|(sp, reason, properties)| {
            // Session Present only with Success.
            let session_present = sp && reason == ReasonCode::Success;
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        });
    let publish = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        props_for(v5, Ctx::Publish),
        binary(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, empty_topic, id, properties, payload)| {
                // 5.0: the topic may be empty when a Topic Alias stands for it.
                let topic = if v5 && empty_topic && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                let packet_id = (qos != QoS::AtMostOnce).then_some(id);
                let dup = dup && qos != QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic: Arc::from(topic),
                    packet_id,
                    properties,
                    payload,
                })
            },
        );
    let subscribe = (
        packet_id(),
        props_for(v5, Ctx::Subscribe),
        vec((filter(), subscription_options(v5)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        });
    let suback = (
        packet_id(),
        props_for(v5, Ctx::Ack),
        vec(reason(if v5 { SUBACK } else { V3_SUBACK }), 1..4),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        });
    let unsubscribe = (
        packet_id(),
        props_for(v5, Ctx::Unsubscribe),
        vec(filter(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        });
    let unsuback = (
        packet_id(),
        props_for(v5, Ctx::Ack),
        vec(reason(UNSUBACK), 1..4),
    )
        .prop_map(move |(packet_id, properties, codes)| {
            let reason_codes = if v5 { codes } else { Vec::new() };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        });
    let disconnect = (
        reason(if v5 { DISCONNECT } else { &[0x00] }),
        props_for(v5, Ctx::Disconnect),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let mut options = vec![
        connect(version).boxed(),
        connack.boxed(),
        publish.boxed(),
        pub_response(v5, PUBACK).prop_map(Packet::PubAck).boxed(),
        pub_response(v5, PUBACK).prop_map(Packet::PubRec).boxed(),
        pub_response(v5, PUBREL).prop_map(Packet::PubRel).boxed(),
        pub_response(v5, PUBREL).prop_map(Packet::PubComp).boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = (
            reason(&[0x00, 0x18, 0x19]),
            any::<bool>(),
            text(),
            properties(Ctx::Auth),
        )
            .prop_map(|(reason, short, method, mut properties)| {
                if reason == ReasonCode::Success && short {
                    // The short form: no properties at all.
                    properties = Properties::default();
                } else if properties.authentication_method.is_none() {
                    // Otherwise the Authentication Method is required.
                    properties.authentication_method = Some(method);
                }
                Packet::Auth(Auth { reason, properties })
            });
        options.push(auth.boxed());
    }
    proptest::strategy::Union::new(options)
}

fn round_trip(p: &Packet, version: ProtocolVersion, chunk: usize) -> Result<(), TestCaseError> {
    let mut encoded = BytesMut::new();
    let n =
        encode(p, version, &mut encoded, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(n, encoded.len());
    let decode_version = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(version)
    };

    // All at once.
    let mut buf = encoded.clone();
    let decoded = decode(&mut buf, decode_version, MAX);
    prop_assert_eq!(decoded, Ok(Some(p.clone())));
    prop_assert!(buf.is_empty());

    // In chunks: None until the last chunk.
    let mut buf = BytesMut::new();
    let chunks: Vec<&[u8]> = encoded.chunks(chunk).collect();
    for (i, c) in chunks.iter().enumerate() {
        buf.extend_from_slice(c);
        let got = decode(&mut buf, decode_version, MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if i + 1 < chunks.len() {
            prop_assert_eq!(got, None);
        } else {
            prop_assert_eq!(got.as_ref(), Some(p));
        }
    }

    // The exact size is accepted as the maximum packet size, one byte less is not.
    let mut buf = encoded.clone();
    prop_assert!(decode(&mut buf, decode_version, n as u32).is_ok());
    let mut buf = encoded.clone();
    let too_large = matches!(
        decode(&mut buf, decode_version, n as u32 - 1),
        Err(DecodeError::PacketTooLarge { .. })
    );
    prop_assert!(too_large);
    let mut out = BytesMut::new();
    let too_large = matches!(
        encode(p, version, &mut out, n as u32 - 1),
        Err(EncodeError::PacketTooLarge { .. })
    );
    prop_assert!(too_large && out.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn v311_packets_round_trip(p in packet(ProtocolVersion::V311), chunk in 1usize..16) {
        round_trip(&p, ProtocolVersion::V311, chunk)?;
    }

    #[test]
    fn v5_packets_round_trip(p in packet(ProtocolVersion::V5), chunk in 1usize..16) {
        round_trip(&p, ProtocolVersion::V5, chunk)?;
    }

    #[test]
    fn v31_connect_round_trips(p in connect(ProtocolVersion::V31)) {
        round_trip(&p, ProtocolVersion::V31, 7)?;
    }

    /// A PUBLISH encoded in parts with changes to its properties is byte for byte the PUBLISH with the
    /// changed properties, in every version, including the size limit's refusal.
    #[test]
    fn publish_parts_with_changes_encode_as_the_changed_publish(
        p in packet(ProtocolVersion::V5),
        expiry in option::of(option::of(any::<u32>())),
        subscription_identifier in option::of(1u32..=268_435_455),
        v in 0usize..3,
        shrink in 0usize..3,
    ) {
        let Packet::Publish(p) = p else { return Ok(()) };
        let version = [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5][v];
        let changes = Changes { message_expiry_interval: expiry, subscription_identifier };
        let parts = PublishParts {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            properties: &p.properties,
            changes,
            payload: &p.payload,
        };
        let mut changed = p.clone();
        if let Some(expiry) = expiry {
            changed.properties.message_expiry_interval = expiry;
        }
        changed.properties.subscription_identifiers.extend(subscription_identifier);
        let mut expected = BytesMut::new();
        let n = encode(&Packet::Publish(changed.clone()), version, &mut expected, MAX).unwrap();
        let mut out = BytesMut::from(&b"kept"[..]);
        prop_assert_eq!(encode_publish(&parts, version, &mut out, MAX), Ok(n));
        prop_assert_eq!(&out[4..], &expected[..]);
        // One byte under the size: both refuse, and the buffer is left as it was.
        let limit = (n - shrink.min(1)) as u32;
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        prop_assert_eq!(
            encode_publish(&parts, version, &mut a, limit).is_ok(),
            encode(&Packet::Publish(changed), version, &mut b, limit).is_ok()
        );
        prop_assert_eq!(a, b);
    }

    /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to a packet that decodes equal.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in vec(any::<u8>(), 0..64), v in 0usize..4) {
        let version = [None, Some(ProtocolVersion::V31), Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)][v];
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = decode(&mut buf, version, MAX) {
            let encode_version = match &p { Packet::Connect(c) => c.protocol, _ => version.unwrap() };
            let mut out = BytesMut::new();
            encode(&p, encode_version, &mut out, MAX).unwrap();
            let again = decode(&mut out, version, MAX);
            prop_assert_eq!(again, Ok(Some(p)));
        }
    }
}
