//! `wasp:plugin/http` (WIT 0.1.1): outgoing HTTP requests, for plugins whose configuration grants it.
//!
//! Every request is checked against the plugin's [`HttpGrant`] here, before it reaches the
//! [`HttpClient`] (the production [`ReqwestClient`], or the test harness's scripted one): scheme
//! (`https`, `http` only with `allow_plain_http`), host and port. The wait is bounded by the request's
//! `timeout-ms` and by what remains of the calling hook's deadline less a margin ([`deadline_margin`]),
//! so that the guest gets `error::timeout` and still has time to answer instead of being stopped. Redirects are not
//! followed; response bodies over [`MAX_RESPONSE_BODY`] are `error::too-large`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bindings::wasp::plugin::http::{self as wit, Host};
use crate::config::HttpGrant;
use crate::instance::State;

/// The largest response body a plugin receives; a larger one is [`HttpError::TooLarge`].
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// How long before the hook's deadline the host stops waiting for a response, so that the guest gets
/// [`HttpError::Timeout`] and can still answer before the deadline stops it: a fifth of the plugin's
/// `call_timeout`, at least 10 ms and at most 1 s (20 ms of the default 100 ms). On a loaded machine a
/// thread can be preempted for several milliseconds, so a fixed 10 ms was too tight for long deadlines.
pub fn deadline_margin(call_timeout: Duration) -> Duration {
    (call_timeout / 5).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// An outgoing request, already checked against the plugin's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... as the plugin gave it.
    pub method: String,
    /// Absolute `https://` (or granted `http://`) URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long the client may take: the lower of the request's `timeout-ms` and what remains of the
    /// hook's deadline. The host also stops waiting after it.
    pub timeout: Duration,
}

/// A response, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request got no response: the WIT `http.error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("response body larger than {MAX_RESPONSE_BODY} bytes")]
    TooLarge,
}

/// The future an [`HttpClient`] answers with.
pub type HttpFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

/// Sends a plugin's requests. The host has already checked the grant and bounds the wait by
/// [`HttpRequest::timeout`]; an implementation must not follow redirects and must cap bodies at
/// [`MAX_RESPONSE_BODY`].
pub trait HttpClient: Send + Sync {
    fn send(&self, request: HttpRequest) -> HttpFuture;
}

/// The production [`HttpClient`]: reqwest over rustls (ring), HTTP/1.1, no redirects, no proxies, trusting
/// the webpki roots plus an optional CA file.
#[derive(Debug, Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl ReqwestClient {
    /// A client trusting the webpki roots and, if given, the PEM certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let mut added = 0;
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
            {
                let cert =
                    cert.map_err(|e| format!("CA file {}: invalid PEM: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: invalid certificate: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .http1_only()
            .referer(false)
            .build()
            .map_err(|e| format!("HTTP client: {}", error_chain(&e)))?;
        Ok(Self { client })
    }
}

/// An error and its sources, `: `-separated (reqwest's `Display` omits the cause, e.g. the TLS error).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl HttpClient for ReqwestClient {
    fn send(&self, request: HttpRequest) -> HttpFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("method {:?}", request.method)))?;
            let mut builder = client
                .request(method, &request.url)
                .timeout(request.timeout)
                .body(request.body);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let built = builder
                .build()
                .map_err(|e| HttpError::InvalidRequest(error_chain(&e)))?;
            let transport = |e: reqwest::Error| {
                if e.is_timeout() {
                    HttpError::Timeout
                } else {
                    HttpError::Transport(error_chain(&e))
                }
            };
            let mut response = client.execute(built).await.map_err(transport)?;
            if response
                .content_length()
                .is_some_and(|length| length > MAX_RESPONSE_BODY as u64)
            {
                return Err(HttpError::TooLarge);
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        })
    }
}

/// One `hosts` entry of a grant: the normalised host (as `Url::host_str` writes it) and the port.
pub(crate) fn parse_host_entry(entry: &str) -> Result<(String, Option<u16>), String> {
    if entry.is_empty() {
        return Err("empty host".to_owned());
    }
    if let Some(bad) = entry
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | '@' | '*' | '?' | '#' | '\\'))
    {
        return Err(format!(
            "{entry:?} is not a host or host:port (it contains {bad:?}; no scheme, path or wildcard)"
        ));
    }
    // A port follows the last `:` unless that colon is inside an IPv6 address (`[::1]`, `::1`).
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("{entry:?}: port {port:?} is not a number from 1 to 65535")
                })?;
            (host, Some(port))
        }
        _ => (entry, None),
    };
    let parsed = url::Host::parse(host).map_err(|e| format!("{entry:?}: invalid host: {e}"))?;
    Ok((parsed.to_string(), port))
}

/// A plugin's grant, parsed once at load, with the client that sends what it allows.
pub(crate) struct HttpAccess {
    hosts: Vec<(String, Option<u16>)>,
    allow_plain_http: bool,
    client: Arc<dyn HttpClient>,
    margin: Duration,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl HttpAccess {
    /// The grant of a plugin whose calls last at most `call_timeout`.
    pub fn new(
        grant: &HttpGrant,
        client: Arc<dyn HttpClient>,
        call_timeout: Duration,
    ) -> Result<Self, String> {
        let hosts = grant
            .hosts
            .iter()
            .map(|entry| parse_host_entry(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hosts,
            allow_plain_http: grant.allow_plain_http,
            client,
            margin: deadline_margin(call_timeout),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Whether the grant allows `url`; `Err` says why not.
    pub fn check(&self, url: &str) -> Result<(), HttpError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| HttpError::InvalidRequest(format!("URL {url:?}: {e}")))?;
        let scheme = parsed.scheme();
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            other => {
                return Err(HttpError::InvalidRequest(format!(
                    "URL {url:?}: scheme {other:?} is not http or https"
                )));
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| HttpError::InvalidRequest(format!("URL {url:?} has no host")))?;
        let port = parsed.port().unwrap_or(default_port);
        if scheme == "http" && !self.allow_plain_http {
            return Err(HttpError::NotAllowed(format!(
                "plain http:// to {host}:{port} is not allowed (the grant has allow_plain_http = false)"
            )));
        }
        let granted = self.hosts.iter().any(|(granted, granted_port)| {
            granted.eq_ignore_ascii_case(host) && granted_port.unwrap_or(default_port) == port
        });
        if granted {
            Ok(())
        } else {
            Err(HttpError::NotAllowed(format!(
                "host {host}:{port} is not in the plugin's http grant"
            )))
        }
    }

    /// Checks `request` against the grant, then sends it, waiting at most `timeout`.
    pub async fn send(
        &self,
        request: wit::Request,
        deadline: Instant,
    ) -> Result<wit::Response, wit::Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.checked_send(request, deadline).await;
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
            .map(|r| wit::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(|e| match e {
                HttpError::NotAllowed(m) => wit::Error::NotAllowed(m),
                HttpError::InvalidRequest(m) => wit::Error::InvalidRequest(m),
                HttpError::Timeout => wit::Error::Timeout,
                HttpError::Transport(m) => wit::Error::Transport(m),
                HttpError::TooLarge => wit::Error::TooLarge,
            })
    }

    async fn checked_send(
        &self,
        request: wit::Request,
        deadline: Instant,
    ) -> Result<HttpResponse, HttpError> {
        self.check(&request.url)?;
        validate_request(&request)?;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.margin);
        let timeout = match request.timeout_ms {
            Some(ms) => remaining.min(Duration::from_millis(u64::from(ms))),
            None => remaining,
        };
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout,
        };
        match tokio::time::timeout(timeout, self.client.send(request)).await {
            Ok(Ok(response)) if response.body.len() > MAX_RESPONSE_BODY => Err(HttpError::TooLarge),
            Ok(result) => result,
            Err(_elapsed) => Err(HttpError::Timeout),
        }
    }
}

/// Method and header syntax (RFC 9110 tokens; values without CR, LF or NUL), checked by the host so
/// every [`HttpClient`] sees well-formed requests.
fn validate_request(request: &wit::Request) -> Result<(), HttpError> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(&request.method) {
        return Err(HttpError::InvalidRequest(format!(
            "method {:?} is not an HTTP token",
            request.method
        )));
    }
    for (name, value) in &request.headers {
        if !token(name) {
            return Err(HttpError::InvalidRequest(format!(
                "header name {name:?} is not an HTTP token"
            )));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(HttpError::InvalidRequest(format!(
                "header {name}: the value contains CR, LF or NUL"
            )));
        }
    }
    Ok(())
}

impl Host for State {
    async fn send(&mut self, request: wit::Request) -> Result<wit::Response, wit::Error> {
        let deadline = self.deadline();
        match self.ctx.http.clone() {
            Some(access) => access.send(request, deadline).await,
            None => Err(wit::Error::NotAllowed(format!(
                "the plugin has no http grant, so {} is not allowed",
                request.url
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unreachable;

    impl HttpClient for Unreachable {
        fn send(&self, request: HttpRequest) -> HttpFuture {
            panic!("the grant check let {} through", request.url)
        }
    }

    fn access(hosts: &[&str], allow_plain_http: bool) -> HttpAccess {
        let grant = HttpGrant {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ca_file: None,
            allow_plain_http,
        };
        HttpAccess::new(&grant, Arc::new(Unreachable), Duration::from_millis(100)).unwrap()
    }

    #[test]
    fn host_entries_parse_with_optional_ports_and_reject_the_rest() {
        assert_eq!(
            parse_host_entry("IdP.Example.com").unwrap(),
            ("idp.example.com".to_owned(), None)
        );
        assert_eq!(
            parse_host_entry("127.0.0.1:8443").unwrap(),
            ("127.0.0.1".to_owned(), Some(8443))
        );
        assert_eq!(
            parse_host_entry("[::1]:8443").unwrap(),
            ("[::1]".to_owned(), Some(8443))
        );
        for bad in [
            "",
            "https://idp.example.com",
            "idp.example.com/jwks",
            "*.example.com",
            "user@host",
            "host:0",
            "host:99999",
            "host:",
            "a b",
        ] {
            assert!(parse_host_entry(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grant_check_matches_host_port_and_scheme() {
        let grant = access(&["idp.example.com", "127.0.0.1:8443"], false);
        assert_eq!(grant.check("https://idp.example.com/jwks"), Ok(()));
        assert_eq!(grant.check("https://IDP.example.com:443/x?y"), Ok(()));
        assert_eq!(grant.check("https://127.0.0.1:8443/"), Ok(()));
        let refused = |url: &str| match grant.check(url) {
            Err(HttpError::NotAllowed(message)) => message,
            other => panic!("{url}: {other:?}"),
        };
        assert!(refused("https://evil.example.com/").contains("evil.example.com:443"));
        // A host without a port in the grant means the default port only.
        assert!(refused("https://idp.example.com:8443/").contains("idp.example.com:8443"));
        assert!(refused("https://127.0.0.1/").contains("127.0.0.1:443"));
        assert!(refused("http://idp.example.com/").contains("allow_plain_http"));
        assert!(matches!(
            grant.check("ftp://idp.example.com/"),
            Err(HttpError::InvalidRequest(_))
        ));
        assert!(matches!(
            grant.check("not a url"),
            Err(HttpError::InvalidRequest(_))
        ));

        let plain = access(&["localhost:8080"], true);
        assert_eq!(plain.check("http://localhost:8080/token"), Ok(()));
        assert!(matches!(
            plain.check("http://localhost/token"),
            Err(HttpError::NotAllowed(_))
        ));
    }

    #[tokio::test]
    async fn refused_and_malformed_requests_never_reach_the_client() {
        let grant = access(&["idp.example.com"], false);
        let request = |method: &str, url: &str, header: (&str, &str)| wit::Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: vec![(header.0.to_owned(), header.1.to_owned())],
            body: Vec::new(),
            timeout_ms: None,
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let sent = grant
            .send(
                request("GET", "https://other.example.com/", ("a", "b")),
                deadline,
            )
            .await;
        assert!(matches!(sent, Err(wit::Error::NotAllowed(m)) if m.contains("other.example.com")));
        let sent = grant
            .send(
                request("GE T", "https://idp.example.com/", ("a", "b")),
                deadline,
            )
            .await;
        assert!(matches!(sent, Err(wit::Error::InvalidRequest(_))));
        let sent = grant
            .send(
                request("GET", "https://idp.example.com/", ("a", "b\r\nc: d")),
                deadline,
            )
            .await;
        assert!(matches!(sent, Err(wit::Error::InvalidRequest(_))));
        // No time left before the hook's deadline: timeout without sending.
        let sent = grant
            .send(
                request("GET", "https://idp.example.com/", ("a", "b")),
                Instant::now(),
            )
            .await;
        assert_eq!(sent, Err(wit::Error::Timeout));
        assert_eq!(grant.requests.load(Ordering::Relaxed), 4);
        assert_eq!(grant.failures.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_deadline_within_bounds() {
        assert_eq!(
            deadline_margin(Duration::from_millis(100)),
            Duration::from_millis(20)
        );
        assert_eq!(
            deadline_margin(Duration::from_millis(20)),
            Duration::from_millis(10)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let error = ReqwestClient::new(Some(&missing)).unwrap_err();
        assert!(error.contains("absent.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let error = ReqwestClient::new(Some(&empty)).unwrap_err();
        assert!(error.contains("no PEM certificate"), "{error}");
        assert!(ReqwestClient::new(None).is_ok());
    }
}
