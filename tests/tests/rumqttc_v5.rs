//! MQTT 5.0 interoperability: rumqttc's v5 client (a client nobody here wrote) against an in-process Wasp.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, LastWillProperties, Packet, PublishProperties, RetainForwardRule,
    SubscribeProperties, SubscribeReasonCode,
};
use wasp_tests::v5::{Client, connect, options};
use wasp_tests::{Broker, Item, QUIET};

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

async fn client(broker: &Broker, id: &str) -> Client {
    connect(options(id, broker.addr)).await
}

fn topic_of(p: &rumqttc::v5::mqttbytes::v5::Publish) -> &str {
    std::str::from_utf8(&p.topic).expect("UTF-8 topic")
}

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
                (topic_of(&m), &m.payload[..]),
                (topic.as_str(), payload.as_bytes())
            );
            let expected = if (pub_qos as u8) < (sub_qos as u8) {
                pub_qos
            } else {
                sub_qos
            };
            assert_eq!(m.qos, expected, "{payload}");
        }
        sub.no_publish(QUIET).await;
        sub.disconnect().await;
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
    s1.subscribe("r/+", QoS::AtLeastOnce).await;
    let m = s1.next_publish().await;
    assert_eq!((&m.payload[..], m.retain), (&b"two"[..], true));
    publisher.publish("r/t", QoS::AtLeastOnce, true, b"").await;
    assert!(s1.next_publish().await.payload.is_empty());
    let mut s2 = client(&broker, "s2").await;
    s2.subscribe("r/+", QoS::AtLeastOnce).await;
    s2.no_publish(QUIET).await;
}

/// Payload format, content type, response topic, correlation data and user properties (in order) are
/// forwarded unaltered (3.3.2-4, 3.3.2-15, 3.3.2-16, 3.3.2-17, 3.3.2-18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_properties_forwarded() {
    let broker = Broker::start().await;
    let mut sub = client(&broker, "sub").await;
    sub.subscribe("props", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01id")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("a".into(), "b".into()),
        ],
        ..Default::default()
    };
    publisher
        .publish_with("props", QoS::AtLeastOnce, false, b"{}", sent.clone())
        .await;
    let m = sub.next_publish().await;
    let got = m.properties.expect("properties forwarded");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, sent.user_properties);
}

/// The forwarded Message Expiry Interval is reduced by the time waited (3.3.2-6), and a queued message whose
/// interval has passed is not delivered (3.3.2-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_5_message_expiry() {
    let broker = Broker::start().await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    let mut live = client(&broker, "live").await;
    live.subscribe("exp", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher
        .publish_with("exp", QoS::AtLeastOnce, false, b"now", expiring(100))
        .await;
    let m = live.next_publish().await;
    let interval = m
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry forwarded");
    assert!((99..=100).contains(&interval), "{interval}");

    let persistent = || {
        let mut o = options("offline", broker.addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
        o
    };
    let mut off = connect(persistent()).await;
    off.subscribe("exp", QoS::AtLeastOnce).await;
    off.disconnect().await;
    publisher
        .publish_with("exp", QoS::AtLeastOnce, false, b"short", expiring(1))
        .await;
    publisher
        .publish_with("exp", QoS::AtLeastOnce, false, b"long", expiring(100))
        .await;
    tokio::time::sleep(Duration::from_millis(2200)).await; // waiting is the point of this test
    let mut back = connect(persistent()).await;
    assert!(back.connack.session_present);
    let m = back.next_publish().await;
    assert_eq!(&m.payload[..], b"long", "the expired message is dropped");
    let interval = m
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry forwarded");
    assert!((90..=98).contains(&interval), "{interval}");
    back.no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_on_abnormal_disconnect_with_properties() {
    let broker = Broker::start().await;
    let mut watcher = client(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("dying", broker.addr);
    let props = LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: Some("text/plain".into()),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("why".into(), "test".into())],
    };
    opts.set_last_will(LastWill::new(
        "will/dying",
        "gone",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    connect(opts).await.kill();
    let m = watcher.next_publish().await;
    assert_eq!((topic_of(&m), &m.payload[..]), ("will/dying", &b"gone"[..]));
    let p = m.properties.expect("will properties forwarded");
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        p.user_properties,
        vec![("why".to_string(), "test".to_string())]
    );
}

/// DISCONNECT with reason 0x00 discards the will (3.1.2-10 / 3.14.4-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_not_published_on_normal_disconnect() {
    let broker = Broker::start().await;
    let mut watcher = client(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = options("leaving", broker.addr);
    opts.set_last_will(LastWill::new(
        "will/leaving",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    connect(opts).await.disconnect().await;
    watcher.no_publish(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_and_sys_exclusion() {
    let broker = Broker::start_with(|c| c.sys_interval = Some(Duration::from_millis(200))).await;
    let mut all = client(&broker, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut plus = client(&broker, "plus").await;
    plus.subscribe("a/+/c", QoS::AtMostOnce).await;
    let mut sys = client(&broker, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    assert!(topic_of(&sys.next_publish().await).starts_with("$SYS/"));
    let mut publisher = client(&broker, "pub").await;
    for t in ["a/b/c", "a/c", "a/b/c/d"] {
        publisher.publish(t, QoS::AtLeastOnce, false, b"x").await;
    }
    assert_eq!(topic_of(&plus.next_publish().await), "a/b/c");
    plus.no_publish(QUIET).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(topic_of(&all.next_publish().await).to_string());
    }
    assert_eq!(
        got,
        ["a/b/c", "a/c", "a/b/c/d"],
        "'#' gets every topic but no $SYS one (4.7.2-1)"
    );
    all.no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_each_message_to_one_member() {
    let broker = Broker::start().await;
    let mut members = Vec::new();
    for i in 0..2 {
        let mut m = client(&broker, &format!("member{i}")).await;
        m.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
        members.push(m);
    }
    let mut publisher = client(&broker, "pub").await;
    let n = 20u8;
    for i in 0..n {
        publisher
            .publish("jobs", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    let mut seen = Vec::new();
    for m in &mut members {
        while let Some(p) = m
            .inbox
            .try_wait_for(QUIET, |item| match item {
                Item::Packet(Packet::Publish(p)) => Some(p.payload[0]),
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
        "each message to exactly one member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resume_with_queued_messages_and_expiry() {
    let broker = Broker::start().await;
    let persistent = |expiry| {
        let mut o = options("keeper", broker.addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
        o
    };
    let mut first = connect(persistent(300)).await;
    assert!(!first.connack.session_present);
    first.subscribe("q/#", QoS::ExactlyOnce).await;
    first.disconnect().await;
    let mut publisher = client(&broker, "pub").await;
    for i in 0..5u8 {
        publisher
            .publish("q/t", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    publisher
        .publish("q/t", QoS::ExactlyOnce, false, b"two")
        .await;
    let mut second = connect(persistent(0)).await;
    assert!(second.connack.session_present, "3.2.2-2");
    for i in 0..5u8 {
        let m = second.next_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&[i][..], QoS::AtLeastOnce));
    }
    let m = second.next_publish().await;
    assert_eq!((&m.payload[..], m.qos), (&b"two"[..], QoS::ExactlyOnce));
    second.no_publish(QUIET).await;
    // This connection asked for Session Expiry 0: the session ends with it (3.1.2-23).
    second.disconnect().await;
    let third = connect(persistent(300)).await;
    assert!(
        !third.connack.session_present,
        "session with expiry 0 did not survive the disconnect"
    );
}

/// Takeover: the existing connection gets DISCONNECT 0x8E Session taken over and is closed (3.1.4-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_3_session_takeover() {
    let broker = Broker::start().await;
    let mut first = client(&broker, "twin").await;
    let _second = client(&broker, "twin").await;
    let end = first.closed().await;
    assert!(
        end.contains("SessionTakenOver"),
        "expected DISCONNECT 0x8E, the connection ended with {end}"
    );
}

/// No Local: no delivery of a client's own publications on that subscription (3.8.3-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_3_3_no_local() {
    let broker = Broker::start().await;
    let mut c = client(&broker, "c").await;
    let mut f = Filter::new("nl", QoS::AtLeastOnce);
    f.nolocal = true;
    c.subscribe_filter(f, None).await;
    c.publish("nl", QoS::AtLeastOnce, false, b"own").await;
    let mut other = client(&broker, "other").await;
    other.publish("nl", QoS::AtLeastOnce, false, b"other").await;
    assert_eq!(&c.next_publish().await.payload[..], b"other");
    c.no_publish(QUIET).await;
}

/// Retain As Published keeps RETAIN on live forwarding; without it RETAIN is cleared (3.3.1-12, 3.3.1-13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_12_retain_as_published() {
    let broker = Broker::start().await;
    let mut rap = client(&broker, "rap").await;
    let mut f = Filter::new("rap", QoS::AtLeastOnce);
    f.preserve_retain = true;
    rap.subscribe_filter(f, None).await;
    let mut plain = client(&broker, "plain").await;
    plain.subscribe("rap", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    publisher.publish("rap", QoS::AtLeastOnce, true, b"x").await;
    assert!(rap.next_publish().await.retain);
    assert!(!plain.next_publish().await.retain);
}

/// Retain Handling 0 / 1 / 2 (3.3.1-9, 3.3.1-10, 3.3.1-11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_9_retain_handling() {
    let broker = Broker::start().await;
    client(&broker, "pub")
        .await
        .publish("rh", QoS::AtLeastOnce, true, b"kept")
        .await;
    let filter = |rule| {
        let mut f = Filter::new("rh", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f
    };
    let mut every = client(&broker, "every").await;
    for _ in 0..2 {
        every
            .subscribe_filter(filter(RetainForwardRule::OnEverySubscribe), None)
            .await;
        assert_eq!(&every.next_publish().await.payload[..], b"kept");
    }
    let mut new_only = client(&broker, "new").await;
    new_only
        .subscribe_filter(filter(RetainForwardRule::OnNewSubscribe), None)
        .await;
    assert_eq!(&new_only.next_publish().await.payload[..], b"kept");
    new_only
        .subscribe_filter(filter(RetainForwardRule::OnNewSubscribe), None)
        .await;
    new_only.no_publish(QUIET).await;
    let mut never = client(&broker, "never").await;
    never
        .subscribe_filter(filter(RetainForwardRule::Never), None)
        .await;
    never.no_publish(QUIET).await;
}

/// The identifiers of the matching subscriptions come with the message (3.3.4-3, 3.8.2.1.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_3_subscription_identifiers() {
    let broker = Broker::start().await;
    let mut c = client(&broker, "c").await;
    let id = |n| {
        Some(SubscribeProperties {
            id: Some(n),
            user_properties: vec![],
        })
    };
    c.subscribe_filter(Filter::new("s/+", QoS::AtLeastOnce), id(7))
        .await;
    c.subscribe_filter(Filter::new("s/#", QoS::AtLeastOnce), id(300))
        .await;
    let mut publisher = client(&broker, "pub").await;
    publisher
        .publish("s/x", QoS::AtLeastOnce, false, b"1")
        .await;
    let mut ids = Vec::new();
    while let Some(mut found) = c
        .inbox
        .try_wait_for(QUIET, |item| match item {
            Item::Packet(Packet::Publish(p)) => Some(
                p.properties
                    .as_ref()
                    .map(|p| p.subscription_identifiers.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        })
        .await
    {
        ids.append(&mut found);
        assert!(ids.len() <= 2, "{ids:?}");
    }
    ids.sort();
    assert_eq!(ids, [7, 300]);
}

/// A client may set a topic alias and then publish with an empty topic name (3.3.2.3.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_3_4_topic_alias_from_client() {
    let broker = Broker::start().await;
    let mut sub = client(&broker, "sub").await;
    sub.subscribe("alias/t", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, "pub").await;
    let maximum = publisher
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.topic_alias_max)
        .unwrap_or(0);
    assert!(maximum >= 1, "CONNACK Topic Alias Maximum {maximum}");
    let alias = || PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    publisher
        .publish_with("alias/t", QoS::AtLeastOnce, false, b"a", alias())
        .await;
    publisher
        .publish_with("", QoS::AtLeastOnce, false, b"b", alias())
        .await;
    for expected in [b"a", b"b"] {
        let m = sub.next_publish().await;
        assert_eq!((topic_of(&m), &m.payload[..]), ("alias/t", &expected[..]));
    }
}

/// An empty client id gets an Assigned Client Identifier (3.2.2.3.7), different for each connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_2_3_7_assigned_client_identifier() {
    let broker = Broker::start().await;
    let assigned = |c: &Client| {
        c.connack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .expect("assigned id")
    };
    let a = client(&broker, "").await;
    let b = client(&broker, "").await;
    assert!(!assigned(&a).is_empty());
    assert_ne!(assigned(&a), assigned(&b));
}
