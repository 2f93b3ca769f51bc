//! MQTT 3.1.1 interoperability: rumqttc (a client nobody here wrote) against an in-process Wasp.

use std::time::Duration;

use rumqttc::{LastWill, QoS, SubscribeReasonCode};
use wasp_tests::v4::{Client, connect, options};
use wasp_tests::{Broker, QUIET};

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

async fn client(broker: &Broker, id: &str) -> Client {
    connect(options(id, broker.addr)).await
}

/// Delivery at the lower of the publish and subscription QoS, each flow completing (3.1.1 3.8.4, 4.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_round_trips_all_combinations() {
    let broker = Broker::start().await;
    let mut publisher = client(&broker, "pub").await;
    for (i, sub_qos) in QOS.into_iter().enumerate() {
        let mut sub = client(&broker, &format!("sub{i}")).await;
        let topic = format!("qos/{i}");
        assert_eq!(
            sub.subscribe(&topic, sub_qos).await,
            vec![SubscribeReasonCode::Success(sub_qos)]
        );
        for pub_qos in QOS {
            let payload = format!("{pub_qos:?}->{sub_qos:?}");
            publisher
                .publish(&topic, pub_qos, false, payload.as_bytes())
                .await;
            let m = sub.next_publish().await;
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                (topic.as_str(), payload.as_bytes())
            );
            let expected = if (pub_qos as u8) < (sub_qos as u8) {
                pub_qos
            } else {
                sub_qos
            };
            assert_eq!(m.qos, expected, "{payload}");
            assert!(!m.retain && !m.dup);
        }
        sub.no_publish(QUIET).await;
        sub.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_order_preserved() {
    let broker = Broker::start().await;
    let mut sub = client(&broker, "sub").await;
    sub.subscribe("order", QoS::AtLeastOnce).await;
    let publisher = client(&broker, "pub").await;
    for i in 0..100u32 {
        publisher
            .client
            .publish("order", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(&sub.next_publish().await.payload[..], &i.to_be_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_set_replace_delete() {
    let broker = Broker::start().await;
    let mut publisher = client(&broker, "pub").await;
    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"one")
        .await;
    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"two")
        .await;

    let mut s1 = client(&broker, "s1").await;
    s1.subscribe("r/#", QoS::AtLeastOnce).await;
    let m = s1.next_publish().await;
    assert_eq!((&m.payload[..], m.retain), (&b"two"[..], true));
    s1.no_publish(QUIET).await;

    // Live delivery of a retained publish to an existing subscription: RETAIN 0 (3.3.1-9).
    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"three")
        .await;
    let m = s1.next_publish().await;
    assert_eq!((&m.payload[..], m.retain), (&b"three"[..], false));

    // Empty payload: removes the retained message (3.3.1-10), still forwarded to subscribers.
    publisher.publish("r/t", QoS::AtLeastOnce, true, b"").await;
    assert!(s1.next_publish().await.payload.is_empty());
    let mut s2 = client(&broker, "s2").await;
    s2.subscribe("r/#", QoS::AtLeastOnce).await;
    s2.no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_on_abnormal_disconnect() {
    let broker = Broker::start().await;
    let mut watcher = client(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("dying", broker.addr);
    opts.set_last_will(LastWill::new("will/dying", "gone", QoS::AtLeastOnce, false));
    let dying = connect(opts).await;
    dying.kill();
    let m = watcher.next_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("will/dying", &b"gone"[..], QoS::AtLeastOnce)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_not_published_on_disconnect() {
    let broker = Broker::start().await;
    let mut watcher = client(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("leaving", broker.addr);
    opts.set_last_will(LastWill::new(
        "will/leaving",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    connect(opts).await.disconnect().await;
    watcher.no_publish(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_plus_and_hash() {
    let broker = Broker::start().await;
    let mut plus = client(&broker, "plus").await;
    plus.subscribe("home/+/temp", QoS::AtMostOnce).await;
    let mut hash = client(&broker, "hash").await;
    hash.subscribe("home/kitchen/#", QoS::AtMostOnce).await;
    let mut publisher = client(&broker, "pub").await;
    for t in [
        "home/kitchen/temp",
        "home/hall/temp",
        "home/kitchen",
        "home/kitchen/oven/temp",
        "home/temp",
        "homes/x/temp",
    ] {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    let mut got = vec![
        plus.next_publish().await.topic,
        plus.next_publish().await.topic,
    ];
    got.sort();
    assert_eq!(got, ["home/hall/temp", "home/kitchen/temp"]);
    plus.no_publish(QUIET).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(hash.next_publish().await.topic);
    }
    got.sort();
    // "#" also matches the parent level (4.7.1.2).
    assert_eq!(
        got,
        [
            "home/kitchen",
            "home/kitchen/oven/temp",
            "home/kitchen/temp"
        ]
    );
    hash.no_publish(QUIET).await;
}

/// Filters starting with a wildcard do not match topic names starting with `$` (4.7.2-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_2_1_sys_not_matched_by_hash() {
    let broker = Broker::start_with(|c| c.sys_interval = Some(Duration::from_millis(200))).await;
    let mut all = client(&broker, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut plus = client(&broker, "plus").await;
    plus.subscribe("+/#", QoS::AtMostOnce).await;
    let mut sys = client(&broker, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    for _ in 0..2 {
        assert!(sys.next_publish().await.topic.starts_with("$SYS/"));
    }
    let mut publisher = client(&broker, "pub").await;
    publisher
        .publish("marker", QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(all.next_publish().await.topic, "marker");
    assert_eq!(plus.next_publish().await.topic, "marker");
    all.no_publish(QUIET).await;
    plus.no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_each_message_to_one_member() {
    let broker = Broker::start().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut m = client(&broker, &format!("member{i}")).await;
        assert_eq!(
            m.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce).await,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        members.push(m);
    }
    let mut plain = client(&broker, "plain").await;
    plain.subscribe("jobs/+", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    let n = 30u8;
    for i in 0..n {
        publisher
            .publish("jobs/a", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    for i in 0..n {
        assert_eq!(
            &plain.next_publish().await.payload[..],
            &[i],
            "non-shared subscriber gets every message"
        );
    }
    let mut seen = Vec::new();
    for m in &mut members {
        while let Some(p) = m
            .inbox
            .try_wait_for(QUIET, |item| match item {
                wasp_tests::Item::Packet(rumqttc::Packet::Publish(p)) => Some(p.payload[0]),
                _ => None,
            })
            .await
        {
            seen.push(p);
            assert!(
                seen.len() <= usize::from(n),
                "more deliveries than messages: {seen:?}"
            );
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "each message to exactly one member of the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_resumes_with_queued_qos1() {
    let broker = Broker::start().await;
    let persistent = || {
        let mut o = options("keeper", broker.addr);
        o.set_clean_session(false);
        o
    };
    let mut first = connect(persistent()).await;
    assert!(!first.connack.session_present);
    first.subscribe("q/#", QoS::AtLeastOnce).await;
    first.disconnect().await;

    let mut publisher = client(&broker, "pub").await;
    for i in 0..5u8 {
        publisher
            .publish("q/t", QoS::AtLeastOnce, false, &[i])
            .await;
    }

    let mut second = connect(persistent()).await;
    assert!(
        second.connack.session_present,
        "3.2.2-2: session present on resume"
    );
    for i in 0..5u8 {
        let m = second.next_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&[i][..], QoS::AtLeastOnce));
    }
    second.no_publish(QUIET).await;
    publisher
        .publish("q/t", QoS::AtLeastOnce, false, b"live")
        .await;
    assert_eq!(
        &second.next_publish().await.payload[..],
        b"live",
        "the subscription was kept"
    );
    second.disconnect().await;

    let clean = client(&broker, "keeper").await;
    assert!(
        !clean.connack.session_present,
        "clean session discards the state"
    );
}

/// A second connection with the same client id closes the first (3.1.4-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_session_takeover() {
    let broker = Broker::start().await;
    let mut first = client(&broker, "twin").await;
    first.subscribe("t", QoS::AtLeastOnce).await;
    let mut second = client(&broker, "twin").await;
    first.closed().await;
    second.subscribe("t", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher.publish("t", QoS::AtLeastOnce, false, b"x").await;
    assert_eq!(&second.next_publish().await.payload[..], b"x");
}

/// A zero-length client id with clean session 1 is accepted (3.1.3-6, 3.1.3-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_6_empty_client_id_clean_session() {
    let broker = Broker::start().await;
    let mut anon = client(&broker, "").await;
    anon.subscribe("anon", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher
        .publish("anon", QoS::AtLeastOnce, false, b"hi")
        .await;
    assert_eq!(&anon.next_publish().await.payload[..], b"hi");
}
