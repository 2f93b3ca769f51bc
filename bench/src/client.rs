//! A raw MQTT client over tokio's `TcpStream`, speaking through `wasp_mqtt`'s codec: no client library, so
//! the generator spends its time on the load, not on a client's machinery.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use wasp_mqtt::{Connect, Packet, Properties, ProtocolVersion, ReasonCode, decode, encode};

/// Longest wait for any one connect, read or write; a run that stalls this long fails.
pub const IO_LIMIT: Duration = Duration::from_secs(10);
const MAX_PACKET: u32 = 1 << 24;
/// Keep alive asked for in CONNECT (rumqttd refuses 0); longer than any run.
const KEEP_ALIVE: u16 = 600;

/// One connection: the socket and its two buffers.
pub struct Client {
    pub stream: TcpStream,
    inbox: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
}

/// Opens a TCP connection to `addr` from `source` (port chosen by the kernel), with TCP_NODELAY.
pub async fn dial(addr: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    let stream = timeout(IO_LIMIT, socket.connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Client {
    /// Connects and completes CONNECT / CONNACK (clean session). `buffer` sizes the read and write buffers.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        client_id: &str,
        version: ProtocolVersion,
        buffer: usize,
    ) -> Result<Client> {
        let stream = dial(addr, source).await?;
        let mut client = Client {
            stream,
            inbox: BytesMut::with_capacity(buffer),
            out: BytesMut::with_capacity(buffer),
            version,
        };
        client.queue(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: KEEP_ALIVE,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None::<Bytes>,
            properties: Properties::default(),
        })))?;
        client.flush().await?;
        match client.next().await? {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => Ok(client),
            other => bail!("{client_id}: CONNECT refused: {other:?}"),
        }
    }

    /// Encodes `packet` into the output buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<()> {
        encode(packet, self.version, &mut self.out, MAX_PACKET)?;
        Ok(())
    }

    /// Writes the output buffer (bounded wait).
    pub async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        timeout(IO_LIMIT, self.stream.write_all(&self.out))
            .await
            .context("write timed out")??;
        self.out.clear();
        Ok(())
    }

    /// The next packet already buffered, if any.
    pub fn buffered(&mut self) -> Result<Option<Packet>> {
        Ok(decode(&mut self.inbox, Some(self.version), MAX_PACKET)?)
    }

    /// Reads more bytes, waiting at most `wait`: `Ok(false)` if nothing came in time, an error at end of
    /// stream.
    pub async fn fill_within(&mut self, wait: Duration) -> Result<bool> {
        match timeout(wait, self.stream.read_buf(&mut self.inbox)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => bail!("connection closed by the broker"),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Reads what the socket already holds without waiting.
    pub fn try_fill(&mut self) -> Result<()> {
        match self.stream.try_read_buf(&mut self.inbox) {
            Ok(0) => bail!("connection closed by the broker"),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The next packet (bounded wait).
    pub async fn next(&mut self) -> Result<Packet> {
        loop {
            if let Some(packet) = self.buffered()? {
                return Ok(packet);
            }
            if !self.fill_within(IO_LIMIT).await? {
                bail!("no packet within {IO_LIMIT:?}");
            }
        }
    }

    /// Gives up the buffers, keeping the socket (idle connections).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}
