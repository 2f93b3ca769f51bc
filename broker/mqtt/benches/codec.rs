//! Codec micro-benchmarks: decoding and encoding the packets of the message path (PUBLISH, PUBACK) and a
//! SUBSCRIBE, for MQTT 3.1.1 and 5.0, and a stored 5.0 message with user properties sent to a subscriber
//! (its properties copied and changed, or encoded in parts with the changes), and that message decoded.
//! `cargo bench -p wasp-mqtt --bench codec`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wasp_mqtt::{
    Changes, Packet, Properties, ProtocolVersion, PubResponse, Publish, PublishParts, QoS,
    Subscribe, SubscriptionOptions, UserProperties, decode, encode, encode_publish,
};

const MAX: u32 = 1 << 24;

fn publish(payload: usize, qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Arc::from("sensors/building-1/floor-2/temperature"),
        packet_id: (qos != QoS::AtMostOnce).then_some(42),
        properties: Properties::default(),
        payload: Bytes::from(vec![7u8; payload]),
    })
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf, MAX).expect("encode");
    buf
}

fn bench_codec(c: &mut Criterion) {
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 7,
        properties: Properties::default(),
        filters: vec![
            (
                "sensors/+/temperature".to_owned(),
                SubscriptionOptions::default(),
            ),
            ("alerts/#".to_owned(), SubscriptionOptions::default()),
        ],
    });
    let puback = Packet::PubAck(PubResponse::success(42));
    let cases: Vec<(String, Packet)> = vec![
        ("publish qos0 64B".to_owned(), publish(64, QoS::AtMostOnce)),
        ("publish qos1 64B".to_owned(), publish(64, QoS::AtLeastOnce)),
        (
            "publish qos1 4KiB".to_owned(),
            publish(4096, QoS::AtLeastOnce),
        ),
        ("puback".to_owned(), puback),
        ("subscribe 2 filters".to_owned(), subscribe),
    ];
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut group = c.benchmark_group(format!("codec {version:?}"));
        for (name, packet) in &cases {
            let bytes = encoded(packet, version);
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(format!("decode {name}"), |b| {
                b.iter_batched_ref(
                    || bytes.clone(),
                    |buf| decode(black_box(buf), Some(version), MAX).expect("decode"),
                    BatchSize::SmallInput,
                )
            });
            let mut out = BytesMut::with_capacity(8192);
            group.bench_function(format!("encode {name}"), |b| {
                b.iter(|| {
                    out.clear();
                    encode(black_box(packet), version, &mut out, MAX).expect("encode")
                })
            });
        }
        // A read buffer holding 100 PUBLISHes back to back, as a connection sees them under load.
        let mut burst = BytesMut::new();
        for _ in 0..100 {
            burst.extend_from_slice(&encoded(&publish(64, QoS::AtMostOnce), version));
        }
        group.throughput(Throughput::Elements(100));
        group.bench_function("decode 100 publishes from one buffer", |b| {
            b.iter_batched_ref(
                || burst.clone(),
                |buf| {
                    let mut n = 0;
                    while let Some(p) = decode(buf, Some(version), MAX).expect("decode") {
                        black_box(p);
                        n += 1;
                    }
                    n
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }

    // A stored 5.0 message with two user properties, sent to a subscriber with the time left in its
    // expiry and the subscription's identifier: what the broker's `write_publish` does per delivery.
    let Packet::Publish(stored) = publish(64, QoS::AtLeastOnce) else {
        unreachable!()
    };
    let stored = Publish {
        properties: Properties {
            message_expiry_interval: Some(60),
            user_properties: UserProperties::from_pairs([
                ("client-id", "sensor-0042"),
                ("unit", "C"),
            ])
            .expect("short"),
            ..Properties::default()
        },
        ..stored
    };
    let mut group = c.benchmark_group("codec V5 delivery");
    let mut out = BytesMut::with_capacity(8192);
    group.bench_function("clone properties, change, encode", |b| {
        b.iter(|| {
            out.clear();
            let mut properties = black_box(&stored.properties).clone();
            properties.message_expiry_interval = Some(59);
            properties.subscription_identifiers.push(3);
            let packet = Packet::Publish(Publish {
                properties,
                ..stored.clone()
            });
            encode(&packet, ProtocolVersion::V5, &mut out, MAX).expect("encode")
        })
    });
    group.bench_function("encode_publish with changes", |b| {
        b.iter(|| {
            out.clear();
            let parts = PublishParts {
                dup: false,
                qos: stored.qos,
                retain: stored.retain,
                topic: &stored.topic,
                packet_id: stored.packet_id,
                properties: black_box(&stored.properties),
                changes: Changes {
                    message_expiry_interval: Some(Some(59)),
                    subscription_identifier: Some(3),
                },
                payload: &stored.payload,
            };
            encode_publish(&parts, ProtocolVersion::V5, &mut out, MAX).expect("encode")
        })
    });
    group.finish();

    // The same message as a publisher sends it: what the broker decodes for every inbound PUBLISH.
    let mut group = c.benchmark_group("codec V5 user properties");
    let bytes = encoded(&Packet::Publish(stored), ProtocolVersion::V5);
    group.bench_function("decode publish qos1 64B with 2 user properties", |b| {
        b.iter_batched_ref(
            || bytes.clone(),
            |buf| decode(black_box(buf), Some(ProtocolVersion::V5), MAX).expect("decode"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
