//! Opaque tokens: OAuth 2.0 Token Introspection (RFC 7662).
//!
//! The token is POSTed as `application/x-www-form-urlencoded` `token=...&token_type_hint=access_token`
//! to the configured endpoint, with the client credentials in HTTP Basic (RFC 6749 2.3.1: both
//! form-urlencoded first). The response is a JSON object whose `active` must be `true`; its members
//! (`exp`, `sub`, `client_id`, `scope`, `iss`, `aud`, ACL claims...) are then treated like JWT claims.
//!
//! Results are cached in the kv store, shared by the plugin's instances, keyed by a SHA-256 of the
//! token (never the token itself): an active token until its `exp` or the cache TTL, whichever is
//! first; an inactive token for the TTL; a failure (transport error, unexpected status, unreadable
//! body) briefly. The cache has a fixed number of slots (a direct-mapped cache: a token's slot is
//! chosen by its hash, a newer entry replaces an older one), so random tokens cannot grow the kv store
//! past its quota.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use crate::jwt::Claims;
use crate::keystore::Store;

/// Sends a POST with a form body: `(status, body)` or a transport error.
pub trait FormPoster {
    fn post_form(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, Vec<u8>), String>;
}

/// The introspection endpoint and the cache policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Longest reuse of an answer, in milliseconds.
    pub cache_ms: u64,
    /// Reuse of a failure, in milliseconds.
    pub failure_cache_ms: u64,
    /// Number of kv cache slots.
    pub cache_slots: u32,
}

/// What introspection says about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `active: true`, with the response's members as claims.
    Active(Claims),
    /// `active: false` (or missing): revoked, expired, unknown...
    Inactive,
    /// No usable answer; the message is for the log.
    Failed(String),
}

#[derive(Serialize, Deserialize)]
struct Entry {
    /// Hex SHA-256 of the token.
    token: String,
    until: u64,
    /// "active", "inactive" or "failed".
    state: String,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    #[serde(default)]
    why: String,
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 appendix B).
pub fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

impl Introspection {
    /// The `Authorization` header value: HTTP Basic over the form-urlencoded credentials.
    pub fn authorization(&self) -> String {
        let credentials = format!(
            "{}:{}",
            form_urlencode(&self.client_id),
            form_urlencode(&self.client_secret)
        );
        format!("Basic {}", STANDARD.encode(credentials))
    }

    fn slot(&self, digest: &[u8]) -> String {
        let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        format!("introspect:{}", n % self.cache_slots.max(1))
    }

    /// The answer for `token` at `now` (milliseconds): from the cache, or asked to the endpoint (and
    /// cached).
    pub fn introspect(
        &self,
        token: &str,
        now: u64,
        poster: &dyn FormPoster,
        store: &dyn Store,
    ) -> Answer {
        let digest = sha2::Sha256::digest(token.as_bytes());
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let slot = self.slot(&digest);
        if let Some(entry) = store
            .get(&slot)
            .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
            && entry.token == hash
            && now < entry.until
        {
            return match entry.state.as_str() {
                "active" => Answer::Active(Claims(entry.claims)),
                "inactive" => Answer::Inactive,
                _ => Answer::Failed(format!("{} (cached)", entry.why)),
            };
        }
        let answer = self.ask(token, poster);
        let (state, until, claims, why) = match &answer {
            Answer::Active(claims) => {
                let mut until = now.saturating_add(self.cache_ms);
                if let Ok(Some(exp)) = claims.time("exp") {
                    until = until.min(u64::try_from(exp).unwrap_or(0).saturating_mul(1000));
                }
                ("active", until, claims.0.clone(), String::new())
            }
            Answer::Inactive => (
                "inactive",
                now.saturating_add(self.cache_ms),
                Default::default(),
                String::new(),
            ),
            Answer::Failed(why) => (
                "failed",
                now.saturating_add(self.failure_cache_ms),
                Default::default(),
                why.clone(),
            ),
        };
        if until > now {
            let entry = Entry {
                token: hash,
                until,
                state: state.to_owned(),
                claims,
                why,
            };
            if let Ok(bytes) = serde_json::to_vec(&entry) {
                store.set(&slot, &bytes);
            }
        }
        answer
    }

    fn ask(&self, token: &str, poster: &dyn FormPoster) -> Answer {
        let body = format!(
            "token={}&token_type_hint=access_token",
            form_urlencode(token)
        );
        let authorization = self.authorization();
        let headers = [
            ("authorization", authorization.as_str()),
            ("accept", "application/json"),
        ];
        match poster.post_form(&self.url, &headers, &body) {
            Err(why) => Answer::Failed(format!("introspection request failed: {why}")),
            Ok((200, body)) => parse_response(&body),
            Ok((status, _)) => Answer::Failed(format!("introspection answered status {status}")),
        }
    }
}

/// Reads an introspection response body.
pub fn parse_response(body: &[u8]) -> Answer {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("active") {
            Some(Value::Bool(true)) => Answer::Active(Claims(map)),
            _ => Answer::Inactive,
        },
        _ => Answer::Failed("introspection response is not a JSON object".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::MemoryStore;
    use std::cell::RefCell;

    type Reply = Result<(u16, Vec<u8>), String>;
    /// URL, headers, body.
    type Sent = (String, Vec<(String, String)>, String);

    /// Answers POSTs from a script and records them.
    struct Scripted {
        answers: RefCell<Vec<Reply>>,
        requests: RefCell<Vec<Sent>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(u16, &str), &str>>) -> Self {
            Self {
                answers: RefCell::new(
                    answers
                        .into_iter()
                        .rev()
                        .map(|a| {
                            a.map(|(s, b)| (s, b.as_bytes().to_vec()))
                                .map_err(str::to_owned)
                        })
                        .collect(),
                ),
                requests: RefCell::default(),
            }
        }
        fn calls(&self) -> usize {
            self.requests.borrow().len()
        }
    }

    impl FormPoster for Scripted {
        fn post_form(
            &self,
            url: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> Result<(u16, Vec<u8>), String> {
            self.requests.borrow_mut().push((
                url.to_owned(),
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body.to_owned(),
            ));
            self.answers
                .borrow_mut()
                .pop()
                .unwrap_or(Err("no scripted answer".into()))
        }
    }

    fn endpoint() -> Introspection {
        Introspection {
            url: "https://idp.example/introspect".into(),
            client_id: "broker id".into(),
            client_secret: "s3cr:t&".into(),
            cache_ms: 300_000,
            failure_cache_ms: 10_000,
            cache_slots: 64,
        }
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn request_is_a_form_post_with_basic_credentials() {
        let poster = Scripted::new(vec![Ok((200, r#"{"active": true, "sub": "dev1"}"#))]);
        let store = MemoryStore::default();
        let answer = endpoint().introspect("tok en+/=", NOW, &poster, &store);
        let Answer::Active(claims) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(claims.str("sub"), Some("dev1"));
        let requests = poster.requests.borrow();
        let (url, headers, body) = &requests[0];
        assert_eq!(url, "https://idp.example/introspect");
        assert_eq!(body, "token=tok+en%2B%2F%3D&token_type_hint=access_token");
        // base64("broker+id:s3cr%3At%26")
        assert_eq!(
            headers[0],
            (
                "authorization".to_owned(),
                format!("Basic {}", STANDARD.encode("broker+id:s3cr%3At%26"))
            )
        );
    }

    #[test]
    fn active_answers_are_cached_until_exp_or_ttl() {
        let exp = NOW / 1000 + 60;
        let poster = Scripted::new(vec![
            Ok((200, &format!(r#"{{"active": true, "exp": {exp}}}"#))),
            Ok((200, r#"{"active": false}"#)),
        ]);
        let store = MemoryStore::default();
        let e = endpoint();
        assert!(matches!(
            e.introspect("t", NOW, &poster, &store),
            Answer::Active(_)
        ));
        assert!(matches!(
            e.introspect("t", NOW + 59_000, &poster, &store),
            Answer::Active(_)
        ));
        assert_eq!(poster.calls(), 1);
        // At exp the cached answer is gone: asked again.
        assert_eq!(
            e.introspect("t", NOW + 60_000, &poster, &store),
            Answer::Inactive
        );
        assert_eq!(poster.calls(), 2);
        assert_eq!(
            e.introspect("t", NOW + 61_000, &poster, &store),
            Answer::Inactive
        );
        assert_eq!(poster.calls(), 2);
    }

    #[test]
    fn failures_are_cached_briefly_and_tokens_do_not_share_entries() {
        let poster = Scripted::new(vec![
            Ok((503, "")),
            Err("connection refused"),
            Ok((200, "not json")),
            Ok((200, r#"{"active": true}"#)),
        ]);
        let store = MemoryStore::default();
        let e = endpoint();
        let failed = |a: Answer| matches!(a, Answer::Failed(_));
        assert!(failed(e.introspect("t", NOW, &poster, &store)));
        assert!(failed(e.introspect("t", NOW + 9_999, &poster, &store)));
        assert_eq!(poster.calls(), 1);
        assert!(failed(e.introspect("t", NOW + 10_000, &poster, &store)));
        assert!(failed(e.introspect("u", NOW + 10_000, &poster, &store)));
        assert_eq!(poster.calls(), 3);
        assert!(matches!(
            e.introspect("t", NOW + 20_000, &poster, &store),
            Answer::Active(_)
        ));
        // Bounded: at most `cache_slots` kv keys, whatever the number of tokens.
        for i in 0..500 {
            let _ = e.introspect(&format!("x{i}"), NOW, &Scripted::new(vec![]), &store);
        }
        assert!(store.0.borrow().len() <= 64);
        assert!(
            store
                .0
                .borrow()
                .values()
                .all(|v| !String::from_utf8_lossy(v).contains("x1"))
        );
    }
}
