//! The Prometheus endpoint (`[metrics] bind`): what it serves, and that it agrees with `$SYS`.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use wasp_tests::{Broker, v5};

/// The value of the sample `name` (a whole line `name value`) in an OpenMetrics text body.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_traffic_and_agree_with_sys() {
    let broker = Broker::start_with(|c| {
        c.metrics_bind = Some("127.0.0.1:0".parse().expect("loopback"));
        c.sys_interval = Some(Duration::from_secs(1));
    })
    .await;
    let (code, body) = broker.scrape("/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        sample(&body, "wasp_messages_received_total"),
        Some(0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE wasp_clients_connected gauge"),
        "{body}"
    );
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF: {body}"
    );

    let mut client = v5::connect(v5::options("metrics", broker.addr)).await;
    client.subscribe("m/#", QoS::AtLeastOnce).await;
    for i in 0..3u8 {
        client
            .publish_acked("m/x", false, &[i], PublishProperties::default())
            .await;
        client.next_publish().await;
    }
    let (_, body) = broker.scrape("/metrics").await;
    assert_eq!(
        sample(&body, "wasp_messages_received_total"),
        Some(3),
        "{body}"
    );
    assert_eq!(sample(&body, "wasp_clients_connected"), Some(1), "{body}");
    assert_eq!(sample(&body, "wasp_subscriptions"), Some(1), "{body}");
    assert!(
        sample(&body, "wasp_bytes_received_total").is_some_and(|b| b > 0),
        "{body}"
    );

    // $SYS publishes the same figure (every second here; the retained one may predate the traffic).
    client
        .subscribe("$SYS/broker/messages/received", QoS::AtMostOnce)
        .await;
    for attempt in 0.. {
        let sys = client.next_publish().await;
        match std::str::from_utf8(&sys.payload) {
            Ok("3") => break,
            Ok("0") if attempt < 3 => {}
            other => panic!("$SYS/broker/messages/received = {other:?}, the endpoint said 3"),
        }
    }

    let (code, _) = broker.scrape("/other").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_configured() {
    let broker = Broker::start().await;
    assert_eq!(broker.metrics, None);
}
