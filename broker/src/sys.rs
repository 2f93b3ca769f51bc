//! The `$SYS/broker/...` topics, published as retained QoS 0 messages at the configured interval, and the
//! periodic sweep of expired retained messages.
//!
//! Topic names follow Mosquitto's where it has one, so existing dashboards work. Each limit that refuses
//! or drops something (`[limits]`, a listener's `max_connections`) has a counter under
//! `$SYS/broker/connections/refused/`, `.../publish/messages/refused/` or `.../dropped/`,
//! `.../subscriptions/refused/` or `.../packets/refused/`; `examples/wasp.toml` names them with their keys.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use wasp_mqtt::{Properties, QoS};

use crate::broker::Broker;
use crate::session::Message;

/// How often expired retained messages are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Runs until `stop` changes: publishes `$SYS` every `interval` (when set) and sweeps expired retained
/// messages.
pub(crate) async fn run(
    broker: Arc<Broker>,
    interval: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    if interval.is_some() {
        publish(
            "$SYS/broker/version",
            format!("wasp {}", env!("CARGO_PKG_VERSION")),
            &broker,
        );
    }
    let mut sys_tick = interval.map(tokio::time::interval);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => {
                let removed = broker.expire_retained();
                if removed > 0 {
                    tracing::debug!(removed, "expired retained messages removed");
                }
            }
            _ = async { sys_tick.as_mut().expect("guarded").tick().await }, if sys_tick.is_some() => {
                publish_all(&broker);
            }
        }
    }
}

/// The `$SYS` topics and their current values.
fn snapshot(broker: &Broker) -> Vec<(&'static str, String)> {
    let s = &broker.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
    vec![
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.uptime().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            s.clients_connected.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/clients/total",
            broker.session_count().to_string(),
        ),
        ("$SYS/broker/messages/received", load(&s.messages_received)),
        ("$SYS/broker/messages/sent", load(&s.messages_sent)),
        (
            "$SYS/broker/publish/messages/dropped",
            load(&s.messages_dropped),
        ),
        ("$SYS/broker/bytes/received", load(&s.bytes_received)),
        ("$SYS/broker/bytes/sent", load(&s.bytes_sent)),
        (
            "$SYS/broker/subscriptions/count",
            broker.subscription_count().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained_count().to_string(),
        ),
        // What the limits refused or dropped (examples/wasp.toml names the key behind each).
        (
            "$SYS/broker/connections/refused/maximum",
            load(&s.refused_max_connections),
        ),
        (
            "$SYS/broker/connections/refused/listener",
            load(&s.refused_listener_connections),
        ),
        (
            "$SYS/broker/connections/refused/rate",
            load(&s.refused_connection_rate),
        ),
        (
            "$SYS/broker/connections/refused/connect timeout",
            load(&s.connect_timeouts),
        ),
        (
            "$SYS/broker/packets/refused/oversize",
            load(&s.oversize_packets),
        ),
        (
            "$SYS/broker/publish/messages/refused/receive maximum",
            load(&s.refused_receive_maximum),
        ),
        (
            "$SYS/broker/publish/messages/refused/topic",
            load(&s.refused_publish_topic),
        ),
        (
            "$SYS/broker/publish/messages/refused/rate",
            load(&s.refused_publish_rate),
        ),
        (
            "$SYS/broker/publish/messages/refused/bandwidth",
            load(&s.refused_publish_bandwidth),
        ),
        (
            "$SYS/broker/publish/messages/refused/queued bytes",
            load(&s.refused_queued_bytes),
        ),
        (
            "$SYS/broker/publish/messages/throttled",
            load(&s.throttled_publishes),
        ),
        (
            "$SYS/broker/publish/messages/dropped/queue full",
            load(&s.dropped_queue_full),
        ),
        (
            "$SYS/broker/publish/messages/dropped/queued bytes",
            load(&s.dropped_queued_bytes),
        ),
        (
            "$SYS/broker/subscriptions/refused/topic",
            load(&s.refused_subscribe_topic),
        ),
        (
            "$SYS/broker/subscriptions/refused/maximum",
            load(&s.refused_subscriptions),
        ),
        (
            "$SYS/broker/store/messages/bytes",
            broker.queue_budget.used().to_string(),
        ),
    ]
}

fn publish_all(broker: &Broker) {
    for (topic, value) in snapshot(broker) {
        publish(topic, value, broker);
    }
}

fn publish(topic: &str, value: String, broker: &Broker) {
    broker.publish(Message {
        topic: topic.into(),
        payload: Bytes::from(value),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::default(),
        expires_at: None,
        origin: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn sys_topics_are_retained_and_count_themselves() {
        let broker = Broker::new(Config::default());
        publish_all(&broker);
        let topics = snapshot(&broker).len();
        assert_eq!(broker.retained_count(), topics);
        // The retained count published next time includes the $SYS messages themselves.
        let count = snapshot(&broker)
            .into_iter()
            .find(|(t, _)| *t == "$SYS/broker/retained messages/count")
            .map(|(_, v)| v);
        assert_eq!(count, Some(topics.to_string()));
    }
}
