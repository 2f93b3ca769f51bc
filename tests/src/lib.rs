//! Helpers for Wasp's integration tests (the tests themselves are in `tests/tests/`).
//!
//! - [`Broker`]: a Wasp broker running in-process on `127.0.0.1:0`, stopped when dropped.
//! - [`Inbox`]: what a client's event loop received, with bounded waits for an item that must arrive
//!   ([`Inbox::wait_for`]) or must not ([`Inbox::none_within`]).
//! - [`v4`] / [`v5`]: rumqttc clients (MQTT 3.1.1 / 5.0) whose event loop runs in a task feeding an [`Inbox`].
//! - [`raw`]: a TCP socket speaking hand-written bytes, for the negative paths.
//! - [`idp`]: a mock OAuth identity provider (JWKS, introspection) over HTTPS on loopback.
//! - [`pki`]: certificate authorities and the server and client certificates they sign, for TLS tests.
//! - [`cli`]: runs a command-line client (`mosquitto_pub`, `mosquitto_sub`, a Python script) with a bound.
//!
//! Every wait is bounded by [`TIMEOUT`] (must happen) or a short quiet period such as [`QUIET`] (must not).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use wasp::config::Config;

pub mod idp;
pub mod load;
pub mod pki;
pub mod storage;

pub mod cli {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// How a command ended.
    #[derive(Debug)]
    pub struct Output {
        pub success: bool,
        pub stdout: String,
        pub stderr: String,
    }

    /// Runs `program` with `args` (no stdin) on a blocking thread; kills it and panics if it has not
    /// exited within `limit`.
    pub async fn run(program: &str, args: Vec<String>, limit: Duration) -> Output {
        let program = program.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(&program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {program} (tests/run installs the clients): {e}")
                });
            let deadline = Instant::now() + limit;
            while child.try_wait().expect("wait for the child").is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{program} {args:?} did not exit within {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let output = child.wait_with_output().expect("child output");
            Output {
                success: output.status.success(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .await
        .expect("command task")
    }
}

/// Longest wait for something that must happen.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long to watch for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(500);

/// An in-process Wasp broker listening on a free loopback port; shut down on drop.
pub struct Broker {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The running broker's shared state (`Server::broker`): its counters, for tests of what `$SYS`
    /// reports.
    pub state: std::sync::Arc<wasp::broker::Broker>,
    /// The Prometheus endpoint's address, when the configuration has `metrics_bind`.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Broker {
    /// `GET path` on the metrics endpoint: the status line's code and the body. Panics without an
    /// endpoint, or if it does not answer within [`TIMEOUT`].
    pub async fn scrape(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.expect("the broker has a metrics endpoint");
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            std::io::Result::Ok(response)
        };
        let response = timeout(TIMEOUT, exchange)
            .await
            .expect("metrics answered in time")
            .expect("metrics exchange");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (code, body.to_owned())
    }

    /// Starts a broker with the default configuration.
    pub async fn start() -> Broker {
        Broker::start_with(|_| {}).await
    }

    /// Starts a broker after `configure` adjusted the default configuration (bound to `127.0.0.1:0`).
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Broker {
        Broker::start_listeners(configure).await.0
    }
}

impl Broker {
    /// Starts a broker after `configure` adjusted the default configuration (whose one listener is bound to
    /// `127.0.0.1:0`), and returns it with the bound address of every listener, by name, in configuration
    /// order: for configurations with several listeners (give them `127.0.0.1:0` too). [`Broker::addr`] is
    /// the first listener's.
    pub async fn start_listeners(
        configure: impl FnOnce(&mut Config),
    ) -> (Broker, Vec<(String, SocketAddr)>) {
        let mut config = Config::default();
        config.listeners[0].bind = "127.0.0.1:0".parse().expect("loopback address");
        configure(&mut config);
        let server = wasp::server::Server::bind(config)
            .await
            .expect("broker binds");
        let addrs = server.local_addrs();
        let addr = addrs[0].1;
        let state = server.broker();
        let metrics = server.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("broker runs");
        });
        (
            Broker {
                addr,
                state,
                metrics,
                stop: Some(stop),
                task: Some(task),
            },
            addrs,
        )
    }

    /// Shuts the broker down gracefully and waits (up to 10 s) until it has: its connections closed,
    /// its last storage write done, its plugins dropped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(Duration::from_secs(10), task)
                .await
                .expect("the broker stops within 10 s")
                .expect("the broker task ends without panicking");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One thing a client's event loop produced: an incoming packet, or the end of the connection.
#[derive(Debug)]
pub enum Item<P, E> {
    /// A packet received from the broker.
    Packet(P),
    /// The connection ended (the event loop is not polled again, so the client does not reconnect).
    Closed(E),
}

/// Items received by a client, with bounded waits; items skipped by one wait stay for the next.
pub struct Inbox<P, E> {
    rx: mpsc::UnboundedReceiver<Item<P, E>>,
    pending: VecDeque<Item<P, E>>,
}

impl<P: Debug, E: Debug> Inbox<P, E> {
    /// Creates an inbox fed by `rx`.
    pub fn new(rx: mpsc::UnboundedReceiver<Item<P, E>>) -> Self {
        Inbox {
            rx,
            pending: VecDeque::new(),
        }
    }

    fn take_pending<T>(&mut self, f: &mut impl FnMut(&Item<P, E>) -> Option<T>) -> Option<T> {
        let index = self.pending.iter().position(|item| f(item).is_some())?;
        let item = self.pending.remove(index).expect("index in range");
        f(&item)
    }

    /// Waits up to `limit` for the first item `f` accepts (earlier skipped items included); `None` on timeout.
    pub async fn try_wait_for<T>(
        &mut self,
        limit: Duration,
        mut f: impl FnMut(&Item<P, E>) -> Option<T>,
    ) -> Option<T> {
        if let Some(found) = self.take_pending(&mut f) {
            return Some(found);
        }
        let deadline = Instant::now() + limit;
        loop {
            let item = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.rx.recv(),
            )
            .await
            {
                Ok(Some(item)) => item,
                // Timed out, or the event loop task is gone and everything it sent was seen.
                Ok(None) | Err(_) => return None,
            };
            if let Some(found) = f(&item) {
                return Some(found);
            }
            self.pending.push_back(item);
        }
    }

    /// Waits up to [`TIMEOUT`] for the first item `f` accepts; panics naming `what` otherwise.
    pub async fn wait_for<T>(&mut self, what: &str, f: impl FnMut(&Item<P, E>) -> Option<T>) -> T {
        match self.try_wait_for(TIMEOUT, f).await {
            Some(found) => found,
            None => panic!(
                "no {what} within {TIMEOUT:?}; other items received: {:?}",
                self.pending
            ),
        }
    }

    /// Asserts that no item `f` accepts arrives within `quiet`.
    pub async fn none_within<T: Debug>(
        &mut self,
        quiet: Duration,
        what: &str,
        f: impl FnMut(&Item<P, E>) -> Option<T>,
    ) {
        if let Some(found) = self.try_wait_for(quiet, f).await {
            panic!("unexpected {what}: {found:?}");
        }
    }
}

/// A rumqttc event loop (3.1.1 or 5.0), polled for incoming packets only.
trait PollIncoming: Send + 'static {
    type Packet: Send + 'static;
    type Error: Send + 'static;
    fn poll_incoming(
        &mut self,
    ) -> impl Future<Output = Result<Option<Self::Packet>, Self::Error>> + Send;
}

impl PollIncoming for rumqttc::EventLoop {
    type Packet = rumqttc::Packet;
    type Error = rumqttc::ConnectionError;
    async fn poll_incoming(&mut self) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(match self.poll().await? {
            rumqttc::Event::Incoming(packet) => Some(packet),
            rumqttc::Event::Outgoing(_) => None,
        })
    }
}

impl PollIncoming for rumqttc::v5::EventLoop {
    type Packet = rumqttc::v5::mqttbytes::v5::Packet;
    type Error = rumqttc::v5::ConnectionError;
    async fn poll_incoming(&mut self) -> Result<Option<Self::Packet>, Self::Error> {
        Ok(match self.poll().await? {
            rumqttc::v5::Event::Incoming(packet) => Some(packet),
            rumqttc::v5::Event::Outgoing(_) => None,
        })
    }
}

/// Runs an event loop in a task that forwards incoming packets and stops at the first error, so the client
/// never reconnects behind a test's back. Aborting the task drops the socket without DISCONNECT.
fn spawn_event_loop<L: PollIncoming>(
    mut event_loop: L,
) -> (JoinHandle<()>, Inbox<L::Packet, L::Error>)
where
    L::Packet: Debug,
    L::Error: Debug,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match event_loop.poll_incoming().await {
                Ok(Some(packet)) => {
                    if tx.send(Item::Packet(packet)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = tx.send(Item::Closed(e));
                    return;
                }
            }
        }
    });
    (task, Inbox::new(rx))
}

/// rumqttc clients speaking MQTT 3.1.1.
pub mod v4 {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rumqttc::{
        AsyncClient, ConnAck, ConnectionError, MqttOptions, Packet, Publish, QoS,
        SubscribeReasonCode,
    };
    use tokio::task::JoinHandle;

    use super::{Inbox, Item};

    /// An item of a 3.1.1 client's inbox.
    pub type V4Item = Item<Packet, ConnectionError>;

    /// Options for client `id` connecting to `addr` (keep alive 30 s).
    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// A connected 3.1.1 client.
    pub struct Client {
        /// The rumqttc handle for requests.
        pub client: AsyncClient,
        /// What the event loop received.
        pub inbox: Inbox<Packet, ConnectionError>,
        /// The CONNACK that opened the connection.
        pub connack: ConnAck,
        task: JoinHandle<()>,
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: MqttOptions) -> Client {
        let (client, event_loop) = AsyncClient::new(options, 100);
        let (task, mut inbox) = super::spawn_event_loop(event_loop);
        let connack = inbox
            .wait_for("CONNACK", |item| match item {
                Item::Packet(Packet::ConnAck(ack)) => Some(Ok(ack.clone())),
                Item::Closed(e) => Some(Err(format!("{e:?}"))),
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("connection failed: {e}"));
        assert_eq!(
            connack.code,
            rumqttc::ConnectReturnCode::Success,
            "CONNACK refused"
        );
        Client {
            client,
            inbox,
            connack,
            task,
        }
    }

    /// Connects expecting a refusal: returns the CONNACK return code. Panics if the broker accepts the
    /// client or closes the connection without a CONNACK.
    pub async fn connect_refused(options: MqttOptions) -> rumqttc::ConnectReturnCode {
        let (_client, event_loop) = AsyncClient::new(options, 100);
        let (task, mut inbox) = super::spawn_event_loop(event_loop);
        let outcome = inbox
            .wait_for("CONNACK", |item| match item {
                Item::Packet(Packet::ConnAck(ack)) => Some(Err(format!("accepted: {ack:?}"))),
                Item::Closed(ConnectionError::ConnectionRefused(code)) => Some(Ok(*code)),
                Item::Closed(e) => Some(Err(format!("closed without a refusing CONNACK: {e:?}"))),
                _ => None,
            })
            .await;
        task.abort();
        outcome.unwrap_or_else(|e| panic!("expected a refused CONNACK, got {e}"))
    }

    impl Client {
        /// Subscribes and waits for the SUBACK; returns its return codes.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("subscribe queued");
            self.inbox
                .wait_for("SUBACK", |item| match item {
                    Item::Packet(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                    _ => None,
                })
                .await
        }

        /// Publishes and, for QoS 1 and 2, waits for the PUBACK / PUBCOMP.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .expect("publish queued");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.inbox
                        .wait_for("PUBACK", |i| {
                            matches!(i, Item::Packet(Packet::PubAck(_))).then_some(())
                        })
                        .await
                }
                QoS::ExactlyOnce => {
                    self.inbox
                        .wait_for("PUBCOMP", |i| {
                            matches!(i, Item::Packet(Packet::PubComp(_))).then_some(())
                        })
                        .await
                }
            }
        }

        /// The next PUBLISH received.
        pub async fn next_publish(&mut self) -> Publish {
            self.inbox.wait_for("PUBLISH", publish_of).await
        }

        /// Asserts that no PUBLISH arrives within `quiet`.
        pub async fn no_publish(&mut self, quiet: Duration) {
            self.inbox.none_within(quiet, "PUBLISH", publish_of).await
        }

        /// Waits for the end of the connection; returns its description.
        pub async fn closed(&mut self) -> String {
            self.inbox
                .wait_for("end of connection", |item| match item {
                    Item::Closed(e) => Some(format!("{e:?}")),
                    _ => None,
                })
                .await
        }

        /// Sends DISCONNECT and waits until the event loop stops.
        pub async fn disconnect(mut self) {
            self.client.disconnect().await.expect("disconnect queued");
            self.closed().await;
        }

        /// Drops the TCP connection without DISCONNECT (an abnormal disconnection).
        pub fn kill(self) {
            self.task.abort();
        }
    }

    fn publish_of(item: &V4Item) -> Option<Publish> {
        match item {
            Item::Packet(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        }
    }
}

/// rumqttc clients speaking MQTT 5.0.
pub mod v5 {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, Filter, Packet, PubAck, Publish, PublishProperties,
        SubscribeProperties, SubscribeReasonCode,
    };
    use rumqttc::v5::{AsyncClient, ConnectionError, MqttOptions};
    use tokio::task::JoinHandle;

    use super::{Inbox, Item};

    /// An item of a 5.0 client's inbox.
    pub type V5Item = Item<Packet, ConnectionError>;

    /// Options for client `id` connecting to `addr` (keep alive 30 s).
    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// A connected 5.0 client.
    pub struct Client {
        /// The rumqttc handle for requests.
        pub client: AsyncClient,
        /// What the event loop received.
        pub inbox: Inbox<Packet, ConnectionError>,
        /// The CONNACK that opened the connection.
        pub connack: ConnAck,
        task: JoinHandle<()>,
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: MqttOptions) -> Client {
        let (client, event_loop) = AsyncClient::new(options, 100);
        let (task, mut inbox) = super::spawn_event_loop(event_loop);
        let connack = inbox
            .wait_for("CONNACK", |item| match item {
                Item::Packet(Packet::ConnAck(ack)) => Some(Ok(ack.clone())),
                Item::Closed(e) => Some(Err(format!("{e:?}"))),
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("connection failed: {e}"));
        assert_eq!(connack.code, ConnectReturnCode::Success, "CONNACK refused");
        Client {
            client,
            inbox,
            connack,
            task,
        }
    }

    /// Connects expecting a refusal: returns the CONNACK reason code. Panics if the broker accepts the
    /// client or closes the connection without a CONNACK.
    pub async fn connect_refused(options: MqttOptions) -> ConnectReturnCode {
        let (_client, event_loop) = AsyncClient::new(options, 100);
        let (task, mut inbox) = super::spawn_event_loop(event_loop);
        let outcome = inbox
            .wait_for("CONNACK", |item| match item {
                Item::Packet(Packet::ConnAck(ack)) => Some(Err(format!("accepted: {ack:?}"))),
                Item::Closed(ConnectionError::ConnectionRefused(code)) => Some(Ok(*code)),
                Item::Closed(e) => Some(Err(format!("closed without a refusing CONNACK: {e:?}"))),
                _ => None,
            })
            .await;
        task.abort();
        outcome.unwrap_or_else(|e| panic!("expected a refused CONNACK, got {e}"))
    }

    impl Client {
        /// Publishes at QoS 1 with `properties` and returns the PUBACK (its reason code tells a refusal).
        pub async fn publish_acked(
            &mut self,
            topic: &str,
            retain: bool,
            payload: &[u8],
            properties: PublishProperties,
        ) -> PubAck {
            self.client
                .publish_with_properties(
                    topic,
                    QoS::AtLeastOnce,
                    retain,
                    payload.to_vec(),
                    properties,
                )
                .await
                .expect("publish queued");
            self.inbox
                .wait_for("PUBACK", |item| match item {
                    Item::Packet(Packet::PubAck(ack)) => Some(ack.clone()),
                    _ => None,
                })
                .await
        }

        /// Subscribes with `filter`'s options and `properties`, waits for the SUBACK and returns its codes.
        pub async fn subscribe_filter(
            &mut self,
            filter: Filter,
            properties: Option<SubscribeProperties>,
        ) -> Vec<SubscribeReasonCode> {
            match properties {
                Some(p) => {
                    self.client
                        .subscribe_many_with_properties([filter], p)
                        .await
                }
                None => self.client.subscribe_many([filter]).await,
            }
            .expect("subscribe queued");
            self.inbox
                .wait_for("SUBACK", |item| match item {
                    Item::Packet(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                    _ => None,
                })
                .await
        }

        /// Subscribes with default options.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.subscribe_filter(Filter::new(filter, qos), None).await
        }

        /// Publishes with `properties` and, for QoS 1 and 2, waits for the PUBACK / PUBCOMP.
        pub async fn publish_with(
            &mut self,
            topic: &str,
            qos: QoS,
            retain: bool,
            payload: &[u8],
            properties: PublishProperties,
        ) {
            self.client
                .publish_with_properties(topic, qos, retain, payload.to_vec(), properties)
                .await
                .expect("publish queued");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.inbox
                        .wait_for("PUBACK", |i| {
                            matches!(i, Item::Packet(Packet::PubAck(_))).then_some(())
                        })
                        .await
                }
                QoS::ExactlyOnce => {
                    self.inbox
                        .wait_for("PUBCOMP", |i| {
                            matches!(i, Item::Packet(Packet::PubComp(_))).then_some(())
                        })
                        .await
                }
            }
        }

        /// Publishes without properties.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.publish_with(topic, qos, retain, payload, PublishProperties::default())
                .await
        }

        /// The next PUBLISH received.
        pub async fn next_publish(&mut self) -> Publish {
            self.inbox.wait_for("PUBLISH", publish_of).await
        }

        /// Asserts that no PUBLISH arrives within `quiet`.
        pub async fn no_publish(&mut self, quiet: Duration) {
            self.inbox.none_within(quiet, "PUBLISH", publish_of).await
        }

        /// Waits for the end of the connection; returns its description (e.g. the broker's DISCONNECT).
        pub async fn closed(&mut self) -> String {
            self.inbox
                .wait_for("end of connection", |item| match item {
                    Item::Closed(e) => Some(format!("{e:?}")),
                    _ => None,
                })
                .await
        }

        /// Sends DISCONNECT and waits until the event loop stops.
        pub async fn disconnect(mut self) {
            self.client.disconnect().await.expect("disconnect queued");
            self.closed().await;
        }

        /// Drops the TCP connection without DISCONNECT (an abnormal disconnection).
        pub fn kill(self) {
            self.task.abort();
        }
    }

    fn publish_of(item: &V5Item) -> Option<Publish> {
        match item {
            Item::Packet(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        }
    }
}

/// A raw TCP connection for hand-written packets.
pub mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    use super::{Broker, TIMEOUT};

    /// A loopback socket to the broker.
    pub struct Conn {
        stream: TcpStream,
    }

    impl Conn {
        /// Connects to `addr`.
        pub async fn open(addr: SocketAddr) -> Conn {
            let stream = timeout(TIMEOUT, TcpStream::connect(addr))
                .await
                .expect("connect in time")
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            Conn { stream }
        }

        /// Writes `bytes`; a write the broker refused (socket already closed) is ignored: the reads decide.
        pub async fn send(&mut self, bytes: &[u8]) {
            let _ = self.stream.write_all(bytes).await;
        }

        /// Reads exactly `n` bytes within [`TIMEOUT`]; panics if the socket closes or stays silent.
        pub async fn recv_exact(&mut self, n: usize) -> Vec<u8> {
            let mut buf = vec![0; n];
            timeout(TIMEOUT, self.stream.read_exact(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {n} bytes within {TIMEOUT:?}"))
                .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
            buf
        }

        /// Reads one whole packet (fixed header, Remaining Length, body) within [`TIMEOUT`].
        pub async fn recv_packet(&mut self) -> Vec<u8> {
            self.recv_packet_or_closed()
                .await
                .unwrap_or_else(|| panic!("connection closed instead of a packet"))
        }

        /// Encodes `packet` as MQTT 5.0 with Wasp's codec and writes it.
        pub async fn send_v5(&mut self, packet: &wasp_mqtt::Packet) {
            let mut buf = bytes::BytesMut::new();
            wasp_mqtt::encode(packet, wasp_mqtt::ProtocolVersion::V5, &mut buf, u32::MAX)
                .expect("encode");
            self.send(&buf).await;
        }

        /// Reads one packet within [`TIMEOUT`] and decodes it as MQTT 5.0 with Wasp's codec.
        pub async fn recv_v5(&mut self) -> wasp_mqtt::Packet {
            let bytes = self.recv_packet().await;
            let mut buf = bytes::BytesMut::from(&bytes[..]);
            wasp_mqtt::decode(&mut buf, Some(wasp_mqtt::ProtocolVersion::V5), u32::MAX)
                .unwrap_or_else(|e| panic!("undecodable packet {bytes:02x?}: {e:?}"))
                .unwrap_or_else(|| panic!("incomplete packet {bytes:02x?}"))
        }

        /// Reads one whole packet within [`TIMEOUT`], or `None` if the broker closes the connection (or
        /// resets it) before its first byte.
        pub async fn recv_packet_or_closed(&mut self) -> Option<Vec<u8>> {
            let mut first = [0u8; 1];
            match timeout(TIMEOUT, self.stream.read(&mut first)).await {
                Err(_) => {
                    panic!("neither a packet nor the end of the connection within {TIMEOUT:?}")
                }
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
            let mut packet = first.to_vec();
            let mut remaining = 0usize;
            for shift in 0..4 {
                let byte = self.recv_exact(1).await[0];
                packet.push(byte);
                remaining |= usize::from(byte & 0x7f) << (7 * shift);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            packet.extend(self.recv_exact(remaining).await);
            Some(packet)
        }

        /// Whether the broker closes the connection within `limit` (a reset counts as closed); false if it
        /// stays open and silent that long. Panics if the broker sends anything.
        pub async fn closed_within(&mut self, limit: Duration) -> bool {
            let mut buf = [0u8; 256];
            match timeout(limit, self.stream.read(&mut buf)).await {
                Err(_) => false,
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(n)) => panic!(
                    "expected the connection to close, got {n} more bytes: {:02x?}",
                    &buf[..n]
                ),
            }
        }

        /// Asserts that the broker closes the connection within `limit` without sending anything more.
        /// A reset counts as closed.
        pub async fn expect_closed_within(&mut self, limit: Duration) {
            assert!(
                self.closed_within(limit).await,
                "connection still open after {limit:?}"
            );
        }

        /// Asserts that the broker closes the connection within [`TIMEOUT`] without sending anything more.
        pub async fn expect_closed(&mut self) {
            self.expect_closed_within(TIMEOUT).await
        }

        /// Asserts that the connection stays open and silent for `quiet`.
        pub async fn expect_open_for(&mut self, quiet: Duration) {
            let mut buf = [0u8; 256];
            match timeout(quiet, self.stream.read(&mut buf)).await {
                Err(_) => {}
                Ok(Ok(0)) => panic!("connection closed within {quiet:?}"),
                Ok(Ok(n)) => panic!("expected silence for {quiet:?}, got {:02x?}", &buf[..n]),
                Ok(Err(e)) => panic!("connection failed within {quiet:?}: {e}"),
            }
        }
    }

    /// Encodes a Remaining Length.
    pub fn remaining_length(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                return out;
            }
        }
    }

    /// A packet from its first byte and body.
    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(remaining_length(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// A UTF-8 string / binary field with its two-byte length.
    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    /// CONNECT for `level` (3 = 3.1 "MQIsdp", 4 = 3.1.1, 5 = 5.0) with `flags`, keep alive and client id;
    /// v5 gets an empty property list. Will fields, when flagged, must be appended to `extra_payload`.
    pub fn connect(
        level: u8,
        flags: u8,
        keep_alive: u16,
        client_id: &[u8],
        extra_payload: &[u8],
    ) -> Vec<u8> {
        let mut body = if level == 3 {
            string(b"MQIsdp")
        } else {
            string(b"MQTT")
        };
        body.push(level);
        body.push(flags);
        body.extend_from_slice(&keep_alive.to_be_bytes());
        if level == 5 {
            body.push(0);
        }
        body.extend(string(client_id));
        body.extend_from_slice(extra_payload);
        packet(0x10, &body)
    }

    /// A clean-session / clean-start CONNECT without will, keep alive 60.
    pub fn simple_connect(level: u8, client_id: &[u8]) -> Vec<u8> {
        connect(level, 0x02, 60, client_id, &[])
    }

    /// A 5.0 PUBLISH (`first` carries type and flags) with the property block `properties` (without its
    /// length, which is prepended).
    pub fn publish_v5(
        first: u8,
        topic: &[u8],
        packet_id: Option<u16>,
        properties: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = string(topic);
        if let Some(id) = packet_id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend(remaining_length(properties.len()));
        body.extend_from_slice(properties);
        body.extend_from_slice(payload);
        packet(first, &body)
    }

    /// A 3.1.1 PUBLISH (`first` carries type and flags).
    pub fn publish_v311(
        first: u8,
        topic: &[u8],
        packet_id: Option<u16>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = string(topic);
        if let Some(id) = packet_id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        packet(first, &body)
    }

    /// A 3.1.1 SUBSCRIBE to one filter.
    pub fn subscribe_v311(packet_id: u16, filter: &[u8], qos: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend(string(filter));
        body.push(qos);
        packet(0x82, &body)
    }

    /// Opens a 5.0 connection as `id` and checks the successful CONNACK (0x20, flags 0, reason 0x00).
    pub async fn v5_session(broker: &Broker, id: &[u8]) -> Conn {
        let mut c = Conn::open(broker.addr).await;
        c.send(&simple_connect(5, id)).await;
        let ack = c.recv_packet().await;
        assert_eq!(&ack[..1], &[0x20], "CONNACK expected, got {ack:02x?}");
        let body = &ack[2..];
        assert_eq!(
            &body[..2],
            &[0x00, 0x00],
            "CONNACK: session present 0, reason Success; got {ack:02x?}"
        );
        c
    }

    /// Opens a 3.1.1 connection as `id` and checks CONNACK 0x00.
    pub async fn v311_session(broker: &Broker, id: &[u8]) -> Conn {
        let mut c = Conn::open(broker.addr).await;
        c.send(&simple_connect(4, id)).await;
        assert_eq!(c.recv_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
        c
    }

    /// Expects a 5.0 DISCONNECT with `reason`, then the closed socket.
    pub async fn expect_disconnect(c: &mut Conn, reason: u8) {
        let p = c.recv_packet().await;
        assert_eq!(p[0], 0xE0, "DISCONNECT expected, got {p:02x?}");
        assert!(
            p.len() >= 3,
            "DISCONNECT without reason code (means 0x00), expected {reason:#04x}: {p:02x?}"
        );
        assert_eq!(
            p[2], reason,
            "DISCONNECT reason code: expected {reason:#04x}, got {:#04x} ({p:02x?})",
            p[2]
        );
        c.expect_closed().await;
    }
}
