//! [`ScriptedHttp`]: the harness's HTTP client. The test says what each URL answers; no request
//! leaves the process. Requests still go through the host's `http` import first, so the plugin's grant
//! (see [`HarnessBuilder::http_grant`](crate::HarnessBuilder::http_grant)), the request checks and the
//! deadline apply exactly as in the broker.

use std::collections::VecDeque;

use parking_lot::Mutex;
use wasp_plugin_host::{HttpClient, HttpFuture};
pub use wasp_plugin_host::{HttpError, HttpRequest, HttpResponse};

/// What one URL answers: each queued answer once, in order, then the last one again and again.
struct Script {
    method: Option<String>,
    url: String,
    answers: VecDeque<Answer>,
}

#[derive(Clone)]
enum Answer {
    Ready(Result<HttpResponse, HttpError>),
    /// Never answers: the host's timeout (the request's, or the hook's deadline) ends the wait.
    Hang,
}

/// Scripted answers by method and URL, and a record of every request that reached it.
///
/// ```no_run
/// use wasp_plugin_harness::{Harness, HttpError};
///
/// fn script(harness: &Harness) {
///     harness
///         .http()
///         .respond("GET", "https://idp.test/jwks", 200, r#"{"keys":[]}"#)
///         .fail("https://idp.test/token", HttpError::Timeout);
///     // ... call the plugin ...
///     assert_eq!(harness.http().requests()[0].url, "https://idp.test/jwks");
/// }
/// ```
///
/// Matching: the exact URL, and the method (case-insensitively) unless the answer was given for any
/// method ([`fail`](Self::fail), [`hang`](Self::hang)). Answers given for the same method and URL are
/// used in order; the last one stays (sticky). A request nothing matches gets
/// `HttpError::Transport("no scripted response for GET <url>")`.
#[derive(Default)]
pub struct ScriptedHttp {
    scripts: Mutex<Vec<Script>>,
    requests: Mutex<Vec<HttpRequest>>,
}

impl ScriptedHttp {
    /// Answers `method url` with `status` and `body` (no headers).
    pub fn respond(&self, method: &str, url: &str, status: u16, body: impl Into<Vec<u8>>) -> &Self {
        self.respond_with(
            method,
            url,
            HttpResponse {
                status,
                headers: Vec::new(),
                body: body.into(),
            },
        )
    }

    /// Answers `method url` with a whole response (headers: lower-case names, as the host gives them).
    pub fn respond_with(&self, method: &str, url: &str, response: HttpResponse) -> &Self {
        self.push(Some(method), url, Answer::Ready(Ok(response)))
    }

    /// Fails every request to `url`, whatever its method, with `error` (e.g. [`HttpError::Timeout`] or
    /// `HttpError::Transport("connection refused".into())`).
    pub fn fail(&self, url: &str, error: HttpError) -> &Self {
        self.push(None, url, Answer::Ready(Err(error)))
    }

    /// Never answers requests to `url`: the plugin gets `error::timeout` when its request's timeout or
    /// the hook's deadline (less a margin) comes, as with a server that hangs.
    pub fn hang(&self, url: &str) -> &Self {
        self.push(None, url, Answer::Hang)
    }

    /// Every request that passed the grant check, in order (with the timeout the host gave it).
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().clone()
    }

    /// Forgets every scripted answer and recorded request.
    pub fn reset(&self) {
        self.scripts.lock().clear();
        self.requests.lock().clear();
    }

    fn push(&self, method: Option<&str>, url: &str, answer: Answer) -> &Self {
        let method = method.map(str::to_ascii_uppercase);
        let mut scripts = self.scripts.lock();
        match scripts
            .iter_mut()
            .find(|s| s.method == method && s.url == url)
        {
            Some(script) => script.answers.push_back(answer),
            None => scripts.push(Script {
                method,
                url: url.to_owned(),
                answers: VecDeque::from([answer]),
            }),
        }
        self
    }

    fn answer(&self, request: &HttpRequest) -> Answer {
        let mut scripts = self.scripts.lock();
        let matching = |script: &&mut Script| {
            script.url == request.url
                && script
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&request.method))
        };
        // A method-specific script wins over one for any method.
        let index = scripts
            .iter_mut()
            .position(|s| s.method.is_some() && matching(&s))
            .or_else(|| scripts.iter_mut().position(|s| matching(&s)));
        match index {
            Some(index) => {
                let answers = &mut scripts[index].answers;
                if answers.len() > 1 {
                    answers.pop_front().expect("more than one answer")
                } else {
                    answers.front().cloned().expect("a script has an answer")
                }
            }
            None => Answer::Ready(Err(HttpError::Transport(format!(
                "no scripted response for {} {}",
                request.method, request.url
            )))),
        }
    }
}

impl HttpClient for ScriptedHttp {
    fn send(&self, request: HttpRequest) -> HttpFuture {
        let answer = self.answer(&request);
        self.requests.lock().push(request);
        match answer {
            Answer::Ready(result) => Box::pin(std::future::ready(result)),
            Answer::Hang => Box::pin(std::future::pending()),
        }
    }
}
