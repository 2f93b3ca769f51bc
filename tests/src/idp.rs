//! A mock OAuth 2.0 identity provider over real HTTPS on `127.0.0.1:0`, for the oauth plugin's
//! end-to-end tests: it serves a JWKS at `/jwks` and answers RFC 7662 token introspection at
//! `/introspect`, and the test can rotate the keys, make it fail (HTTP 500) or hang.
//!
//! Its certificate is issued by a CA made for the run ([`Idp::ca_pem`]), which the plugin's `http`
//! grant names as `ca_file`. HTTP is served by hyper over tokio-rustls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::{Ca, Leaf};

/// How the provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Normally.
    Serve,
    /// HTTP 500 to every request.
    Fail,
    /// Never answers (the connection stays open).
    Hang,
}

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    jwks: String,
    /// Introspection answers by token; unknown tokens get `{"active": false}`.
    introspection: HashMap<String, String>,
    received: Vec<Received>,
}

/// The running provider; stops when dropped.
pub struct Idp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The PEM of the CA that issued its certificate.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// Starts a provider serving an empty key set.
    pub async fn start() -> Idp {
        let ca = Ca::new("wasp test IdP CA");
        let leaf = ca.issue(Leaf::Server(&["127.0.0.1"]), false);
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert.clone()], leaf.key())
        .expect("server TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Serve,
            jwks: r#"{"keys":[]}"#.to_owned(),
            introspection: HashMap::new(),
            received: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Idp {
            addr,
            ca_pem: ca.pem(),
            state,
            task,
        }
    }

    /// `host:port`, as the plugin's `http` grant lists it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The `https://` URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Serves this JWKS document from now on.
    pub fn set_jwks(&self, jwks: impl Into<String>) {
        self.lock().jwks = jwks.into();
    }

    /// Answers introspection of `token` with this JSON document.
    pub fn set_introspection(&self, token: &str, json: impl Into<String>) {
        self.lock()
            .introspection
            .insert(token.to_owned(), json.into());
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.lock()
            .received
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("idp state")
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let (mode, reply) = {
        let mut state = state.lock().expect("idp state");
        let reply = match (method.as_str(), path.as_str()) {
            ("GET", "/jwks") => Some(state.jwks.clone()),
            ("POST", "/introspect") => {
                let token = form_value(&body, "token").unwrap_or_default();
                Some(
                    state
                        .introspection
                        .get(&token)
                        .cloned()
                        .unwrap_or_else(|| r#"{"active":false}"#.to_owned()),
                )
            }
            _ => None,
        };
        state.received.push(Received {
            method,
            path,
            authorization,
            body,
        });
        (state.mode, reply)
    };
    let (status, body) = match (mode, reply) {
        (Mode::Hang, _) => std::future::pending().await,
        (Mode::Fail, _) => (StatusCode::INTERNAL_SERVER_ERROR, "{}".to_owned()),
        (Mode::Serve, Some(json)) => (StatusCode::OK, json),
        (Mode::Serve, None) => (StatusCode::NOT_FOUND, "{}".to_owned()),
    };
    Ok(Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}

/// The value of `key` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
