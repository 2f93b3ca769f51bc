//! One task per client connection: the socket, its buffers and the protocol state machine.
//!
//! The task reads bytes into a buffer and decodes packets with the pure codec, answers them, and writes
//! the session's queued messages to the socket. Reading and writing are both branches of one `select!`,
//! so a client that does not read cannot stop us from reading its acknowledgements, and a full socket only
//! pauses this one client: publishers keep appending to the session queue (bounded) meanwhile.
//!
//! Life of a connection: [`serve`] waits for CONNECT (bounded by the connect timeout), validates it,
//! takes over the client id's session (ending a connection that still holds it), sends CONNACK, re-sends
//! the session's in-flight messages, then loops until the client disconnects, breaks the protocol, times
//! out, is taken over or the broker shuts down. On the way out it publishes the Will when the spec says
//! so and either keeps the session (with its expiry timer) or discards it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};
use wasp_mqtt::topic::{Filter, parse_filter};
use wasp_mqtt::{
    Auth, Changes, ConnAck, Connect, DecodeError, Disconnect, Packet, Properties, ProtocolVersion,
    PubResponse, Publish, PublishParts, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

use wasp_plugin_host::types as wit;
use wasp_plugin_host::{Hook, Plugin};

use crate::access::{self, Access, Defaults, Refusal};
use crate::broker::{Broker, ClientSlot, Lease, ListenerCount};
use crate::config::Limits;
use crate::rate::TokenBucket;
use crate::server::ListenerCtx;
use crate::session::{Delivery, Inflight, Message, Session, SubscriptionEntry};
use crate::store::{self, Keyspace, Op};
use crate::transport::{Duplex, Reader, Writer};

/// Stop taking messages from the session queue once this many bytes wait to be written.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// At most this many messages are moved out of the session queue per lock.
const BATCH: usize = 256;
/// No more messages are taken from the session queue while this many packets wait for storage.
const MAX_DEFERRED: usize = 4 * BATCH;
/// How long a newcomer waits in total for the connection it takes over to let go of the session.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a closing connection tries to flush its last packets (e.g. DISCONNECT).
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Close {
    /// The client sent DISCONNECT: no Will (unless it asked for it with 0x04).
    Disconnected { with_will: bool },
    /// The peer closed the socket or an I/O error happened.
    PeerGone,
    /// The client broke the protocol: 5.0 clients get DISCONNECT with this reason code and reason string.
    Violation(ReasonCode, String),
    /// Another connection took over the client id (5.0: DISCONNECT 0x8E).
    TakenOver,
    /// No packet within 1.5 times the keep alive (5.0: DISCONNECT 0x8D).
    KeepAliveTimeout,
    /// The broker is shutting down (5.0: DISCONNECT 0x8B).
    Shutdown,
    /// The credentials' `wasp:expires-at` passed without a re-authentication (5.0: DISCONNECT 0xA0).
    CredentialsExpired,
}

impl Close {
    /// The reason of the DISCONNECT the broker sends to a 5.0 client, if any.
    fn disconnect_reason(&self) -> Option<(ReasonCode, String)> {
        match self {
            Close::Disconnected { .. } | Close::PeerGone => None,
            Close::Violation(code, why) => Some((*code, why.clone())),
            Close::TakenOver => Some((
                ReasonCode::SessionTakenOver,
                "another connection took over the session".into(),
            )),
            Close::KeepAliveTimeout => Some((
                ReasonCode::KeepAliveTimeout,
                "no packet within 1.5 times the keep alive".into(),
            )),
            Close::Shutdown => Some((
                ReasonCode::ServerShuttingDown,
                "the broker is shutting down".into(),
            )),
            // 0xA0 "the maximum connection time authorized for this connection has been exceeded" is the
            // 5.0 code closest to "the token that authorized this connection has expired".
            Close::CredentialsExpired => Some((
                ReasonCode::MaximumConnectTime,
                "the credentials expired and the client did not re-authenticate".into(),
            )),
        }
    }

    /// True if the Will is published (MQTT-3.1.2-8 and 5.0 section 3.1.2.5). A broker shutdown is not a
    /// client failure: the Will stays unpublished, as in Mosquitto.
    fn publishes_will(&self) -> bool {
        match self {
            Close::Disconnected { with_will } => *with_will,
            Close::Shutdown => false,
            Close::PeerGone
            | Close::Violation(..)
            | Close::TakenOver
            | Close::KeepAliveTimeout
            | Close::CredentialsExpired => true,
        }
    }
}

/// A protocol violation: logged here, told to a 5.0 client in the DISCONNECT's reason string.
fn violation(code: ReasonCode, why: impl Into<String>) -> Close {
    let why = why.into();
    info!(reason = ?code, "protocol violation: {why}");
    Close::Violation(code, why)
}

/// Serves one accepted socket until it closes: the transport's handshakes, CONNECT, then the session.
/// Not an async fn: that would keep a second copy of its arguments in the task for the connection's life.
pub(crate) fn serve(
    broker: Arc<Broker>,
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerCtx>,
) -> impl Future<Output = ()> {
    let span =
        info_span!("conn", %peer, listener = %listener.name, client_id = tracing::field::Empty);
    let counted = OpenSocket(broker.clone());
    // The task's future is as large as its largest state and stays allocated for the connection's life:
    // it is most of what an idle connection costs (see ARCHITECTURE.md). Opening the connection (the
    // transport's handshakes, the CONNECT with its Will, plugin calls, refusals, the session takeover) is
    // large and short-lived, so it runs as one boxed future, freed with everything it holds before the
    // connection settles into `run`. Made here rather than in the block below, which would otherwise keep
    // room for the socket and the addresses moved into `open`.
    let opening = Box::pin(open(broker.clone(), tcp, peer, listener));
    async move {
        let _counted = counted;
        // `let else`, not `if let`: the temporary an `if let` matches lives through its body, and it
        // would keep a second copy of `Conn` in the task.
        let Some(Ready { mut conn, lease }) = opening.await else {
            return;
        };
        conn.resend_inflight();
        let close = conn.run(&lease).await;
        Box::pin(conn.finish(close, &lease)).await;
        let slot = lease.slot().clone();
        drop(lease);
        broker.remove_slot_if_unused(&conn.client_id, &slot);
    }
    .instrument(span)
}

/// A socket counted in `stats.sockets_open` (by the accept loop that spawned its task), uncounted when the
/// task ends, however it ends.
struct OpenSocket(Arc<Broker>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.stats.sockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The transport's handshakes, CONNECT and the session takeover; `None` when the socket closed first or
/// the client was refused (the refusal already sent).
async fn open(
    broker: Arc<Broker>,
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerCtx>,
) -> Option<Ready> {
    // One deadline for the TLS and WebSocket handshakes and the CONNECT packet: a slow or silent
    // socket is closed after the CONNECT timeout whatever stage it stalls in.
    let deadline = tokio::time::Instant::now() + broker.config.limits.connect_timeout;
    // Boxed: the TLS and WebSocket handshakes' state (~12 KB) is freed before the wait for CONNECT.
    let accept = Box::pin(listener.transport.accept(tcp));
    let stream = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(why)) => {
            debug!(%why, "closing before CONNECT");
            return None;
        }
        Err(_) => {
            broker
                .stats
                .connect_timeouts
                .fetch_add(1, Ordering::Relaxed);
            debug!("closing before CONNECT: handshake not done within the connect timeout");
            return None;
        }
    };
    let mut io = Io {
        duplex: stream.duplex,
        unflushed: false,
        inbuf: BytesMut::new(),
        outbuf: BytesMut::new(),
        broker: broker.clone(),
    };
    let mut connect = match io.read_connect(deadline).await {
        Ok(c) => c,
        Err(reason) => {
            debug!(%reason, "closing before CONNECT completed");
            return None;
        }
    };
    let cert = stream.client_cert;
    if let Some(username) = cert.as_ref().and_then(|c| c.username.clone()) {
        // The certificate names the client (as Mosquitto's use_identity_as_username): what CONNECT
        // says is replaced, so plugins and ACLs see the verified name.
        connect.username = Some(username);
    }
    let client = wit::ClientInfo {
        client_id: connect.client_id.clone(),
        username: connect.username.clone(),
        listener: listener.name.to_string(),
        peer_address: peer.to_string(),
        protocol: access::wit_protocol(connect.protocol),
        tls_identity: cert.as_ref().map(|c| c.identity.clone()),
    };
    let defaults = Defaults {
        allow_anonymous: listener.allow_anonymous,
        certificate_authenticates: cert.is_some_and(|c| c.username.is_some()),
    };
    let access = Access::new(listener.chain.clone(), client, defaults);
    handshake(broker, io, *connect, access).await
}

/// The transport's stream and the buffers.
struct Io {
    duplex: Duplex,
    /// Bytes were written since the last flush (TLS records and WebSocket frames wait for a flush).
    unflushed: bool,
    /// Received bytes not yet decoded. Empty and unallocated while the connection waits with nothing
    /// pending (see [`read_some`]): idle connections are most connections.
    inbuf: BytesMut,
    outbuf: BytesMut,
    broker: Arc<Broker>,
}

/// The most one read takes from the transport.
const READ_CHUNK: usize = 8192;
/// What `inbuf` is given when bytes arrive and do not fit: most packets then fit without growing it.
const INBUF_CHUNK: usize = 4096;

/// Reads what the transport has (at most [`READ_CHUNK`] bytes) and appends it to `inbuf`; `Ok(0)`: the
/// peer closed. The bytes land first in an uninitialised buffer on the stack of the one `poll_read` that
/// got them, never held across a wait, so a connection waiting for input owns no input buffer; `inbuf` is
/// allocated only when bytes arrive. The extra copy is ~0.1 us per 4 KiB read, shared by every packet in
/// it (`read_buf` into spare capacity saves it, but an idle connection then keeps 4 KiB). A poll that
/// finds nothing costs nothing (no zeroing). Cancel safe: the bytes are appended in the poll that read
/// them.
fn read_some<'a>(
    mut reader: Reader<'a>,
    inbuf: &'a mut BytesMut,
) -> impl Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = tokio::io::ReadBuf::uninit(&mut chunk);
        std::task::ready!(std::pin::Pin::new(&mut reader).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        if inbuf.capacity() - inbuf.len() < read.len() {
            inbuf.reserve(INBUF_CHUNK.max(read.len()));
        }
        inbuf.extend_from_slice(read);
        std::task::Poll::Ready(Ok(read.len()))
    })
}

/// Writes some of `outbuf` (if any) and flushes. Cancel safe in `select!`: an interrupted write wrote
/// nothing, and an interrupted flush leaves `unflushed` set so the next call flushes again. A `poll_fn`
/// rather than an async fn (a write, then a flush): half the size in the run loop's state, which every
/// idle connection keeps.
fn write_some<'a>(
    mut writer: Writer<'a>,
    outbuf: &'a mut BytesMut,
    unflushed: &'a mut bool,
) -> impl Future<Output = std::io::Result<usize>> + 'a {
    // `Some` once the write is done (with the bytes written) and the flush is under way.
    let mut written = None;
    std::future::poll_fn(move |cx| {
        let n = match written {
            Some(n) => n,
            None => {
                let mut n = 0;
                if !outbuf.is_empty() {
                    n = std::task::ready!(
                        std::pin::Pin::new(&mut writer).poll_write(cx, &outbuf[..])
                    )?;
                    if n == 0 {
                        return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    outbuf.advance(n);
                    *unflushed = true;
                }
                *written.insert(n)
            }
        };
        std::task::ready!(std::pin::Pin::new(&mut writer).poll_flush(cx))?;
        *unflushed = false;
        std::task::Poll::Ready(Ok(n))
    })
}

impl Io {
    /// Reads the first packet, which must be CONNECT, within the connect timeout. Refusals that the spec
    /// answers with a CONNACK are written here.
    async fn read_connect(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Box<Connect>, String> {
        match self.read_packet(None, deadline).await {
            Ok(Packet::Connect(c)) => Ok(c),
            Ok(other) => Err(format!(
                "first packet is {} instead of CONNECT",
                other.name()
            )),
            Err(Err(DecodeError::UnsupportedProtocol { level, .. })) => {
                // MQTT-3.1.2-2: CONNACK 0x01 (3.1.1) / 0x84 (5.0), then close.
                let version = if level == 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                self.refuse(version, ReasonCode::UnsupportedProtocolVersion, None)
                    .await;
                Err(format!("unsupported protocol level {level}"))
            }
            Err(Err(e)) => Err(format!("bad CONNECT: {e}")),
            Err(Ok(why)) => Err(why),
        }
    }

    /// Reads one packet before `deadline`. `Err(Ok(why))`: the socket closed, failed or timed out;
    /// `Err(Err(e))`: the bytes do not decode.
    async fn read_packet(
        &mut self,
        version: Option<ProtocolVersion>,
        deadline: tokio::time::Instant,
    ) -> Result<Packet, Result<String, DecodeError>> {
        let max = self.broker.config.limits.max_packet_size;
        loop {
            match wasp_mqtt::decode(&mut self.inbuf, version, max) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, DecodeError::PacketTooLarge { .. }) {
                        self.broker
                            .stats
                            .oversize_packets
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(Err(e));
                }
            }
            let read = tokio::time::timeout_at(
                deadline,
                read_some(self.duplex.halves().0, &mut self.inbuf),
            )
            .await;
            match read {
                Err(_) => {
                    // Only CONNECT and the enhanced-authentication exchange read with a deadline.
                    self.broker
                        .stats
                        .connect_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Ok("no packet within the connect timeout".into()));
                }
                Ok(Ok(0)) => return Err(Ok("peer closed".into())),
                Ok(Ok(n)) => {
                    self.broker
                        .stats
                        .bytes_received
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Err(e)) => return Err(Ok(format!("read error: {e}"))),
            }
        }
    }

    /// Writes everything buffered, keeping the connection open; false if the socket failed.
    async fn write_out(&mut self, limit: Duration) -> bool {
        let write = async {
            while !self.outbuf.is_empty() || self.unflushed {
                let writer = self.duplex.halves().1;
                match write_some(writer, &mut self.outbuf, &mut self.unflushed).await {
                    Err(_) => return false,
                    Ok(n) => {
                        self.broker
                            .stats
                            .bytes_sent
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            true
        };
        tokio::time::timeout(limit, write).await.unwrap_or(false)
    }

    /// Sends a refusing CONNACK (with `why` or a standard text as 5.0 reason string) and closes.
    async fn refuse(&mut self, version: ProtocolVersion, reason: ReasonCode, why: Option<String>) {
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.reason_string = Some(why.unwrap_or_else(|| refusal_text(reason).to_owned()));
        }
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties,
        });
        if wasp_mqtt::encode(&connack, version, &mut self.outbuf, u32::MAX).is_ok() {
            self.flush(CLOSE_FLUSH).await;
        }
    }

    /// Writes everything buffered and closes the write side, giving up after `limit`.
    async fn flush(&mut self, limit: Duration) {
        let started = tokio::time::Instant::now();
        if self.write_out(limit).await {
            let left = limit.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, self.duplex.halves().1.shutdown()).await;
        }
    }
}

/// A short English reason for a CONNACK refusal.
fn refusal_text(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::UnsupportedProtocolVersion => "unsupported protocol version",
        ReasonCode::ClientIdentifierNotValid => "client identifier not valid",
        ReasonCode::BadAuthenticationMethod => "no plugin supports this authentication method",
        ReasonCode::NotAuthorized => "not authorized",
        ReasonCode::BadUserNameOrPassword => "bad user name or password",
        ReasonCode::ServerBusy => "too many connections",
        _ => "refused",
    }
}

/// What a completed handshake hands to the run loop.
struct Ready {
    conn: Conn,
    lease: Lease,
}

/// Validates CONNECT and takes over the session; `None` after a refusal (already sent).
async fn handshake(
    broker: Arc<Broker>,
    mut io: Io,
    connect: Connect,
    mut access: Access,
) -> Option<Ready> {
    let version = connect.protocol;
    let limits = &broker.config.limits;

    // Client identifier (MQTT-3.1.3-7/8, 5.0 3.1.3.1).
    let mut assigned = false;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if version == ProtocolVersion::V31
            || (version == ProtocolVersion::V311 && !connect.clean_start)
        {
            io.refuse(version, ReasonCode::ClientIdentifierNotValid, None)
                .await;
            return None;
        }
        assigned = true;
        generate_client_id().into()
    } else {
        connect.client_id.as_str().into()
    };
    tracing::Span::current().record("client_id", &*client_id);

    if assigned {
        let mut client = access.client().clone();
        client.client_id = client_id.to_string();
        access = Access::new(access.chain().clone(), client, access.defaults());
    }
    let auth_method = connect
        .properties
        .authentication_method
        .clone()
        .filter(|_| version.is_v5());
    // `None`: refused, the refusal already sent.
    let attributes = Box::pin(authenticate(
        &mut io,
        &access,
        &connect,
        auth_method.as_deref(),
    ))
    .await?;
    let credentials_expire = match credentials_expiry(&attributes, SystemTime::now()) {
        Ok(Some(left)) if left.is_zero() => {
            info!("refused: the authenticator allowed credentials that have already expired");
            io.refuse(
                version,
                ReasonCode::NotAuthorized,
                Some("credentials expired".into()),
            )
            .await;
            return None;
        }
        Ok(left) => left.map(|left| tokio::time::Instant::now() + left),
        Err(why) => {
            warn!("refused: {why}");
            io.refuse(version, ReasonCode::UnspecifiedError, None).await;
            return None;
        }
    };
    access.set_attributes(attributes);
    if let Some(will) = &connect.will
        && let Err(why) = topic_within_limits(limits, &will.topic, &will.topic)
    {
        info!(topic = %will.topic, "refused: will topic {why}");
        broker
            .stats
            .refused_publish_topic
            .fetch_add(1, Ordering::Relaxed);
        io.refuse(
            version,
            ReasonCode::TopicNameInvalid,
            Some(format!("will topic {why}")),
        )
        .await;
        return None;
    }
    // A Will the client may not publish is refused now rather than dropped later.
    if let Some(will) = &connect.will
        && let Err(refusal) =
            Box::pin(access.authorize_publish(&will.topic, will.qos, will.retain)).await
    {
        info!(topic = %will.topic, reason = %refusal.reason, "refused: will topic not authorized");
        let code = access::plugin_code(refusal.code.as_u8(), access::CONNACK);
        io.refuse(version, code, Some(refusal.reason)).await;
        return None;
    }
    if broker.stats.clients_connected.load(Ordering::Relaxed) >= limits.max_connections {
        warn!(
            max = limits.max_connections,
            "refused: connection limit reached"
        );
        broker
            .stats
            .refused_max_connections
            .fetch_add(1, Ordering::Relaxed);
        io.refuse(version, ReasonCode::ServerBusy, None).await;
        return None;
    }
    // The listener's own limit is answered as the global one is (5.0 lists 0x89 Server busy for it).
    let listener_count = broker.listener_count(&access.client().listener);
    if let Some(count) = listener_count.as_ref().filter(|c| c.max != 0)
        && count.connected.load(Ordering::Relaxed) >= count.max
    {
        warn!(
            max = count.max,
            "refused: the listener's connection limit reached"
        );
        broker
            .stats
            .refused_listener_connections
            .fetch_add(1, Ordering::Relaxed);
        io.refuse(
            version,
            ReasonCode::ServerBusy,
            Some("too many connections on this listener".into()),
        )
        .await;
        return None;
    }

    if !version.is_v5()
        && limits.max_keep_alive < u16::MAX
        && connect.keep_alive > limits.max_keep_alive
    {
        // 3.x cannot be told a lower keep alive (see below): refused as Mosquitto does, with 0x02.
        info!(
            keep_alive = connect.keep_alive,
            max = limits.max_keep_alive,
            "refused: keep alive above max_keep_alive_secs"
        );
        io.refuse(version, ReasonCode::ClientIdentifierNotValid, None)
            .await;
        return None;
    }

    // Session Expiry Interval: 3.x persistent sessions never expire; capped by configuration.
    let requested_expiry = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let session_expiry = requested_expiry.min(limits.max_session_expiry);
    if broker.store().is_some_and(|s| !s.is_healthy())
        && (session_expiry != 0 || !connect.clean_start)
    {
        warn!("refused: a persistent session was asked for while storage writes fail");
        io.refuse(version, ReasonCode::ServerUnavailable, None)
            .await;
        return None;
    }

    // Take the client id over from any connection that holds it.
    let Some(lease) = Box::pin(acquire_slot(&broker, &client_id)).await else {
        warn!("refused: the previous connection of this client did not let go of its session");
        io.refuse(version, ReasonCode::ServerBusy, None).await;
        return None;
    };
    let slot = lease.slot();

    let (session, session_present) = {
        let mut current = slot.session.lock();
        match current.as_ref() {
            Some(existing) if !connect.clean_start => (existing.clone(), true),
            existing => {
                if let Some(old) = existing {
                    broker.discard_session(old);
                }
                let fresh = Arc::new(broker.new_session(client_id.clone(), session_expiry));
                *current = Some(fresh.clone());
                (fresh, false)
            }
        }
    };
    session.state.lock().expiry_interval = session_expiry;
    broker.persist_session(&session, connect.will.as_ref(), true);
    session.set_online(true);
    broker
        .stats
        .clients_connected
        .fetch_add(1, Ordering::Relaxed);
    if let Some(count) = &listener_count {
        count.connected.fetch_add(1, Ordering::Relaxed);
    }

    // Keep alive: 5.0 clients may be told a lower Server Keep Alive. 3.x has no way to tell a client:
    // one asking for none (0) is held to the broker's maximum (3.1.1 3.1.2.10: the server is then "not
    // required" to disconnect it, so it may), and one asking for more is refused as Mosquitto does,
    // rather than being cut off while it keeps to its own interval. Either way an idle socket cannot
    // stay open forever once `max_keep_alive_secs` is set.
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if (keep_alive == 0 || keep_alive > limits.max_keep_alive) && limits.max_keep_alive < u16::MAX {
        // (A 3.x client asking for more than the maximum was refused before taking the session.)
        if version.is_v5() {
            server_keep_alive = Some(limits.max_keep_alive);
        }
        keep_alive = limits.max_keep_alive;
    }

    let mut properties = Properties::default();
    if version.is_v5() {
        properties.server_keep_alive = server_keep_alive;
        if assigned {
            properties.assigned_client_identifier = Some(client_id.to_string());
        }
        if limits.receive_maximum < u16::MAX {
            properties.receive_maximum = Some(limits.receive_maximum);
        }
        properties.maximum_packet_size = Some(limits.max_packet_size);
        if limits.topic_alias_maximum > 0 {
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
        }
        if limits.maximum_qos < QoS::ExactlyOnce {
            properties.maximum_qos = Some(limits.maximum_qos as u8);
        }
        if session_expiry != requested_expiry {
            properties.session_expiry_interval = Some(session_expiry);
        }
        properties.authentication_method = auth_method.clone();
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present,
        reason: ReasonCode::Success,
        properties,
    });
    // Encoding a CONNACK cannot exceed any limit worth enforcing: the client's maximum applies to what follows.
    if let Err(e) = wasp_mqtt::encode(&connack, version, &mut io.outbuf, u32::MAX) {
        warn!(error = %e, "cannot encode CONNACK");
    }
    info!(
        protocol = version.level(),
        clean_start = connect.clean_start,
        session_present,
        keep_alive,
        "client connected"
    );

    let send_window = if version.is_v5() {
        connect
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(limits.max_inflight)
    } else {
        limits.max_inflight
    };
    let conn = Conn {
        io,
        version,
        client_id,
        session,
        keep_alive: Duration::from_millis(u64::from(keep_alive) * 1500),
        max_packet_out: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
        send_window: usize::from(send_window.max(1)),
        topic_aliases: BTreeMap::new(),
        will: connect.will.map(Box::new),
        session_expiry,
        last_received: tokio::time::Instant::now(),
        problem_information: version.is_v5()
            && connect.properties.request_problem_information != Some(0),
        batch: Vec::new(),
        deferred: VecDeque::new(),
        durable: broker.store().map(|s| s.durable()),
        plugins: (!access.chain().is_empty()).then(|| {
            Box::new(Plugged {
                access,
                auth_method,
                reauthenticating: None,
            })
        }),
        credentials_expire,
        listener_count,
        publish_rate: TokenBucket::new(u64::from(limits.max_publish_rate), Instant::now())
            .map(Box::new),
        publish_bandwidth: TokenBucket::new(limits.max_publish_bytes_per_sec, Instant::now())
            .map(Box::new),
        held: None,
    };
    Some(Ready { conn, lease })
}

/// Runs the authenticators on CONNECT, driving the 5.0 enhanced-authentication AUTH exchange when a plugin
/// answers `continue`. Returns the session attributes, or `None` after sending the refusal.
async fn authenticate(
    io: &mut Io,
    access: &Access,
    connect: &Connect,
    auth_method: Option<&str>,
) -> Option<wit::Attributes> {
    let version = connect.protocol;
    let chain = access.chain();
    // Every plugin deferring (or none configured) lets the client in on an anonymous listener, or when
    // its verified certificate named it.
    let allow_anonymous = access.defaults().authenticates();
    let no_credentials_reason = if connect.username.is_some() {
        ReasonCode::BadUserNameOrPassword
    } else {
        ReasonCode::NotAuthorized
    };
    if !chain.wants(Hook::Authenticate, None) {
        if auth_method.is_some() {
            io.refuse(version, ReasonCode::BadAuthenticationMethod, None)
                .await;
            return None;
        }
        if !allow_anonymous {
            info!(
                "refused: anonymous access is disabled and no authentication plugin is configured"
            );
            io.refuse(version, no_credentials_reason, None).await;
            return None;
        }
        return Some(Vec::new());
    }
    let mut request = wit::AuthRequest {
        client: access.client().clone(),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        auth_method: auth_method.map(str::to_owned),
        auth_data: connect
            .properties
            .authentication_data
            .as_ref()
            .map(|d| d.to_vec()),
        reauthentication: false,
    };
    let mut decided = chain.authenticate(&request).await;
    loop {
        let who = decided.source.plugin_name().to_owned();
        match decided.verdict {
            wit::AuthVerdict::Allow(attributes) => return Some(attributes),
            wit::AuthVerdict::Deny(denial) => {
                let refusal = Refusal::from_denial(denial, access::CONNACK, &who);
                info!(plugin = %who, reason = %refusal.reason, "refused by an authentication plugin");
                io.refuse(version, refusal.code, Some(refusal.reason)).await;
                return None;
            }
            wit::AuthVerdict::Defer if auth_method.is_some() => {
                io.refuse(version, ReasonCode::BadAuthenticationMethod, None)
                    .await;
                return None;
            }
            wit::AuthVerdict::Defer if allow_anonymous => return Some(Vec::new()),
            wit::AuthVerdict::Defer => {
                info!(
                    "refused: every authentication plugin deferred and anonymous access is disabled"
                );
                io.refuse(version, no_credentials_reason, None).await;
                return None;
            }
            wit::AuthVerdict::Continue(data) => {
                let (Some(method), Some(plugin)) = (auth_method, decided.source.plugin().cloned())
                else {
                    // `continue` needs a 5.0 client that started enhanced authentication.
                    warn!(plugin = %who, "plugin answered continue to a client without an authentication method");
                    io.refuse(version, ReasonCode::BadAuthenticationMethod, None)
                        .await;
                    return None;
                };
                let challenge = Packet::Auth(Auth {
                    reason: ReasonCode::ContinueAuthentication,
                    properties: Properties {
                        authentication_method: Some(method.to_owned()),
                        authentication_data: Some(data.into()),
                        ..Properties::default()
                    },
                });
                if wasp_mqtt::encode(&challenge, version, &mut io.outbuf, u32::MAX).is_err()
                    || !io.write_out(CLOSE_FLUSH).await
                {
                    return None;
                }
                let deadline =
                    tokio::time::Instant::now() + io.broker.config.limits.connect_timeout;
                match io.read_packet(Some(version), deadline).await {
                    Ok(Packet::Auth(answer))
                        if answer.reason == ReasonCode::ContinueAuthentication
                            && answer.properties.authentication_method.as_deref()
                                == Some(method) =>
                    {
                        request.auth_data =
                            answer.properties.authentication_data.map(|d| d.to_vec());
                        decided = chain.resume_authenticate(&plugin, &request).await;
                    }
                    Ok(other) => {
                        info!(
                            packet = other.name(),
                            "refused: expected AUTH during enhanced authentication"
                        );
                        io.refuse(version, ReasonCode::ProtocolError, None).await;
                        return None;
                    }
                    Err(why) => {
                        debug!(?why, "closed during enhanced authentication");
                        return None;
                    }
                }
            }
        }
    }
}

/// The reserved attribute naming when the credentials end, in milliseconds since the Unix epoch.
const EXPIRES_AT: &str = "wasp:expires-at";

/// How long the credentials behind `attributes` remain valid after `now`: `None` when no
/// `wasp:expires-at` attribute is set, zero when that time has passed. An unparsable value is an error
/// naming it (the authentication is refused rather than left unbounded).
fn credentials_expiry(
    attributes: &wit::Attributes,
    now: SystemTime,
) -> Result<Option<Duration>, String> {
    let Some((_, value)) = attributes.iter().rev().find(|(key, _)| key == EXPIRES_AT) else {
        return Ok(None);
    };
    let millis: u64 = value.trim().parse().map_err(|_| {
        format!("attribute {EXPIRES_AT} = {value:?} is not a number of milliseconds since the Unix epoch")
    })?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    Ok(Some(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// A deadline of the run loop (see [`Conn::next_timer`]).
#[derive(Clone, Copy, Debug)]
enum Timer {
    KeepAlive,
    Held,
    Credentials,
}

/// Takes the lease of a client id's slot, kicking the connection that holds it. `None` if that connection
/// did not let go within [`TAKEOVER_WAIT`].
async fn acquire_slot(broker: &Arc<Broker>, client_id: &Arc<str>) -> Option<Lease> {
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        let slot = broker.client_slot(client_id);
        // Kick whoever holds the lease now; retry in short steps because a third connection may win the
        // lease meanwhile, and then it is the one to kick.
        slot.kick();
        let step = tokio::time::Instant::now() + Duration::from_millis(100);
        match tokio::time::timeout_at(step.min(deadline), slot.lease()).await {
            Ok(lease) => {
                if broker.is_current_slot(client_id, &slot) {
                    return Some(lease);
                }
                // The slot was removed while we waited: start again with the current one.
            }
            Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Err(_) => {}
        }
    }
}

fn generate_client_id() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("wasp-{:x}-{n}", nanos & 0xffff_ffff_ffff)
}

/// A connection after CONNACK.
struct Conn {
    io: Io,
    version: ProtocolVersion,
    client_id: Arc<str>,
    session: Arc<Session>,
    /// 1.5 times the keep alive; zero when keep alive is off.
    keep_alive: Duration,
    /// The client's Maximum Packet Size.
    max_packet_out: u32,
    /// Outbound QoS 1/2 messages allowed in flight at once.
    send_window: usize,
    /// Client-to-broker topic aliases (5.0).
    /// A `BTreeMap`: half a `HashMap`'s size in every `Conn`, and empty for most clients.
    topic_aliases: BTreeMap<u16, Arc<str>>,
    /// Boxed: most clients have none, and `Conn` is part of every connection's memory.
    will: Option<Box<Will>>,
    session_expiry: u32,
    last_received: tokio::time::Instant,
    /// 5.0 Request Problem Information: reason strings may be sent on acknowledgements.
    problem_information: bool,
    /// Reused buffer of messages taken out of the session queue, each with the storage ticket it
    /// waits for (a QoS 2 PUBLISH to a persistent session).
    batch: Vec<(Option<u16>, Delivery, Option<u64>)>,
    /// Packets waiting for storage (see [`Deferred`]), in the order they are to be sent, each with the
    /// ticket that must be durable first (0: none of its own).
    deferred: VecDeque<(u64, Deferred)>,
    /// The storage writer's durable ticket, when storage is configured.
    durable: Option<watch::Receiver<u64>>,
    /// `None` when the listener has no plugins (publishes and subscriptions are then allowed as they
    /// are): boxed, and only then, because most of it is the session as plugins see it, and `Conn` is part
    /// of every connection's memory.
    plugins: Option<Box<Plugged>>,
    /// When the credentials end (`wasp:expires-at`), unless a re-authentication moves it.
    credentials_expire: Option<tokio::time::Instant>,
    /// The connection count of the listener it came through, decremented on close.
    listener_count: Option<Arc<ListenerCount>>,
    /// `limits.max_publish_rate`, in PUBLISH packets; `None`: unlimited.
    /// Boxed, as the other limits here: off by default, and `Conn` is part of every connection's memory.
    publish_rate: Option<Box<TokenBucket>>,
    /// `limits.max_publish_bytes_per_sec`, in topic + payload bytes; `None`: unlimited.
    publish_bandwidth: Option<Box<TokenBucket>>,
    /// A 3.x PUBLISH held back by a rate limit or the queue memory ceiling: until `until` the socket is
    /// not read (back-pressure instead of refusing a client that has no reason codes).
    held: Option<Box<Held>>,
}

/// A connection's state for its listener's plugins.
struct Plugged {
    /// The listener's plugins with this session's attributes.
    access: Access,
    /// The 5.0 Authentication Method of CONNECT: re-authentication must use the same one.
    auth_method: Option<String>,
    /// During a re-authentication exchange: the plugin that answered `continue`.
    reauthenticating: Option<Plugin>,
}

/// A packet held until a storage write is durable: the acknowledgement of a PUBLISH that changed
/// persistent state, a SUBACK that changed a persistent session, a PUBREL, a QoS 2 PUBLISH to a
/// persistent session; and, behind any of those, every packet that must keep its order with them.
enum Deferred {
    Packet(Box<Packet>),
    Publish {
        packet_id: Option<u16>,
        delivery: Delivery,
    },
}

/// A PUBLISH waiting for a limit to allow it (see [`Conn::held`]).
struct Held {
    publish: Box<Publish>,
    until: tokio::time::Instant,
}

/// What the publish limits say about one PUBLISH.
enum Limited {
    /// Within every limit (the rate buckets have been charged).
    Pass,
    /// 5.0: refused with this reason (QoS 1/2: in the acknowledgement; QoS 0: dropped).
    Refuse(Refusal),
    /// 3.x: hold it, without reading further, until then.
    Hold(tokio::time::Instant),
}

/// How often a held PUBLISH looks again at the queue memory ceiling.
const CEILING_RECHECK: Duration = Duration::from_millis(100);

/// Checks a topic name or filter against `limits.max_topic_length` (all of `text`) and
/// `limits.max_topic_levels` (the levels of `levels_of`: a shared subscription's filter without its
/// `$share/{group}/` prefix); the error says which limit and by how much.
fn topic_within_limits(limits: &Limits, text: &str, levels_of: &str) -> Result<(), String> {
    if text.len() > limits.max_topic_length {
        return Err(format!(
            "is {} bytes long, more than the broker's limit of {}",
            text.len(),
            limits.max_topic_length
        ));
    }
    let levels = levels_of.bytes().filter(|&b| b == b'/').count() + 1;
    if levels > limits.max_topic_levels {
        return Err(format!(
            "has {levels} levels, more than the broker's limit of {}",
            limits.max_topic_levels
        ));
    }
    Ok(())
}

impl Conn {
    fn broker(&self) -> &Broker {
        &self.io.broker
    }

    async fn run(&mut self, lease: &Lease) -> Close {
        loop {
            // Checked before the first wait too: see `Broker::shut_down_connections`.
            if self.broker().shutting_down() {
                return Close::Shutdown;
            }
            // Checked likewise: a newcomer kicks, then wakes the session (see `ClientSlot::kick`).
            if lease.kicked() {
                return Close::TakenOver;
            }
            self.release_deferred();
            self.fill_outbuf();
            if self.io.inbuf.is_empty() && self.io.inbuf.capacity() > 0 {
                // Everything received is handled: give the buffer back while waiting (the payloads
                // still queued keep their part of it alive; the rest is freed).
                self.io.inbuf = BytesMut::new();
            }
            let waiting_for = self.deferred.front().map(|(ticket, _)| *ticket);
            let next_timer = self.next_timer();
            let durable = self.durable.as_mut();
            let (reader, writer) = self.io.duplex.halves();
            // Every branch's future is part of the task's state while it waits, whether enabled or
            // not, so the idle connection's memory is their sum: rare waits are boxed when polled
            // (an async block allocates nothing until then), the deadlines share one timer.
            tokio::select! {
                // Storage made the first held packet's changes durable (the loop sends it).
                _ = async move { Box::pin(durable_past(durable, waiting_for)).await },
                    if waiting_for.is_some() => {}
                // Not while a PUBLISH is held back by a limit: back-pressure on a 3.x publisher.
                read = read_some(reader, &mut self.io.inbuf), if self.held.is_none() => match read {
                    Ok(0) | Err(_) => return Close::PeerGone,
                    Ok(n) => {
                        self.broker().stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                        // Boxed: handling packets (plugin calls, routing) is the largest state, and the
                        // task's future would keep room for it while idle.
                        if let Err(close) = Box::pin(self.process_input()).await {
                            return close;
                        }
                    }
                },
                written = write_some(writer, &mut self.io.outbuf, &mut self.io.unflushed),
                    if !self.io.outbuf.is_empty() || self.io.unflushed => {
                    match written {
                        Err(_) => return Close::PeerGone,
                        Ok(n) => {
                            self.broker().stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                // A queued message, the broker shutting down or a newcomer's kick (checked at the top).
                _ = self.session.wakeup.notified() => {}
                // The earliest deadline. Without one the branch is disabled and its sleep never polled,
                // so any instant does. `sleep_until` itself rather than an async fn around it that says
                // which deadline it was: that would be 40 bytes more of every idle connection.
                _ = tokio::time::sleep_until(next_timer.map_or(self.last_received, |(at, _)| at)),
                    if next_timer.is_some() => match next_timer.map(|(_, timer)| timer) {
                    Some(Timer::KeepAlive) => return Close::KeepAliveTimeout,
                    Some(Timer::Held) => {
                        if let Err(close) = Box::pin(self.resume_held()).await {
                            return close;
                        }
                    }
                    Some(Timer::Credentials) => {
                        info!("credentials expired");
                        return Close::CredentialsExpired;
                    }
                    None => {}
                },
            }
        }
    }

    /// The earliest of the connection's deadlines: the keep alive (not while a PUBLISH is held back:
    /// the client is not being read then), the held PUBLISH's next look, the credentials' end.
    fn next_timer(&self) -> Option<(tokio::time::Instant, Timer)> {
        let keep_alive = (!self.keep_alive.is_zero() && self.held.is_none())
            .then(|| (self.last_received + self.keep_alive, Timer::KeepAlive));
        let held = self.held.as_ref().map(|h| (h.until, Timer::Held));
        let credentials = self.credentials_expire.map(|at| (at, Timer::Credentials));
        [keep_alive, held, credentials]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Decodes and handles every complete packet in the input buffer.
    async fn process_input(&mut self) -> Result<(), Close> {
        let max = self.broker().config.limits.max_packet_size;
        // A held PUBLISH stops the processing too: what follows it waits, in order.
        while self.held.is_none() {
            match wasp_mqtt::decode(&mut self.io.inbuf, Some(self.version), max) {
                Ok(Some(packet)) => {
                    self.last_received = tokio::time::Instant::now();
                    self.handle(packet).await?;
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    if matches!(e, DecodeError::PacketTooLarge { .. }) {
                        self.broker()
                            .stats
                            .oversize_packets
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(violation(e.reason_code(), e.to_string()));
                }
            }
        }
        Ok(())
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            // Boxed: handled through four nested async fns, each of which would keep its own copies of
            // the 400-byte `Publish` in its state, and that state is part of every connection's task.
            Packet::Publish(p) => self.on_publish(Box::new(p)).await,
            Packet::PubAck(r) => {
                self.on_puback(r.packet_id);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.on_pubrec(r);
                Ok(())
            }
            Packet::PubRel(r) => {
                self.on_pubrel(r.packet_id);
                Ok(())
            }
            Packet::PubComp(r) => {
                self.on_pubcomp(r.packet_id);
                Ok(())
            }
            // Boxed, as rarer than PUBLISH and with plugin calls inside: their state would otherwise be
            // part of every connection's task.
            Packet::Subscribe(s) => Box::pin(self.on_subscribe(s)).await,
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(d)),
            Packet::Connect(_) => Err(violation(ReasonCode::ProtocolError, "second CONNECT")),
            Packet::Auth(a) => Box::pin(self.on_auth(a)).await,
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => Err(violation(
                ReasonCode::ProtocolError,
                format!("{} may only be sent by a server", other.name()),
            )),
        }
    }

    /// Sends a control packet, after any packet held for storage (which keeps acknowledgements in
    /// order).
    fn send(&mut self, packet: &Packet) {
        match self.hold_under(None) {
            Some(ticket) => self
                .deferred
                .push_back((ticket, Deferred::Packet(Box::new(packet.clone())))),
            None => self.encode_now(packet),
        }
    }

    /// Sends `packet` once storage has written `ticket` (and after any packet already held).
    fn send_after(&mut self, ticket: Option<u64>, packet: Packet) {
        match self.hold_under(ticket) {
            Some(ticket) => self
                .deferred
                .push_back((ticket, Deferred::Packet(Box::new(packet)))),
            None => self.encode_now(&packet),
        }
    }

    /// Whether something waiting for `ticket` (`None`: no storage write of its own) must be held:
    /// its write is not durable yet, or packets are held before it. `Some`: the ticket to hold it
    /// under (0 for none of its own).
    fn hold_under(&self, ticket: Option<u64>) -> Option<u64> {
        let waits = ticket.is_some_and(|t| !self.is_durable(t));
        (waits || !self.deferred.is_empty()).then(|| ticket.unwrap_or(0))
    }

    fn is_durable(&self, ticket: u64) -> bool {
        self.durable.as_ref().is_none_or(|d| *d.borrow() >= ticket)
    }

    /// Sends the held packets whose writes are durable, in order, up to the first that must wait.
    fn release_deferred(&mut self) {
        while let Some((ticket, _)) = self.deferred.front() {
            if !self.is_durable(*ticket) {
                return;
            }
            let Some((_, item)) = self.deferred.pop_front() else {
                return;
            };
            match item {
                Deferred::Packet(packet) => self.encode_now(&packet),
                Deferred::Publish {
                    packet_id,
                    delivery,
                } => self.write_publish(packet_id, &delivery, false, Instant::now()),
            }
        }
    }

    /// Encodes a control packet into the output buffer. Packets other than PUBLISH are small; if one still
    /// exceeds the client's maximum, 5.0 allows dropping its reason string and user properties first.
    fn encode_now(&mut self, packet: &Packet) {
        if let Err(e) = wasp_mqtt::encode(
            packet,
            self.version,
            &mut self.io.outbuf,
            self.max_packet_out,
        ) {
            debug!(error = %e, packet = packet.name(), "packet not sent");
        }
    }

    async fn on_publish(&mut self, mut p: Box<Publish>) -> Result<(), Close> {
        let limits = &self.io.broker.config.limits;
        if self.version.is_v5() {
            if !p.properties.subscription_identifiers.is_empty() {
                // MQTT-3.3.4-6
                return Err(violation(
                    ReasonCode::ProtocolError,
                    "PUBLISH from a client carries a Subscription Identifier",
                ));
            }
            if let Some(alias) = p.properties.topic_alias.take() {
                if alias == 0 || alias > limits.topic_alias_maximum {
                    return Err(violation(
                        ReasonCode::TopicAliasInvalid,
                        format!(
                            "topic alias {alias} is not within 1..={}",
                            limits.topic_alias_maximum
                        ),
                    ));
                }
                if p.topic.is_empty() {
                    match self.topic_aliases.get(&alias) {
                        Some(topic) => p.topic = topic.clone(),
                        None => {
                            return Err(violation(
                                ReasonCode::ProtocolError,
                                format!("topic alias {alias} was never set"),
                            ));
                        }
                    }
                } else {
                    self.topic_aliases.insert(alias, p.topic.clone());
                }
            }
        }
        if p.topic.is_empty() {
            return Err(violation(
                ReasonCode::ProtocolError,
                "PUBLISH with an empty topic and no topic alias",
            ));
        }
        if p.qos > limits.maximum_qos {
            return Err(violation(
                ReasonCode::QoSNotSupported,
                format!(
                    "PUBLISH with QoS {} above the Maximum QoS {}",
                    p.qos as u8, limits.maximum_qos as u8
                ),
            ));
        }
        let receive_maximum = usize::from(limits.receive_maximum);
        self.broker()
            .stats
            .messages_received
            .fetch_add(1, Ordering::Relaxed);

        // A QoS 2 message seen before (PUBREC sent, PUBREL not yet received) is not routed again.
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            let state = self.session.state.lock();
            if state.incoming_qos2.contains(&id) {
                drop(state);
                self.send(&Packet::PubRec(PubResponse::success(id)));
                return Ok(());
            }
            if state.incoming_qos2.len() >= receive_maximum {
                drop(state);
                self.broker()
                    .stats
                    .refused_receive_maximum
                    .fetch_add(1, Ordering::Relaxed);
                return Err(violation(
                    ReasonCode::ReceiveMaximumExceeded,
                    format!("more than {receive_maximum} QoS 2 messages awaiting PUBREL"),
                ));
            }
        }

        if let Err(why) = topic_within_limits(limits, &p.topic, &p.topic) {
            self.broker()
                .stats
                .refused_publish_topic
                .fetch_add(1, Ordering::Relaxed);
            let why = format!("topic {why}");
            if !self.version.is_v5() || p.qos == QoS::AtMostOnce {
                // 3.x has no reason code to refuse with and 5.0 QoS 0 no acknowledgement: closing tells
                // the client (5.0: DISCONNECT 0x90), and nothing acknowledged is lost.
                return Err(violation(ReasonCode::TopicNameInvalid, why));
            }
            let refusal = Refusal {
                code: ReasonCode::TopicNameInvalid,
                reason: why,
            };
            self.acknowledge(p.qos, p.packet_id, Err(refusal));
            return Ok(());
        }
        self.limit_and_route(p, true).await;
        Ok(())
    }

    /// Applies the publish limits (rate, bandwidth, queue memory ceiling), then routes and acknowledges,
    /// or refuses, or holds the PUBLISH back. `first`: not a held PUBLISH being looked at again.
    async fn limit_and_route(&mut self, p: Box<Publish>, first: bool) {
        // One clock read for the PUBLISH: the rate limits, the plugins' caches and its expiry.
        let now = Instant::now();
        match self.publish_limits(&p, now) {
            Limited::Pass => {}
            Limited::Refuse(refusal) => {
                self.acknowledge(p.qos, p.packet_id, Err(refusal));
                return;
            }
            Limited::Hold(until) => {
                if first {
                    debug!("PUBLISH held back by a limit; not reading from the client meanwhile");
                    self.broker()
                        .stats
                        .throttled_publishes
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.held = Some(Box::new(Held { publish: p, until }));
                return;
            }
        }
        let (ack_qos, ack_id) = (p.qos, p.packet_id);
        let outcome = self.admit_and_route(p, now).await;
        self.acknowledge(ack_qos, ack_id, outcome);
    }

    /// The held PUBLISH's time has come: the limits look at it again (it may be held longer), then the
    /// packets waiting behind it in the input buffer are handled.
    async fn resume_held(&mut self) -> Result<(), Close> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        // The broker was not listening: the client's silence does not count against its keep alive.
        self.last_received = tokio::time::Instant::now();
        self.limit_and_route(held.publish, false).await;
        self.process_input().await
    }

    /// The rate, bandwidth and queue memory limits for one PUBLISH. 5.0 clients are refused (0x97 Quota
    /// exceeded); 3.x clients, which have no reason code to be told, are held back instead (never
    /// acknowledged and dropped). The rate buckets are charged only when the PUBLISH passes.
    fn publish_limits(&mut self, p: &Publish, now: Instant) -> Limited {
        let size = (p.topic.len() + p.payload.len()) as u64;
        let rate_wait = self
            .publish_rate
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(1, now));
        let bandwidth_wait = self
            .publish_bandwidth
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(size, now));
        let broker = &self.io.broker;
        // QoS 0 publishes pass the ceiling: their deliveries are dropped as they reach full queues.
        let ceiling = p.qos != QoS::AtMostOnce && broker.queue_budget.is_exhausted();
        // Nor are QoS 1/2 publishes taken while storage writes fail: they could not be acknowledged.
        let storage_down =
            p.qos != QoS::AtMostOnce && broker.store().is_some_and(|s| !s.is_healthy());
        if self.version.is_v5() {
            let limits = &broker.config.limits;
            let refused = if !rate_wait.is_zero() {
                Some((
                    &broker.stats.refused_publish_rate,
                    format!(
                        "more than {} PUBLISH packets per second",
                        limits.max_publish_rate
                    ),
                ))
            } else if !bandwidth_wait.is_zero() {
                Some((
                    &broker.stats.refused_publish_bandwidth,
                    format!(
                        "more than {} bytes per second published",
                        limits.max_publish_bytes_per_sec
                    ),
                ))
            } else if ceiling {
                Some((
                    &broker.stats.refused_queued_bytes,
                    "the broker's queues are full (max_queued_bytes)".to_owned(),
                ))
            } else {
                None
            };
            if let Some((counter, reason)) = refused {
                counter.fetch_add(1, Ordering::Relaxed);
                return Limited::Refuse(Refusal {
                    code: ReasonCode::QuotaExceeded,
                    reason,
                });
            }
            if storage_down {
                return Limited::Refuse(Refusal {
                    code: ReasonCode::UnspecifiedError,
                    reason: "storage is unavailable".to_owned(),
                });
            }
        } else {
            let mut wait = rate_wait.max(bandwidth_wait);
            if wait.is_zero() && (ceiling || storage_down) {
                wait = CEILING_RECHECK;
            }
            if !wait.is_zero() {
                return Limited::Hold(tokio::time::Instant::now() + wait);
            }
        }
        if let Some(bucket) = &mut self.publish_rate {
            bucket.take(1, now);
        }
        if let Some(bucket) = &mut self.publish_bandwidth {
            bucket.take(size, now);
        }
        Limited::Pass
    }

    /// Sends the PUBACK / PUBREC of a QoS 1/2 PUBLISH: `outcome` is its reason code and the storage
    /// ticket that must be durable before it goes, or the refusal.
    fn acknowledge(
        &mut self,
        qos: QoS,
        packet_id: Option<u16>,
        outcome: Result<(ReasonCode, Option<u64>), Refusal>,
    ) {
        let (ack_qos, ack_id) = (qos, packet_id);
        let (reason, why, mut ticket) = match outcome {
            Ok((reason, ticket)) => (reason, None, ticket),
            Err(refusal) => {
                debug!(code = ?refusal.code, reason = %refusal.reason, "PUBLISH refused");
                (
                    refusal.code,
                    self.problem_information.then_some(refusal.reason),
                    None,
                )
            }
        };
        let properties = Properties {
            reason_string: why,
            ..Properties::default()
        };
        match (ack_qos, ack_id) {
            (QoS::AtMostOnce, _) | (_, None) => {}
            (QoS::AtLeastOnce, Some(id)) => self.send_after(
                ticket,
                Packet::PubAck(PubResponse {
                    packet_id: id,
                    reason,
                    properties,
                }),
            ),
            (QoS::ExactlyOnce, Some(id)) => {
                if !reason.is_error() {
                    let session = &self.session;
                    let mut state = session.state.lock();
                    state.incoming_qos2.insert(id);
                    let stored = session.persist(&mut state, |_| {
                        Op::Put((
                            store::key(Keyspace::IncomingQos2, &session.client_id, id.into()),
                            Vec::new(),
                        ))
                    });
                    ticket = ticket.max(stored);
                }
                self.send_after(
                    ticket,
                    Packet::PubRec(PubResponse {
                        packet_id: id,
                        reason,
                        properties,
                    }),
                )
            }
        }
    }

    /// Checks an inbound PUBLISH (broker rules, then the authorizers and transformers) and routes it.
    /// Returns the reason code for its acknowledgement with the storage ticket it waits for, or the
    /// refusal.
    async fn admit_and_route(
        &mut self,
        mut p: Box<Publish>,
        now: Instant,
    ) -> Result<(ReasonCode, Option<u64>), Refusal> {
        if p.topic.starts_with("$SYS/") || &*p.topic == "$SYS" {
            // `$SYS` topics are the broker's own (MQTT-4.7.2-1 leaves `$` topics to the server): clients may
            // not publish to them.
            return Err(Refusal {
                code: ReasonCode::NotAuthorized,
                reason: "clients may not publish to $SYS topics".into(),
            });
        }
        if self.version.is_v5()
            && p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            return Err(Refusal {
                code: ReasonCode::PayloadFormatInvalid,
                reason: "payload is not UTF-8 but its Payload Format Indicator is 1".into(),
            });
        }
        let maximum_qos = self.broker().config.limits.maximum_qos;
        if let Some(Plugged { access, .. }) = self.plugins.as_deref_mut() {
            match access.publish_without_calls(&mut p, maximum_qos, now) {
                Some(outcome) => outcome?,
                // Boxed: the plugin calls' state (~2 KB) would otherwise be part of every connection's
                // task for its whole life, idle or not; only PUBLISHes that enter Wasm allocate it.
                None => {
                    Box::pin(async {
                        access.authorize_publish(&p.topic, p.qos, p.retain).await?;
                        access.transform(&mut p, maximum_qos).await
                    })
                    .await?
                }
            }
        }
        let mut properties = p.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        properties.topic_alias = None;
        let message = Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: Some(self.client_id.clone()),
        };
        let published = self.broker().publish(message);
        let reason = if published.matched == 0 && self.version.is_v5() {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        Ok((reason, published.durable_at))
    }

    fn on_puback(&mut self, id: u16) {
        let mut state = self.session.state.lock();
        match state.inflight.get_mut(id) {
            Some(Inflight::Qos1(_)) => {
                if let Some(Inflight::Qos1(d)) = state.inflight.remove(id) {
                    self.session.forget(&mut state, d.stored);
                }
            }
            _ => debug!(packet_id = id, "PUBACK for a packet not awaiting one"),
        }
    }

    fn on_pubrec(&mut self, r: PubResponse) {
        let id = r.packet_id;
        let reply = {
            let session = &self.session;
            let mut state = session.state.lock();
            match state.inflight.get_mut(id) {
                Some(entry @ Inflight::Qos2(_)) => {
                    let stored = match entry {
                        Inflight::Qos2(d) => d.stored,
                        _ => None,
                    };
                    if r.reason.is_error() {
                        // 5.0 4.3.3: a failing PUBREC ends the exchange.
                        state.inflight.remove(id);
                        session.forget(&mut state, stored);
                        None
                    } else {
                        *entry = Inflight::Released(stored);
                        // The PUBREL goes once the release is durable: a restart must not send the
                        // PUBLISH again after the client has completed it.
                        let ticket = stored.and_then(|seq| {
                            session.persist(&mut state, |_| {
                                Op::Put((
                                    store::key(Keyspace::Messages, &session.client_id, seq),
                                    store::encode_released(id),
                                ))
                            })
                        });
                        Some((ticket, PubResponse::success(id)))
                    }
                }
                Some(Inflight::Released(_)) => Some((None, PubResponse::success(id))),
                _ => Some((
                    None,
                    PubResponse {
                        packet_id: id,
                        reason: ReasonCode::PacketIdentifierNotFound,
                        properties: Properties::default(),
                    },
                )),
            }
        };
        if let Some((ticket, pubrel)) = reply {
            self.send_after(ticket, Packet::PubRel(pubrel));
        }
    }

    fn on_pubrel(&mut self, id: u16) {
        let known = {
            let session = &self.session;
            let mut state = session.state.lock();
            let known = state.incoming_qos2.remove(&id);
            if known && state.in_storage {
                session.persist(&mut state, |_| {
                    Op::Delete(store::key(
                        Keyspace::IncomingQos2,
                        &session.client_id,
                        id.into(),
                    ))
                });
            }
            known
        };
        let reason = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send(&Packet::PubComp(PubResponse {
            packet_id: id,
            reason,
            properties: Properties::default(),
        }));
    }

    fn on_pubcomp(&mut self, id: u16) {
        let mut state = self.session.state.lock();
        match state.inflight.get_mut(id) {
            Some(Inflight::Released(stored)) => {
                let stored = *stored;
                state.inflight.remove(id);
                self.session.forget(&mut state, stored);
            }
            _ => debug!(packet_id = id, "PUBCOMP for a packet not awaiting one"),
        }
    }

    /// AUTH on a live connection: 5.0 re-authentication (0x19), or the client's answer (0x18) during one.
    async fn on_auth(&mut self, a: Auth) -> Result<(), Close> {
        let Some((plugins, method)) = self.plugins.as_deref_mut().and_then(|p| {
            let method = p.auth_method.clone()?;
            Some((p, method))
        }) else {
            return Err(violation(
                ReasonCode::ProtocolError,
                "AUTH without enhanced authentication",
            ));
        };
        if a.properties.authentication_method.as_deref() != Some(method.as_str()) {
            // MQTT-4.12.1-1: the method cannot change.
            return Err(violation(
                ReasonCode::ProtocolError,
                "AUTH with another authentication method",
            ));
        }
        let request = wit::AuthRequest {
            client: plugins.access.client().clone(),
            password: None,
            auth_method: Some(method.clone()),
            auth_data: a.properties.authentication_data.map(|d| d.to_vec()),
            reauthentication: true,
        };
        let chain = plugins.access.chain().clone();
        // The plugin calls are boxed, like the publish hooks: see `admit_and_route`.
        let decided = match (a.reason, plugins.reauthenticating.take()) {
            (ReasonCode::ReAuthenticate, None) => Box::pin(chain.authenticate(&request)).await,
            (ReasonCode::ContinueAuthentication, Some(plugin)) => {
                Box::pin(chain.resume_authenticate(&plugin, &request)).await
            }
            (reason, _) => {
                return Err(violation(
                    ReasonCode::ProtocolError,
                    format!("unexpected AUTH with reason {reason:?}"),
                ));
            }
        };
        let who = decided.source.plugin_name().to_owned();
        let (reason, data) = match decided.verdict {
            wit::AuthVerdict::Allow(attributes) => {
                let left = match credentials_expiry(&attributes, SystemTime::now()) {
                    Ok(Some(left)) if left.is_zero() => {
                        return Err(violation(
                            ReasonCode::NotAuthorized,
                            "re-authenticated with credentials that have already expired",
                        ));
                    }
                    Ok(left) => left,
                    Err(why) => return Err(violation(ReasonCode::UnspecifiedError, why)),
                };
                info!(plugin = %who, "client re-authenticated");
                self.credentials_expire = left.map(|left| tokio::time::Instant::now() + left);
                plugins.access.set_attributes(attributes);
                (ReasonCode::Success, None)
            }
            wit::AuthVerdict::Continue(data) => {
                plugins.reauthenticating = decided.source.plugin().cloned();
                (ReasonCode::ContinueAuthentication, Some(data))
            }
            wit::AuthVerdict::Deny(denial) => {
                let refusal = Refusal::from_denial(denial, access::DISCONNECT, &who);
                return Err(violation(refusal.code, refusal.reason));
            }
            wit::AuthVerdict::Defer => {
                return Err(violation(
                    ReasonCode::NotAuthorized,
                    "no plugin accepted the re-authentication",
                ));
            }
        };
        let properties = Properties {
            authentication_method: Some(method),
            authentication_data: data.map(Into::into),
            ..Properties::default()
        };
        self.send(&Packet::Auth(Auth { reason, properties }));
        Ok(())
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let maximum_qos = self.broker().config.limits.maximum_qos;
        let subscription_id = s.properties.subscription_identifiers.first().copied();
        let mut reason_codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut problems = Vec::new();
        for (filter, requested) in &s.filters {
            let (shared, plain) = match parse_filter(filter) {
                Ok(f) => (matches!(f, Filter::Shared { .. }), f.filter()),
                Err(e) => {
                    debug!(%filter, error = %e, "invalid topic filter");
                    problems.push(format!("{filter:?}: {e}"));
                    reason_codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if shared && requested.no_local {
                // MQTT-3.8.3-4
                return Err(violation(
                    ReasonCode::ProtocolError,
                    format!("No Local on the shared subscription {filter}"),
                ));
            }
            let limits = &self.io.broker.config.limits;
            let refused = if let Err(why) = topic_within_limits(limits, filter, plain) {
                self.io
                    .broker
                    .stats
                    .refused_subscribe_topic
                    .fetch_add(1, Ordering::Relaxed);
                Some((ReasonCode::TopicFilterInvalid, format!("filter {why}")))
            } else if limits.max_subscriptions_per_client != 0 && {
                // Replacing a subscription the session has does not count twice.
                let state = self.session.state.lock();
                !state.subscriptions.contains_key(filter.as_str())
                    && state.subscriptions.len() >= limits.max_subscriptions_per_client
            } {
                self.io
                    .broker
                    .stats
                    .refused_subscriptions
                    .fetch_add(1, Ordering::Relaxed);
                Some((
                    ReasonCode::QuotaExceeded,
                    format!(
                        "more than {} subscriptions per client",
                        limits.max_subscriptions_per_client
                    ),
                ))
            } else {
                None
            };
            if let Some((code, why)) = refused {
                // 3.x SUBACKs carry 0x80 for every failure.
                debug!(%filter, "subscription refused: {why}");
                problems.push(format!("{filter:?}: {why}"));
                reason_codes.push(code);
                continue;
            }
            // Authorizers see the filter without its `$share/{group}/` prefix.
            // Boxed, like the publish hooks: see `admit_and_route`.
            let allowed = match self.plugins.as_deref_mut() {
                Some(Plugged { access, .. }) => {
                    Box::pin(access.authorize_subscribe(plain, requested.qos)).await
                }
                None => Ok(requested.qos),
            };
            let allowed = match allowed {
                Ok(qos) => qos,
                Err(refusal) => {
                    debug!(%filter, reason = %refusal.reason, "subscription refused");
                    problems.push(format!("{filter:?}: {}", refusal.reason));
                    reason_codes.push(refusal.code);
                    continue;
                }
            };
            let granted = allowed.min(maximum_qos);
            let options = SubscriptionOptions {
                qos: granted,
                ..*requested
            };
            let existed = self.io.broker.subscribe(
                &self.session,
                filter,
                SubscriptionEntry {
                    options,
                    id: subscription_id,
                },
            );
            reason_codes.push(ReasonCode::granted(granted));
            // Retained messages are not sent for shared subscriptions (5.0 section 4.8.2).
            let send_retained = !shared
                && match requested.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained.push((filter, granted));
            }
        }
        let reason_string = (self.problem_information && !problems.is_empty())
            .then(|| format!("refused: {}", problems.join("; ")));
        // A persistent session's new subscriptions are acknowledged once stored.
        let ticket = if reason_codes.iter().any(|code| !code.is_error()) {
            self.io
                .broker
                .persist_session(&self.session, self.will.as_deref(), true)
        } else {
            None
        };
        self.send_after(
            ticket,
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Properties {
                    reason_string,
                    ..Properties::default()
                },
                reason_codes,
            }),
        );
        // Queued after the SUBACK is encoded, so the SUBACK goes first.
        for (filter, granted) in retained {
            self.io
                .broker
                .send_retained(&self.session, filter, granted, subscription_id);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let reason_codes = u
            .filters
            .iter()
            .map(|filter| {
                if self.io.broker.unsubscribe(&self.session, filter) {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        self.io
            .broker
            .persist_session(&self.session, self.will.as_deref(), true);
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reason_codes,
        }));
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Close {
        if let Some(expiry) = d.properties.session_expiry_interval {
            // MQTT-3.14.2-2: a session that was to end with the connection cannot be made persistent now.
            if self.session_expiry == 0 && expiry != 0 {
                return violation(
                    ReasonCode::ProtocolError,
                    "DISCONNECT sets a Session Expiry Interval after CONNECT set none",
                );
            }
            let capped = expiry.min(self.broker().config.limits.max_session_expiry);
            self.session_expiry = capped;
            self.session.state.lock().expiry_interval = capped;
        }
        Close::Disconnected {
            with_will: d.reason == ReasonCode::DisconnectWithWillMessage,
        }
    }

    /// Re-sends the session's in-flight messages on resume, in their original order, with DUP set
    /// (MQTT-4.4.0-1); PUBRELs are re-sent as they are.
    fn resend_inflight(&mut self) {
        let pending: Vec<(u16, Option<Delivery>)> = {
            let state = self.session.state.lock();
            state
                .inflight
                .ordered()
                .into_iter()
                .map(|(id, entry)| match entry {
                    Inflight::Qos1(d) | Inflight::Qos2(d) => (id, Some(d.clone())),
                    Inflight::Released(_) => (id, None),
                })
                .collect()
        };
        let now = Instant::now();
        for (id, delivery) in pending {
            match delivery {
                Some(d) => self.write_publish(Some(id), &d, true, now),
                None => self.send(&Packet::PubRel(PubResponse::success(id))),
            }
        }
    }

    /// Moves queued messages into the output buffer while the in-flight window and the buffer allow.
    fn fill_outbuf(&mut self) {
        if self.io.outbuf.len() >= OUT_HIGH_WATER || self.deferred.len() >= MAX_DEFERRED {
            return;
        }
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        {
            let session = &self.session;
            let mut state = session.state.lock();
            while batch.len() < BATCH {
                let Some(front) = state.queue.front() else {
                    break;
                };
                if front.message.is_expired(now) {
                    let stored = state.queue.pop_front().and_then(|d| d.stored);
                    session.forget(&mut state, stored);
                    continue;
                }
                if front.qos == QoS::AtMostOnce {
                    let d = state.queue.pop_front().expect("front exists");
                    batch.push((None, d, None));
                    continue;
                }
                if state.inflight.len() >= self.send_window {
                    break;
                }
                let Some(id) = state.next_packet_id() else {
                    break;
                };
                let d = state.queue.pop_front().expect("front exists");
                // A stored delivery records its packet identifier, so that after a restart it is sent
                // again with the same one (MQTT-4.4.0-1). QoS 2 waits until that is durable before the
                // client sees the PUBLISH: a new identifier would make the client take it as a new
                // message. QoS 1 does not wait: a crash before the write re-sends with a new identifier,
                // a duplicate QoS 1 allows.
                let ticket = match d.stored {
                    Some(seq) => session
                        .persist(&mut state, |_| {
                            Op::Put((
                                store::key(Keyspace::Messages, &session.client_id, seq),
                                store::encode_delivery(&d, Some(id)),
                            ))
                        })
                        .filter(|_| d.qos == QoS::ExactlyOnce),
                    None => None,
                };
                let entry = match d.qos {
                    QoS::AtLeastOnce => Inflight::Qos1(d.clone()),
                    _ => Inflight::Qos2(d.clone()),
                };
                state.inflight.push(id, entry);
                batch.push((Some(id), d, ticket));
            }
        }
        for (id, d, ticket) in batch.drain(..) {
            match self.hold_under(ticket) {
                Some(ticket) => self.deferred.push_back((
                    ticket,
                    Deferred::Publish {
                        packet_id: id,
                        delivery: d,
                    },
                )),
                None => self.write_publish(id, &d, false, now),
            }
        }
        self.batch = batch;
    }

    /// Encodes one PUBLISH for this client. A message larger than the client's Maximum Packet Size is
    /// dropped as if it had been delivered (MQTT-3.1.2-25).
    fn write_publish(&mut self, packet_id: Option<u16>, d: &Delivery, dup: bool, now: Instant) {
        let m = &d.message;
        // The message's properties are shared by every subscriber: encoded with this delivery's changes
        // rather than copied (3.x writes none).
        let publish = PublishParts {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: &m.topic,
            packet_id,
            properties: &m.properties,
            changes: Changes {
                message_expiry_interval: Some(m.remaining_expiry(now)),
                subscription_identifier: d.subscription_id,
            },
            payload: &m.payload,
        };
        match wasp_mqtt::encode_publish(
            &publish,
            self.version,
            &mut self.io.outbuf,
            self.max_packet_out,
        ) {
            Ok(_) => {
                self.broker()
                    .stats
                    .messages_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(error = %e, topic = %m.topic, "message dropped for this client");
                self.broker()
                    .stats
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(id) = packet_id {
                    let mut state = self.session.state.lock();
                    state.inflight.remove(id);
                    self.session.forget(&mut state, d.stored);
                }
            }
        }
    }

    /// Ends the connection: tells a 5.0 client why, publishes or schedules the Will, and keeps or discards
    /// the session.
    async fn finish(&mut self, close: Close, lease: &Lease) {
        let (slot, epoch) = (lease.slot(), lease.epoch());
        match close {
            Close::Disconnected { .. } | Close::PeerGone => debug!(?close, "connection closed"),
            _ => info!(?close, "connection closed by the broker"),
        }
        if let (true, Some((reason, why))) = (self.version.is_v5(), close.disconnect_reason()) {
            let properties = Properties {
                reason_string: Some(why),
                ..Properties::default()
            };
            // Not behind packets held for storage: those are not sent (their PUBLISHes were not
            // acknowledged, so their clients send them again).
            self.encode_now(&Packet::Disconnect(Disconnect { reason, properties }));
        }
        self.io.flush(CLOSE_FLUSH).await;

        let broker = self.io.broker.clone();
        self.session.set_online(false);
        broker
            .stats
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(count) = &self.listener_count {
            count.connected.fetch_sub(1, Ordering::Relaxed);
        }

        let will = if close.publishes_will() {
            self.will.take().map(|will| *will)
        } else {
            None
        };
        let expiry = self.session_expiry;
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0).min(expiry);
            if delay == 0 {
                publish_will(&broker, &self.client_id, will);
            } else {
                schedule_will(
                    broker.clone(),
                    slot.clone(),
                    self.client_id.clone(),
                    will,
                    epoch,
                    delay,
                );
            }
        }
        if expiry == 0 {
            let mut current = slot.session.lock();
            if current
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.session))
            {
                broker.discard_session(&self.session);
                *current = None;
            }
        } else if slot.epoch.load(Ordering::Acquire) == epoch {
            // Stored as disconnected (its expiry counts from now), unless a newcomer took it over.
            broker.persist_session(&self.session, None, false);
        }
        if expiry != 0 && expiry != u32::MAX {
            schedule_expiry(
                broker,
                slot.clone(),
                self.client_id.clone(),
                self.session.clone(),
                epoch,
                expiry,
            );
        }
    }
}

/// Resolves once storage has written `ticket` (never without storage or a ticket: the caller guards).
async fn durable_past(durable: Option<&mut watch::Receiver<u64>>, ticket: Option<u64>) {
    match (durable, ticket) {
        (Some(durable), Some(ticket)) => {
            // An error means the writer is gone (shutdown): nothing more will become durable.
            if durable.wait_for(|d| *d >= ticket).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending().await,
    }
}

pub(crate) fn publish_will(broker: &Broker, client_id: &Arc<str>, will: Will) {
    let mut properties = will.properties;
    properties.will_delay_interval = None;
    let expires_at = properties
        .message_expiry_interval
        .take()
        .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
    debug!(topic = %will.topic, "publishing will");
    broker.publish(Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties,
        expires_at,
        origin: Some(client_id.clone()),
    });
}

/// Sleeps `secs` seconds in steps (tokio timers do not take centuries) and tells whether the client has
/// stayed away all along (no connection took the slot since `epoch`).
async fn still_away_after(slot: &ClientSlot, epoch: u64, secs: u32) -> bool {
    let mut left = Duration::from_secs(u64::from(secs));
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(86_400));
        tokio::time::sleep(step).await;
        left -= step;
        if slot.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
    }
    true
}

/// Publishes the Will after the Will Delay Interval unless the client reconnects first (5.0 3.1.3.2.2).
fn schedule_will(
    broker: Arc<Broker>,
    slot: Arc<ClientSlot>,
    client_id: Arc<str>,
    will: Will,
    epoch: u64,
    delay: u32,
) {
    tokio::spawn(async move {
        if still_away_after(&slot, epoch, delay).await {
            publish_will(&broker, &client_id, will);
        }
    });
}

/// Discards the session once its expiry interval has passed with no connection.
pub(crate) fn schedule_expiry(
    broker: Arc<Broker>,
    slot: Arc<ClientSlot>,
    client_id: Arc<str>,
    session: Arc<Session>,
    epoch: u64,
    secs: u32,
) {
    tokio::spawn(async move {
        if !still_away_after(&slot, epoch, secs).await {
            return;
        }
        // A connection that holds (or waits for) the lease is about to use the session: leave it.
        let Some(_lease) = slot.try_lease() else {
            return;
        };
        {
            let mut current = slot.session.lock();
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                debug!(%client_id, "session expired");
                broker.discard_session(&session);
                *current = None;
            }
        }
        broker.remove_slot_if_unused(&client_id, &slot);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> wit::Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn credentials_expiry_reads_the_reserved_attribute() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        assert_eq!(
            credentials_expiry(&attrs(&[("role", "admin")]), now),
            Ok(None)
        );
        assert_eq!(
            credentials_expiry(&attrs(&[("wasp:expires-at", "1700000002500")]), now),
            Ok(Some(Duration::from_millis(2500)))
        );
        // Already past: zero, which the callers refuse.
        assert_eq!(
            credentials_expiry(&attrs(&[("wasp:expires-at", "1699999999999")]), now),
            Ok(Some(Duration::ZERO))
        );
        // The last value wins, as a later plugin's attribute would.
        assert_eq!(
            credentials_expiry(
                &attrs(&[
                    ("wasp:expires-at", "1700000001000"),
                    ("wasp:expires-at", "1700000009000")
                ]),
                now
            ),
            Ok(Some(Duration::from_secs(9)))
        );
        let error = credentials_expiry(&attrs(&[("wasp:expires-at", "soon")]), now).unwrap_err();
        assert!(
            error.contains("wasp:expires-at") && error.contains("soon"),
            "{error}"
        );
    }

    #[test]
    fn expired_credentials_close_with_maximum_connect_time_and_the_will() {
        let close = Close::CredentialsExpired;
        assert_eq!(
            close.disconnect_reason().map(|(code, _)| code),
            Some(ReasonCode::MaximumConnectTime)
        );
        assert!(close.publishes_will());
    }
}
