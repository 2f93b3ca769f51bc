//! The transports under MQTT: TCP, TLS, WebSocket and WebSocket over TLS.
//!
//! A listener owns a [`Transport`]; [`Transport::accept`] runs its handshakes on an accepted socket and
//! hands the connection task a [`Stream`]: the bytes (a [`Duplex`]: the TCP socket itself, or the two halves
//! of a TLS or WebSocket stream as trait objects) plus what TLS learnt about the client. The connection code
//! reads and writes bytes and never knows which transport carries them; it flushes after writing (TLS
//! records and WebSocket frames are buffered until flushed).
//!
//! TLS settings live in a [`TlsAcceptor`] that can be reloaded while the broker runs (SIGHUP, or a change
//! of the certificate, key or CA files): each handshake takes the configuration current at that moment,
//! connections already established keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_util::either::Either;
use tracing::{debug, info, warn};
use ws_stream_tungstenite::WsStream;
use x509_parser::extensions::GeneralName;

use crate::config::{CertField, ListenerKind, TlsSettings, TlsVersion};

/// A client's byte stream, read and written at once (the connection waits on both in one `select!`).
pub(crate) enum Duplex {
    /// Plain TCP: the socket itself, whose halves are two shared references (see [`Duplex::halves`]).
    /// Not `into_split`'s owned halves, which cost every connection two allocations (an `Arc`, and
    /// boxes around them as trait objects).
    Tcp(TcpStream),
    /// TLS and WebSocket: the stream's halves as `tokio::io::split` makes them.
    Split(
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    ),
}

impl Duplex {
    /// The read and write halves, for as long as they are used.
    pub(crate) fn halves(&mut self) -> (Reader<'_>, Writer<'_>) {
        match self {
            Duplex::Tcp(tcp) => {
                let (reader, writer) = tcp.split();
                (Either::Left(reader), Either::Left(writer))
            }
            Duplex::Split(reader, writer) => {
                (Either::Right(&mut **reader), Either::Right(&mut **writer))
            }
        }
    }
}

/// The read half of a [`Duplex`] (`Either` forwards the reads to whichever side it holds).
pub(crate) type Reader<'a> = Either<ReadHalf<'a>, &'a mut (dyn AsyncRead + Send + Unpin)>;

/// The write half of a [`Duplex`].
pub(crate) type Writer<'a> = Either<WriteHalf<'a>, &'a mut (dyn AsyncWrite + Send + Unpin)>;

/// An accepted client after its transport's handshakes.
pub(crate) struct Stream {
    pub(crate) duplex: Duplex,
    /// The verified client certificate's identity, on TLS listeners that asked for one.
    pub(crate) client_cert: Option<ClientCert>,
}

/// What a verified client certificate says about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    /// The identity handed to plugins (`tls-identity`): the configured field (`username_from_cert`),
    /// else the subject's Common Name, else the first Subject Alternative Name, else the subject.
    pub(crate) identity: String,
    /// The MQTT user name taken from the certificate, when the listener says so.
    pub(crate) username: Option<String>,
}

/// Errors of the transport layer: TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate, key or CA file could not be read or holds nothing usable.
    #[error("listener `{listener}`: listeners.tls.{key} = {}: {message}", path.display())]
    TlsFile {
        /// The listener's name.
        listener: String,
        /// The key of `[listeners.tls]` naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, with the fix.
        message: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("listener `{listener}`: TLS settings refused: {source}")]
    Tls {
        /// The listener's name.
        listener: String,
        /// rustls's error.
        source: rustls::Error,
    },
}

/// How one listener turns accepted sockets into MQTT byte streams.
pub(crate) struct Transport {
    /// `None`: plain.
    tls: Option<Arc<TlsAcceptor>>,
    /// `Some(path)`: WebSocket upgrade requests on this path only.
    websocket: Option<WebSocket>,
}

struct WebSocket {
    path: String,
    config: WebSocketConfig,
}

impl Transport {
    /// The transport of a listener. Reads its TLS files, if any.
    pub(crate) fn new(
        listener: &str,
        kind: &ListenerKind,
        tls: Option<&TlsSettings>,
        max_packet_size: u32,
    ) -> Result<Transport, TransportError> {
        let websocket = match kind {
            ListenerKind::Tcp => None,
            ListenerKind::WebSocket { path } => Some(WebSocket {
                path: path.clone(),
                // A WebSocket message may hold several MQTT packets, or part of one; the MQTT decoder
                // enforces the packet size, this only keeps one frame from growing without bound.
                config: WebSocketConfig::default()
                    .max_message_size(Some(max_packet_size as usize + 64 * 1024))
                    .max_frame_size(Some(max_packet_size as usize + 64 * 1024)),
            }),
        };
        let tls = match tls {
            None => None,
            Some(settings) => Some(Arc::new(TlsAcceptor::new(
                listener,
                settings.clone(),
                websocket.is_some(),
            )?)),
        };
        Ok(Transport { tls, websocket })
    }

    /// The listener's TLS acceptor, for reloading.
    pub(crate) fn tls(&self) -> Option<&Arc<TlsAcceptor>> {
        self.tls.as_ref()
    }

    /// Runs the TLS and WebSocket handshakes. The caller bounds the time they may take.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<Stream, String> {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match &self.tls {
            // Plain TCP: the socket's own halves, which need no lock between reader and writer.
            None if self.websocket.is_none() => Ok(Stream {
                duplex: Duplex::Tcp(tcp),
                client_cert: None,
            }),
            None => self.upgrade(tcp, None).await,
            Some(tls) => {
                let stream = tls
                    .current()
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let client_cert = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => Some(tls.client_cert(leaf)?),
                    _ => None,
                };
                self.upgrade(stream, client_cert).await
            }
        }
    }

    /// The WebSocket handshake, on WebSocket listeners; the halves of the stream.
    // The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's `Callback` signature.
    #[allow(clippy::result_large_err)]
    async fn upgrade<S>(&self, stream: S, client_cert: Option<ClientCert>) -> Result<Stream, String>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(ws) = &self.websocket else {
            let (reader, writer) = tokio::io::split(stream);
            return Ok(Stream {
                duplex: Duplex::Split(Box::new(reader), Box::new(writer)),
                client_cert,
            });
        };
        let path = ws.path.clone();
        let callback = move |request: &Request, response: Response| {
            websocket_handshake(&path, request, response)
        };
        let socket = async_tungstenite::tokio::accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws.config),
        )
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
        let (reader, writer) = tokio::io::split(WsStream::new(socket));
        Ok(Stream {
            duplex: Duplex::Split(Box::new(reader), Box::new(writer)),
            client_cert,
        })
    }
}

/// Checks an upgrade request: the listener's path, and the `mqtt` subprotocol (MQTT-6.0.0-3 and 3.1.1
/// section 6: the server selects `mqtt`; `mqttv3.1` is what MQTT 3.1 clients offer). A request without a
/// `Sec-WebSocket-Protocol` header is accepted without one, as Mosquitto does; one offering only other
/// subprotocols is refused.
#[allow(clippy::result_large_err)] // tungstenite's `Callback` signature
fn websocket_handshake(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: String| {
        debug!(%why, "WebSocket upgrade refused");
        let mut refusal = ErrorResponse::new(Some(why));
        *refusal.status_mut() = status;
        Err(refusal)
    };
    if request.uri().path() != path {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("MQTT is served on {path}, not {}", request.uri().path()),
        );
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    let pick = |name: &str| offered.iter().find(|p| p.eq_ignore_ascii_case(name));
    match pick("mqtt").or_else(|| pick("mqttv3.1")) {
        Some(protocol) => {
            let value = HeaderValue::from_str(protocol).expect("a header value we just read");
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
            Ok(response)
        }
        None => refuse(
            StatusCode::BAD_REQUEST,
            format!("no MQTT subprotocol offered (got {offered:?}): offer \"mqtt\""),
        ),
    }
}

/// A listener's TLS configuration, replaced as a whole on reload.
pub(crate) struct TlsAcceptor {
    listener: String,
    settings: TlsSettings,
    websocket: bool,
    /// Read on every handshake, written on reload: a read lock is a few nanoseconds next to a handshake,
    /// and a reload must not wait for connections.
    current: RwLock<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
}

impl TlsAcceptor {
    fn new(
        listener: &str,
        settings: TlsSettings,
        websocket: bool,
    ) -> Result<TlsAcceptor, TransportError> {
        let stamps = file_stamps(&settings);
        let config = server_config(listener, &settings, websocket)?;
        Ok(TlsAcceptor {
            listener: listener.to_owned(),
            settings,
            websocket,
            current: RwLock::new(Loaded { config, stamps }),
        })
    }

    fn current(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().config.clone())
    }

    /// How often the files are checked for changes; `None`: only on SIGHUP.
    pub(crate) fn reload_check(&self) -> Option<std::time::Duration> {
        self.settings.reload_check
    }

    /// Reloads the files if any changed since the last load (`force`: in any case). A failure is logged
    /// and the previous configuration stays in use. Returns true if a new configuration is in use.
    pub(crate) fn reload(&self, force: bool) -> bool {
        let stamps = file_stamps(&self.settings);
        if !force && self.current.read().stamps == stamps {
            return false;
        }
        match server_config(&self.listener, &self.settings, self.websocket) {
            Ok(config) => {
                *self.current.write() = Loaded { config, stamps };
                info!(listener = %self.listener, "TLS certificates reloaded");
                true
            }
            Err(e) => {
                // Remember the stamps so a broken file is reported once, not at every check.
                self.current.write().stamps = stamps;
                warn!(error = %e, "TLS reload failed; the previous certificates stay in use");
                false
            }
        }
    }

    /// The identity of a verified client certificate.
    fn client_cert(&self, leaf: &CertificateDer<'_>) -> Result<ClientCert, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("client certificate does not parse: {e}"))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let alt_name = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        Some((*s).to_owned())
                    }
                    _ => None,
                })
            });
        let username =
            match self.settings.username_from_cert {
                None => None,
                Some(CertField::CommonName) => Some(
                    common_name
                        .clone()
                        .ok_or("client certificate has no Common Name to use as user name")?,
                ),
                Some(CertField::SubjectAltName) => Some(alt_name.clone().ok_or(
                    "client certificate has no Subject Alternative Name to use as user name",
                )?),
            };
        let identity = username
            .clone()
            .or(common_name)
            .or(alt_name)
            .unwrap_or_else(|| cert.subject().to_string());
        Ok(ClientCert { identity, username })
    }
}

/// The modification times of the files a TLS configuration is made from.
fn file_stamps(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    [
        Some(&settings.cert_file),
        Some(&settings.key_file),
        settings.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
    .collect()
}

/// Builds a rustls configuration from the listener's settings and files.
fn server_config(
    listener: &str,
    settings: &TlsSettings,
    websocket: bool,
) -> Result<Arc<ServerConfig>, TransportError> {
    let file_error = |key: &'static str, path: &Path, message: String| TransportError::TlsFile {
        listener: listener.to_owned(),
        key,
        path: path.to_owned(),
        message,
    };
    let certs = |key: &'static str, path: &Path| -> Result<Vec<CertificateDer<'static>>, _> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| file_error(key, path, pem_message(e)))?;
        if certs.is_empty() {
            return Err(file_error(
                key,
                path,
                "no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in the file".to_owned(),
            ));
        }
        Ok(certs)
    };
    let chain = certs("cert_file", &settings.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
        file_error(
            "key_file",
            &settings.key_file,
            format!(
                "{} (a PKCS#8, PKCS#1 or SEC1 PEM private key is expected)",
                pem_message(e)
            ),
        )
    })?;
    let tls_error = |source| TransportError::Tls {
        listener: listener.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_error)?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("client_ca_file", ca_file)? {
                roots.add(cert).map_err(|e| {
                    file_error(
                        "client_ca_file",
                        ca_file,
                        format!("unusable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| {
                file_error(
                    "client_ca_file",
                    ca_file,
                    format!("unusable CA bundle: {e}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(tls_error)?;
    // ALPN: "mqtt" for MQTT over TLS; browsers and WebSocket clients offer "http/1.1".
    config.alpn_protocols = vec![if websocket {
        b"http/1.1".to_vec()
    } else {
        b"mqtt".to_vec()
    }];
    Ok(Arc::new(config))
}

fn pem_message(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
            "no such file".to_owned()
        }
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind in the file".to_owned()
        }
        other => format!("not valid PEM: {other}"),
    }
}
