//! [`Connection`]: one blocking Redis connection speaking RESP2, a command at a time. The frames are
//! encoded and decoded by `redis-protocol`; this module only moves bytes and turns replies into
//! [`ClientError`]s that say what failed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed (connect, send or receive): it is unusable and must be dropped.
    #[error("connection failed: {0}")]
    Io(String),
    /// The server answered with an error reply (e.g. `NOSCRIPT`, `MISCONF`, `WRONGPASS`); the
    /// connection is still usable.
    #[error("Redis answered: {0}")]
    Server(String),
    /// The reply is not what the command returns: the connection is out of step and must be dropped.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the connection must be dropped and opened again.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Server(_))
    }
}

/// A blocking connection to one Redis server.
pub struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes received and not yet decoded.
    input: Vec<u8>,
    /// The encoded command, reused between commands.
    output: Vec<u8>,
}

/// How long a reply (or sending a command) may take before the connection counts as failed. The broker's
/// own deadline for a storage call is longer: a timeout here is reported as an error, and the write is
/// retried.
const REPLY_TIMEOUT: Duration = Duration::from_secs(4);

impl Connection {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Result<Self, ClientError> {
        let stream =
            TcpStream::connect(addr).map_err(|e| ClientError::Io(format!("{addr}: {e}")))?;
        // Best effort: WASI sockets may not offer socket timeouts; the host's call deadline still applies.
        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
        let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            addr,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(4096),
        })
    }

    /// Sends one command and returns its reply; an error reply is [`ClientError::Server`].
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<OwnedFrame, ClientError> {
        let frame = OwnedFrame::Array(
            args.iter()
                .map(|a| OwnedFrame::BulkString(a.as_ref().to_vec()))
                .collect(),
        );
        self.output.clear();
        self.output.resize(frame.encode_len(false), 0);
        encode(&mut self.output, &frame, false)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the command: {e}")))?;
        self.stream
            .write_all(&self.output)
            .map_err(|e| ClientError::Io(format!("{}: send: {e}", self.addr)))?;
        match self.reply()? {
            OwnedFrame::Error(message) => Err(ClientError::Server(message)),
            reply => Ok(reply),
        }
    }

    /// Reads until one whole reply is decoded.
    fn reply(&mut self) -> Result<OwnedFrame, ClientError> {
        let mut chunk = [0u8; 8192];
        loop {
            match decode(&self.input) {
                Ok(Some((frame, used))) => {
                    self.input.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("{}: {e}", self.addr))),
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| ClientError::Io(format!("{}: receive: {e}", self.addr)))?;
            if n == 0 {
                return Err(ClientError::Io(format!(
                    "{}: the server closed the connection",
                    self.addr
                )));
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The bytes of a bulk or simple string reply.
pub fn bytes(frame: OwnedFrame) -> Result<Vec<u8>, ClientError> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Ok(b),
        other => Err(ClientError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// The elements of an array reply.
pub fn array(frame: OwnedFrame) -> Result<Vec<OwnedFrame>, ClientError> {
    match frame {
        OwnedFrame::Array(items) => Ok(items),
        other => Err(ClientError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}
