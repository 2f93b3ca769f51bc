//! The broker's figures, and the Prometheus endpoint that serves them.
//!
//! [`figures`] is the one table of what the broker counts (`Stats` counters and a few gauges); the
//! `$SYS` topics (`sys`) and the endpoint both read it, so they always agree. The endpoint (configuration
//! `[metrics] bind`, off by default) answers `GET /metrics` in the OpenMetrics text format with those
//! figures plus each plugin's calls, failures by cause and call-duration histogram per hook. Values are
//! read when scraped: serving metrics adds nothing to the message path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};
use wasp_plugin_host::{CALL_DURATION_BOUNDS_US, Hook, Plugin};

use crate::broker::Broker;

/// Whether a figure only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One thing the broker counts, under its `$SYS` topic and its metric name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figure {
    /// The `$SYS` topic (Mosquitto's name where it has one).
    pub(crate) sys: &'static str,
    /// The metric name, without the `wasp_` prefix (counters get `_total` when encoded).
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) value: u64,
}

/// Every figure, read now.
pub(crate) fn figures(broker: &Broker) -> Vec<Figure> {
    use Kind::{Counter, Gauge};
    let s = &broker.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let figure = |sys, name, help, kind, value| Figure {
        sys,
        name,
        help,
        kind,
        value,
    };
    let mut figures = vec![
        figure(
            "$SYS/broker/uptime",
            "uptime_seconds",
            "Seconds since the broker started.",
            Gauge,
            broker.uptime().as_secs(),
        ),
        figure(
            "$SYS/broker/clients/connected",
            "clients_connected",
            "Clients connected now.",
            Gauge,
            s.clients_connected.load(Ordering::Relaxed) as u64,
        ),
        figure(
            "$SYS/broker/clients/total",
            "sessions",
            "Sessions, connected or not.",
            Gauge,
            broker.session_count() as u64,
        ),
        figure(
            "$SYS/broker/messages/received",
            "messages_received",
            "PUBLISH packets received from clients.",
            Counter,
            load(&s.messages_received),
        ),
        figure(
            "$SYS/broker/messages/sent",
            "messages_sent",
            "PUBLISH packets sent to clients.",
            Counter,
            load(&s.messages_sent),
        ),
        figure(
            "$SYS/broker/publish/messages/dropped",
            "messages_dropped",
            "Deliveries dropped (a full session queue, the queue byte budget).",
            Counter,
            load(&s.messages_dropped),
        ),
        figure(
            "$SYS/broker/bytes/received",
            "bytes_received",
            "Bytes read from client sockets.",
            Counter,
            load(&s.bytes_received),
        ),
        figure(
            "$SYS/broker/bytes/sent",
            "bytes_sent",
            "Bytes written to client sockets.",
            Counter,
            load(&s.bytes_sent),
        ),
        figure(
            "$SYS/broker/subscriptions/count",
            "subscriptions",
            "Subscriptions of all sessions.",
            Gauge,
            broker.subscription_count() as u64,
        ),
        figure(
            "$SYS/broker/retained messages/count",
            "retained_messages",
            "Retained messages.",
            Gauge,
            broker.retained_count() as u64,
        ),
        figure(
            "$SYS/broker/store/messages/bytes",
            "queued_bytes",
            "Bytes of the messages waiting in session queues (limits.max_queued_bytes).",
            Gauge,
            broker.queue_budget.used(),
        ),
        // What the limits refused or dropped (examples/wasp.toml names the key behind each).
        figure(
            "$SYS/broker/connections/refused/maximum",
            "connections_refused_maximum",
            "Connections refused by limits.max_connections.",
            Counter,
            load(&s.refused_max_connections),
        ),
        figure(
            "$SYS/broker/connections/refused/listener",
            "connections_refused_listener",
            "Connections refused by a listener's max_connections.",
            Counter,
            load(&s.refused_listener_connections),
        ),
        figure(
            "$SYS/broker/connections/refused/rate",
            "connections_refused_rate",
            "Sockets closed by limits.max_connections_per_sec.",
            Counter,
            load(&s.refused_connection_rate),
        ),
        figure(
            "$SYS/broker/connections/refused/connect timeout",
            "connections_refused_connect_timeout",
            "Sockets closed for not completing CONNECT within limits.connect_timeout_secs.",
            Counter,
            load(&s.connect_timeouts),
        ),
        figure(
            "$SYS/broker/packets/refused/oversize",
            "packets_refused_oversize",
            "Packets larger than limits.max_packet_size.",
            Counter,
            load(&s.oversize_packets),
        ),
        figure(
            "$SYS/broker/publish/messages/refused/receive maximum",
            "messages_refused_receive_maximum",
            "Clients disconnected for exceeding limits.receive_maximum.",
            Counter,
            load(&s.refused_receive_maximum),
        ),
        figure(
            "$SYS/broker/publish/messages/refused/topic",
            "messages_refused_topic",
            "PUBLISH and Will topics beyond limits.max_topic_length or max_topic_levels.",
            Counter,
            load(&s.refused_publish_topic),
        ),
        figure(
            "$SYS/broker/publish/messages/refused/rate",
            "messages_refused_rate",
            "PUBLISH packets refused by limits.max_publish_rate.",
            Counter,
            load(&s.refused_publish_rate),
        ),
        figure(
            "$SYS/broker/publish/messages/refused/bandwidth",
            "messages_refused_bandwidth",
            "PUBLISH packets refused by limits.max_publish_bytes_per_sec.",
            Counter,
            load(&s.refused_publish_bandwidth),
        ),
        figure(
            "$SYS/broker/publish/messages/refused/queued bytes",
            "messages_refused_queued_bytes",
            "PUBLISH packets refused while limits.max_queued_bytes was reached.",
            Counter,
            load(&s.refused_queued_bytes),
        ),
        figure(
            "$SYS/broker/publish/messages/throttled",
            "messages_throttled",
            "MQTT 3.x PUBLISH packets held back by a limit.",
            Counter,
            load(&s.throttled_publishes),
        ),
        figure(
            "$SYS/broker/publish/messages/dropped/queue full",
            "messages_dropped_queue_full",
            "Deliveries dropped at limits.max_queued_messages.",
            Counter,
            load(&s.dropped_queue_full),
        ),
        figure(
            "$SYS/broker/publish/messages/dropped/queued bytes",
            "messages_dropped_queued_bytes",
            "Deliveries dropped at limits.max_queued_bytes.",
            Counter,
            load(&s.dropped_queued_bytes),
        ),
        figure(
            "$SYS/broker/subscriptions/refused/topic",
            "subscriptions_refused_topic",
            "SUBSCRIBE filters beyond limits.max_topic_length or max_topic_levels.",
            Counter,
            load(&s.refused_subscribe_topic),
        ),
        figure(
            "$SYS/broker/subscriptions/refused/maximum",
            "subscriptions_refused_maximum",
            "SUBSCRIBE filters beyond limits.max_subscriptions_per_client.",
            Counter,
            load(&s.refused_subscriptions),
        ),
    ];
    if let Some(store) = broker.store() {
        let (writes, failures, pending) = store.counts();
        figures.extend([
            figure(
                "$SYS/broker/store/writes",
                "storage_writes",
                "Batches the storage backend wrote (each durable when it returned).",
                Counter,
                writes,
            ),
            figure(
                "$SYS/broker/store/write failures",
                "storage_write_failures",
                "Storage writes that failed (each retried; acknowledgements wait meanwhile).",
                Counter,
                failures,
            ),
            figure(
                "$SYS/broker/store/ops pending",
                "storage_ops_pending",
                "Changes appended for storage and not yet durable.",
                Gauge,
                pending,
            ),
        ]);
    }
    figures
}

/// What a scrape reads: the broker's figures and the plugins' statistics.
struct Scrape {
    broker: Arc<Broker>,
    plugins: Vec<Plugin>,
}

/// `Collector` asks for `Debug`; the broker's state is not worth printing.
impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plugins: Vec<_> = self.plugins.iter().map(Plugin::name).collect();
        f.debug_struct("Scrape")
            .field("plugins", &plugins)
            .finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in figures(&self.broker) {
            match f.kind {
                Kind::Counter => ConstCounter::new(f.value).encode(encoder.encode_descriptor(
                    f.name,
                    f.help,
                    None,
                    MetricType::Counter,
                )?)?,
                Kind::Gauge => ConstGauge::new(i64::try_from(f.value).unwrap_or(i64::MAX)).encode(
                    encoder.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?,
                )?,
            }
        }
        if self.plugins.is_empty() {
            return Ok(());
        }
        let stats: Vec<_> = self.plugins.iter().map(|p| (p.name(), p.stats())).collect();
        let mut family = encoder.encode_descriptor(
            "plugin_calls",
            "Hook calls per plugin and hook.",
            None,
            MetricType::Counter,
        )?;
        for (plugin, s) in &stats {
            for hook in Hook::ALL {
                let labels = [("plugin", *plugin), ("hook", hook.wit_name())];
                ConstCounter::new(s.calls_of(hook)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "plugin_failures",
            "Failed plugin calls (hooks and ticks) by cause; the failure policy answered them.",
            None,
            MetricType::Counter,
        )?;
        for (plugin, s) in &stats {
            let f = &s.failures;
            for (cause, n) in [
                ("trap", f.trap),
                ("timeout", f.timeout),
                ("out-of-memory", f.out_of_memory),
                ("invalid-output", f.invalid_output),
                ("missing-export", f.missing_export),
                ("instantiate", f.instantiate),
            ] {
                let labels = [("plugin", *plugin), ("cause", cause)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "plugin_call_duration_seconds",
            "How long hook calls took, failed ones included.",
            None,
            MetricType::Histogram,
        )?;
        for (plugin, s) in &stats {
            for hook in Hook::ALL {
                let d = &s.durations[hook as usize];
                let buckets: Vec<(f64, u64)> = CALL_DURATION_BOUNDS_US
                    .iter()
                    .map(|&us| us as f64 / 1e6)
                    .chain([f64::INFINITY])
                    .zip(d.buckets.iter().copied())
                    .collect();
                let labels = [("plugin", *plugin), ("hook", hook.wit_name())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        d.sum_nanos as f64 / 1e9,
                        d.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

/// The registry of one broker: everything under the `wasp_` prefix.
fn registry(broker: Arc<Broker>, plugins: Vec<Plugin>) -> Registry {
    let mut registry = Registry::with_prefix("wasp");
    registry.register_collector(Box::new(Scrape { broker, plugins }));
    registry
}

/// Serves `GET /metrics` on `listener` until `stop` changes. One task per scrape connection; a failing
/// connection only costs that scrape.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    plugins: Vec<Plugin>,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(registry(broker, plugins));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let registry = registry.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| answer(registry.clone(), request));
                        if let Err(e) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            debug!(%peer, error = %e, "metrics connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn answer(
    registry: Arc<Registry>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        Ok(response)
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("encoding failed: {e}\n"),
        ),
    }
}
