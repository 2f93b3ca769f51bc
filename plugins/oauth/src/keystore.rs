//! The verification keys in use: static keys (inline JWKS, HS256 secret) plus a key set fetched from a
//! JWKS URL or read from a file, refreshed on an interval and, rate-limited, when a token names an
//! unknown `kid`.
//!
//! - A refresh that fails (transport error, non-200 status, a document with no usable key) keeps the
//!   last good keys.
//! - Unknown `kid`: at most one refetch per `min_refetch_interval` (default 60 s), shared by every
//!   instance of the plugin through the kv store, so that a client sending random `kid`s cannot make the
//!   broker hammer the identity provider (refetch storms: mediamtx#4451).
//! - The fetched document is shared between the plugin's warm instances through the kv store: an
//!   instance adopts a newer document another instance fetched instead of fetching it again.
//!
//! I/O goes through two small traits, [`Fetcher`] and [`Store`], implemented by the SDK glue with the
//! host's `http` and `kv` imports and natively by test doubles.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::jwk::Alg;
use crate::jwk::{Key, KeySet};
use crate::jwt::{self, Claims, JwtError, Validation};

/// Fetches a document: `(status, body)` or a transport error.
pub trait Fetcher {
    fn get(&self, url: &str) -> Result<(u16, Vec<u8>), String>;
}

/// A key-value store shared by the plugin's instances (the host's `kv`).
pub trait Store {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]);
    fn delete(&self, key: &str);
}

/// An in-memory [`Store`]: the instance-local stand-in for tests.
#[derive(Debug, Default)]
pub struct MemoryStore(pub RefCell<HashMap<String, Vec<u8>>>);

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) {
        self.0.borrow_mut().insert(key.to_owned(), value.to_vec());
    }
    fn delete(&self, key: &str) {
        self.0.borrow_mut().remove(key);
    }
}

/// When to fetch the remote key set (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Age after which a fetched key set is fetched again.
    pub refresh_interval_ms: u64,
    /// Least time between two fetches that were not due to age: unknown `kid`s, and retries after a
    /// failure.
    pub min_refetch_interval_ms: u64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_interval_ms: 300_000,
            min_refetch_interval_ms: 60_000,
        }
    }
}

/// What the kv store holds per remote key set, shared by the plugin's instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Shared {
    /// When the last good document was fetched, and the document (JSON text).
    fetched_at: u64,
    #[serde(default)]
    body: String,
    /// When the last fetch was attempted (successful or not).
    attempted_at: u64,
}

/// What happened to the remote key set during a call; the glue logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Keys fetched (`skipped` keys of the document were not usable).
    Fetched { keys: usize, skipped: Vec<String> },
    /// Adopted a key set another instance fetched.
    Adopted,
    /// The fetch failed: the previous keys stay in use.
    FetchFailed(String),
    /// A token named an unknown `kid` and a refetch was not allowed yet.
    RefetchRateLimited,
}

/// The key store of one plugin instance.
#[derive(Debug)]
pub struct KeyStore {
    static_keys: Vec<Key>,
    remote: Option<String>,
    policy: RefreshPolicy,
    kv_key: String,
    /// Static keys plus the remote keys in use.
    keys: KeySet,
    /// Fetch time of the remote keys in use (0: none yet).
    fetched_at: u64,
    /// Fetch attempt this instance knows of (its own or another instance's, through kv).
    attempted_at: u64,
    /// A periodic tick refreshes the keys: verifications then fetch only when no key set was ever
    /// obtained or for an unknown `kid`, and otherwise only adopt what the tick stored in kv.
    background: bool,
    /// Events since the glue last drained them.
    pub events: Vec<Event>,
}

impl KeyStore {
    /// A store over `static_keys` and, when given, the key set at `remote` (a URL, or a file path for
    /// a [`Fetcher`] that reads files). Nothing is fetched until [`KeyStore::refresh_if_due`] or a
    /// verification needs it.
    pub fn new(static_keys: Vec<Key>, remote: Option<String>, policy: RefreshPolicy) -> Self {
        let kv_key = format!("jwks:{}", remote.as_deref().unwrap_or_default());
        Self {
            keys: KeySet {
                keys: static_keys.clone(),
                skipped: Vec::new(),
            },
            static_keys,
            remote,
            policy,
            kv_key,
            fetched_at: 0,
            attempted_at: 0,
            background: false,
            events: Vec::new(),
        }
    }

    /// Declares that [`KeyStore::refresh_if_due`] is called periodically (the plugin's tick), so that
    /// no fetch happens on a client's path when a key set is cached.
    pub fn set_background_refresh(&mut self, background: bool) {
        self.background = background;
    }

    /// The keys in use.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Whether the remote key set was ever obtained (always true without a remote).
    pub fn has_remote_keys(&self) -> bool {
        self.remote.is_none() || self.fetched_at > 0
    }

    fn shared(&self, store: &dyn Store) -> Shared {
        store
            .get(&self.kv_key)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn install(&mut self, set: KeySet, fetched_at: u64) {
        let mut keys = self.static_keys.clone();
        keys.extend(set.keys);
        self.keys = KeySet {
            keys,
            skipped: set.skipped,
        };
        self.fetched_at = fetched_at;
    }

    /// Adopts the shared document when it is newer than the keys in use.
    fn adopt_shared(&mut self, shared: &Shared) {
        self.attempted_at = self.attempted_at.max(shared.attempted_at);
        if shared.fetched_at > self.fetched_at
            && let Ok(set) = KeySet::parse_jwks(shared.body.as_bytes())
        {
            self.install(set, shared.fetched_at);
            self.events.push(Event::Adopted);
        }
    }

    /// Fetches the remote key set now, records the attempt (and the document) in `store`.
    fn fetch(&mut self, now: u64, fetcher: &dyn Fetcher, store: &dyn Store) -> bool {
        let Some(url) = self.remote.clone() else {
            return false;
        };
        let mut shared = self.shared(store);
        self.attempted_at = now;
        shared.attempted_at = now;
        let result = fetcher.get(&url).and_then(|(status, body)| {
            if status != 200 {
                return Err(format!("status {status}"));
            }
            let set = KeySet::parse_jwks(&body)?;
            let text = String::from_utf8(body).map_err(|_| "JWKS is not UTF-8".to_owned())?;
            Ok((set, text))
        });
        let ok = match result {
            Ok((set, text)) => {
                self.events.push(Event::Fetched {
                    keys: set.keys.len(),
                    skipped: set.skipped.clone(),
                });
                self.install(set, now);
                shared.fetched_at = now;
                shared.body = text;
                true
            }
            Err(why) => {
                self.events.push(Event::FetchFailed(why));
                false
            }
        };
        if let Ok(bytes) = serde_json::to_vec(&shared) {
            store.set(&self.kv_key, &bytes);
        }
        ok
    }

    /// Whether the last attempt (by any instance) is old enough for a fetch that is not due to age.
    fn refetch_allowed(&self, now: u64) -> bool {
        self.attempted_at == 0
            || now
                >= self
                    .attempted_at
                    .saturating_add(self.policy.min_refetch_interval_ms)
    }

    /// Refreshes the remote key set when it is older than the refresh interval (or missing), taking a
    /// newer document from `store` first. After a failure, tries again only after
    /// `min_refetch_interval`. For the periodic `tick`, and lazily before a verification.
    pub fn refresh_if_due(&mut self, now: u64, fetcher: &dyn Fetcher, store: &dyn Store) {
        if self.remote.is_none() || !self.stale(now) {
            return;
        }
        let shared = self.shared(store);
        self.adopt_shared(&shared);
        if self.stale(now) && self.refetch_allowed(now) {
            self.fetch(now, fetcher, store);
        }
    }

    fn stale(&self, now: u64) -> bool {
        self.fetched_at == 0
            || now
                >= self
                    .fetched_at
                    .saturating_add(self.policy.refresh_interval_ms)
    }

    /// Parses `token`, verifies it with the keys in use, validates its claims at `now` (milliseconds).
    /// A `kid` no key has makes one refetch, when the rate limit allows it, then a second try.
    pub fn verify(
        &mut self,
        token: &str,
        allowed: &[Alg],
        validation: &Validation,
        now: u64,
        fetcher: &dyn Fetcher,
        store: &dyn Store,
    ) -> Result<Claims, JwtError> {
        let parsed = jwt::parse(token)?;
        if !allowed.is_empty() && !allowed.contains(&parsed.header.alg) {
            return Err(JwtError::AlgNotAllowed(parsed.header.alg.name().into()));
        }
        if self.background && self.fetched_at > 0 {
            if self.remote.is_some() && self.stale(now) {
                let shared = self.shared(store);
                self.adopt_shared(&shared);
            }
        } else {
            self.refresh_if_due(now, fetcher, store);
        }
        let claims = match parsed.verify(&self.keys) {
            Err(JwtError::UnknownKid(kid)) if self.remote.is_some() => {
                // Another instance may have fetched the new keys already.
                let shared = self.shared(store);
                self.adopt_shared(&shared);
                if !self.keys.has_kid(&kid) {
                    if self.refetch_allowed(now) {
                        self.fetch(now, fetcher, store);
                    } else {
                        self.events.push(Event::RefetchRateLimited);
                    }
                }
                parsed.verify(&self.keys)?
            }
            other => other?,
        };
        let now_secs = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        validation.check(&claims, now_secs)?;
        Ok(claims)
    }
}
