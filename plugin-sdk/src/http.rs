//! Outgoing HTTP requests through the host (WIT 0.1.1 import `http`), e.g. to fetch an identity
//! provider's keys or call a webhook.
//!
//! ```no_run
//! use std::time::Duration;
//! use wasp_plugin_sdk::http::{Error, Request};
//!
//! fn fetch_keys() -> Result<Vec<u8>, Error> {
//!     let response = Request::get("https://idp.example.com/.well-known/jwks.json")
//!         .header("accept", "application/json")
//!         .timeout(Duration::from_millis(500))
//!         .send()?;
//!     if response.status != 200 {
//!         return Err(Error::Transport(format!("status {}", response.status)));
//!     }
//!     Ok(response.body)
//! }
//! ```
//!
//! The broker sends a request only to the hosts its configuration grants the plugin
//! (`http = { hosts = ["idp.example.com"] }` in the plugin's `[[plugins]]` table); anything else is
//! [`Error::NotAllowed`]. A plugin that calls [`Request::send`] imports `http`, and the broker refuses to
//! load it without such a grant. Redirects are not followed (a 3xx comes back as a response), response
//! bodies are capped at 1 MiB ([`Error::TooLarge`]), and the wait counts against the calling hook's
//! deadline (`limits.call_timeout_ms`, 100 ms by default: raise it for plugins that call out, or fetch
//! in [`Plugin::tick`](crate::Plugin::tick) and keep the result in [`kv`](crate::kv)).
//!
//! Compiled natively (unit tests of plugin logic), [`Request::send`] answers from a stand-in set with
//! [`stand_in`] on the current thread, or with [`Error::NotAllowed`] when none is set.

use std::time::Duration;

/// An outgoing request, built with [`Request::get`], [`Request::post`] or [`Request::new`], sent with
/// [`Request::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method (`"PUT"`, `"DELETE"`...) to an absolute `https://` URL (`http://` only
    /// where the grant allows plain text).
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request with `body` (set its `content-type` with [`header`](Self::header)).
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header (names are case-insensitive; a name may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// How long to wait at most (whole milliseconds, up to `u32::MAX`). The host also stops waiting
    /// shortly before the calling hook's deadline, whichever comes first.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The method, as given.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The timeout set with [`timeout`](Self::timeout), if any.
    pub fn timeout_value(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sends the request through the host and waits for the response, whatever its status.
    pub fn send(&self) -> Result<Response, Error> {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::bindings::wasp::plugin::http as wit;
            let request = wit::Request {
                method: self.method.clone(),
                url: self.url.clone(),
                headers: self.headers.clone(),
                body: self.body.clone(),
                timeout_ms: self
                    .timeout
                    .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
            };
            wit::send(&request)
                .map(|r| Response {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
                .map_err(Error::from)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            native::send(self)
        }
    }
}

/// A response, whatever its status (redirects included: they are not followed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (at most 1 MiB).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
}

/// Why a request got no response (the WIT `http.error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL's host and port are not in the plugin's grant, or its scheme is not allowed.
    NotAllowed(String),
    /// A malformed URL, method or header.
    InvalidRequest(String),
    /// No response within the timeout (the request's, or the hook's deadline).
    Timeout,
    /// Name resolution, connection, TLS or protocol failure.
    Transport(String),
    /// The response body is larger than the host accepts (1 MiB).
    TooLarge,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotAllowed(why) => write!(f, "HTTP request not allowed: {why}"),
            Error::InvalidRequest(why) => write!(f, "invalid HTTP request: {why}"),
            Error::Timeout => f.write_str("HTTP request timed out"),
            Error::Transport(why) => write!(f, "HTTP transport error: {why}"),
            Error::TooLarge => f.write_str("HTTP response body larger than 1 MiB"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::bindings::wasp::plugin::http::Error> for Error {
    fn from(error: crate::bindings::wasp::plugin::http::Error) -> Self {
        use crate::bindings::wasp::plugin::http::Error as Wit;
        match error {
            Wit::NotAllowed(why) => Error::NotAllowed(why),
            Wit::InvalidRequest(why) => Error::InvalidRequest(why),
            Wit::Timeout => Error::Timeout,
            Wit::Transport(why) => Error::Transport(why),
            Wit::TooLarge => Error::TooLarge,
        }
    }
}

/// What answers [`Request::send`] in a native build, on the current thread.
#[cfg(not(target_arch = "wasm32"))]
pub type StandIn = Box<dyn Fn(&Request) -> Result<Response, Error>>;

/// Native builds only: makes `handler` answer every [`Request::send`] on the current thread (each test
/// runs on its own thread), replacing any previous stand-in.
///
/// ```
/// use wasp_plugin_sdk::http::{self, Request, Response};
///
/// http::stand_in(|request| {
///     Ok(Response { status: 200, headers: Vec::new(), body: request.url().as_bytes().to_vec() })
/// });
/// assert_eq!(Request::get("https://a.example/").send().unwrap().body, b"https://a.example/");
/// http::clear_stand_in();
/// assert!(Request::get("https://a.example/").send().is_err());
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub fn stand_in(handler: impl Fn(&Request) -> Result<Response, Error> + 'static) {
    native::STAND_IN.with(|slot| *slot.borrow_mut() = Some(Box::new(handler)));
}

/// Native builds only: removes the current thread's stand-in; [`Request::send`] then fails with
/// [`Error::NotAllowed`].
#[cfg(not(target_arch = "wasm32"))]
pub fn clear_stand_in() {
    native::STAND_IN.with(|slot| *slot.borrow_mut() = None);
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{Error, Request, Response, StandIn};
    use std::cell::RefCell;

    thread_local! {
        pub(super) static STAND_IN: RefCell<Option<StandIn>> = const { RefCell::new(None) };
    }

    pub(super) fn send(request: &Request) -> Result<Response, Error> {
        STAND_IN.with(|slot| match &*slot.borrow() {
            Some(handler) => handler(request),
            None => Err(Error::NotAllowed(
                "no host in native builds (set a stand-in with http::stand_in)".to_owned(),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_every_part() {
        let request = Request::post("https://idp.example/token", "grant_type=x")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .timeout(Duration::from_millis(250));
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), "https://idp.example/token");
        assert_eq!(request.body_bytes(), b"grant_type=x");
        assert_eq!(
            request.headers(),
            [(
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned()
            )]
        );
        assert_eq!(request.timeout_value(), Some(Duration::from_millis(250)));
        let get = Request::get("https://a/");
        assert_eq!((get.method(), get.body_bytes()), ("GET", &b""[..]));
        assert_eq!(get.timeout_value(), None);
    }

    #[test]
    fn response_headers_are_case_insensitive() {
        let response = Response {
            status: 204,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-a".to_owned(), "1".to_owned()),
                ("x-a".to_owned(), "2".to_owned()),
            ],
            body: b"{}".to_vec(),
        };
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.header("X-A"), Some("1"));
        assert_eq!(response.header("missing"), None);
        assert!(response.is_success());
        assert_eq!(response.text(), Ok("{}"));
    }

    #[test]
    fn native_send_without_a_stand_in_is_not_allowed() {
        let error = Request::get("https://idp.example/").send().unwrap_err();
        assert!(matches!(error, Error::NotAllowed(ref why) if why.contains("native")));
        assert!(error.to_string().starts_with("HTTP request not allowed: "));
    }

    #[test]
    fn native_stand_in_answers_and_sees_the_request() {
        stand_in(|request| match request.url() {
            "https://idp.example/slow" => Err(Error::Timeout),
            _ => Ok(Response {
                status: 200,
                headers: Vec::new(),
                body: request.method().as_bytes().to_vec(),
            }),
        });
        assert_eq!(
            Request::new("PUT", "https://idp.example/")
                .send()
                .unwrap()
                .body,
            b"PUT"
        );
        assert_eq!(
            Request::get("https://idp.example/slow").send(),
            Err(Error::Timeout)
        );
        clear_stand_in();
        assert!(matches!(
            Request::get("https://idp.example/").send(),
            Err(Error::NotAllowed(_))
        ));
    }

    #[test]
    fn errors_convert_from_the_wit_variant_and_display() {
        use crate::bindings::wasp::plugin::http::Error as Wit;
        assert_eq!(Error::from(Wit::TooLarge), Error::TooLarge);
        assert_eq!(
            Error::from(Wit::Transport("reset".into())),
            Error::Transport("reset".into())
        );
        assert_eq!(
            Error::from(Wit::InvalidRequest("m".into())).to_string(),
            "invalid HTTP request: m"
        );
        assert_eq!(Error::Timeout.to_string(), "HTTP request timed out");
        let boxed: Box<dyn std::error::Error> = Box::new(Error::TooLarge);
        assert!(boxed.to_string().contains("1 MiB"));
    }
}
