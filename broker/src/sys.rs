//! The `$SYS/broker/...` topics, published as retained QoS 0 messages at the configured interval, and the
//! periodic sweep of expired retained messages.
//!
//! Topic names follow Mosquitto's where it has one, so existing dashboards work. Each limit that refuses
//! or drops something (`[limits]`, a listener's `max_connections`) has a counter under
//! `$SYS/broker/connections/refused/`, `.../publish/messages/refused/` or `.../dropped/`,
//! `.../subscriptions/refused/` or `.../packets/refused/`; `examples/wasp.toml` names them with their keys.
//! The values come from `metrics::figures`, which the Prometheus endpoint serves too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use wasp_mqtt::{Properties, QoS};

use crate::broker::Broker;
use crate::metrics::figures;
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

/// The `$SYS` topics and their current values: the broker's figures (the same the metrics endpoint
/// serves).
fn snapshot(broker: &Broker) -> Vec<(&'static str, String)> {
    figures(broker)
        .into_iter()
        .map(|f| {
            let value = if f.name == "uptime_seconds" {
                format!("{} seconds", f.value)
            } else {
                f.value.to_string()
            };
            (f.sys, value)
        })
        .collect()
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
