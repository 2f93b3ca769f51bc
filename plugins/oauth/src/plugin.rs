//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`Authenticator`] and [`acl`].
//!
//! - `authenticate`: the token as the password (any MQTT version), or MQTT 5 enhanced authentication
//!   with the method `auth_method` (default `OAUTH2-JWT`) and the token as Authentication Data, on
//!   CONNECT and on re-authentication. Time from the host clock, the shared caches in the host's kv.
//! - `authorize_publish` / `authorize_subscribe` (declared only with an `[acl]` section): from the
//!   session attributes `oauth:publish` / `oauth:subscribe` set at authentication; sessions without
//!   them (authenticated by another plugin) are deferred.
//! - `tick` (feature `http`): refreshes the key set off the clients' paths.
//!
//! Outgoing HTTP (JWKS URL, introspection) uses the SDK's `http` module, behind the cargo feature
//! `http` (default); built without it, such configurations are refused at init. `jwks_file` is read with `std::fs`
//! from a directory the broker grants to the plugin.

use std::cell::RefCell;

use wasp_plugin_sdk::{
    AuthRequest, AuthVerdict, AuthzVerdict, Hooks, Interests, Plugin, Qos, Session,
    SubscribeVerdict, clock, kv, log, metrics, reason,
};

use crate::acl::{self, ATTR_PUBLISH, ATTR_SUBSCRIBE};
use crate::config::{AclConfig, KeySource};
use crate::keystore::Event;
use crate::{Authenticator, Config, FormPoster, Io, Outcome, Request, Store};

/// The host's kv store.
struct HostKv;

impl Store for HostKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }
    fn set(&self, key: &str, value: &[u8]) {
        kv::set(key, value);
    }
    fn delete(&self, key: &str) {
        kv::delete(key);
    }
}

/// The host's `http` import (feature `http`).
struct HostHttp {
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    timeout_ms: u32,
}

#[cfg(feature = "http")]
impl HostHttp {
    fn send(&self, mut request: wasp_plugin_sdk::http::Request) -> Result<(u16, Vec<u8>), String> {
        // Once: introspection gives its own headers, `accept` among them.
        if !request
            .headers()
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "application/json");
        }
        request
            .timeout(std::time::Duration::from_millis(u64::from(self.timeout_ms)))
            .send()
            .map(|response| (response.status, response.body))
            .map_err(|e| e.to_string())
    }
}

impl crate::Fetcher for HostHttp {
    #[cfg(feature = "http")]
    fn get(&self, url: &str) -> Result<(u16, Vec<u8>), String> {
        self.send(wasp_plugin_sdk::http::Request::get(url))
    }

    #[cfg(not(feature = "http"))]
    fn get(&self, _url: &str) -> Result<(u16, Vec<u8>), String> {
        Err(NO_HTTP.to_owned())
    }
}

impl FormPoster for HostHttp {
    #[cfg(feature = "http")]
    fn post_form(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = wasp_plugin_sdk::http::Request::post(url, body.as_bytes())
            .header("content-type", "application/x-www-form-urlencoded");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    #[cfg(not(feature = "http"))]
    fn post_form(&self, _: &str, _: &[(&str, &str)], _: &str) -> Result<(u16, Vec<u8>), String> {
        Err(NO_HTTP.to_owned())
    }
}

#[cfg(not(feature = "http"))]
const NO_HTTP: &str = "built without the `http` feature";

/// The reason string of every authorization refusal.
const REFUSED: &str = "not authorized";

/// Authenticates clients with OAuth 2.0 bearer tokens; authorizes them from their token's claims.
pub struct OAuthPlugin {
    auth: RefCell<Authenticator>,
    acl: Option<AclConfig>,
    http: HostHttp,
}

impl OAuthPlugin {
    fn io(&self) -> Io<'_> {
        Io {
            http: &self.http,
            post: &self.http,
            store: &HostKv,
        }
    }

    /// Logs what happened to the key set since the last call.
    fn log_events(auth: &mut Authenticator) {
        for event in auth.keys.events.drain(..) {
            match event {
                Event::Fetched { keys, skipped } => {
                    metrics::counter_add("jwks.fetched", 1);
                    log::info("JWKS fetched", &[("keys", &keys.to_string())]);
                    for why in skipped {
                        log::warn("JWKS key skipped", &[("why", &why)]);
                    }
                }
                Event::Adopted => log::debug("JWKS taken from another instance", &[]),
                Event::FetchFailed(why) => {
                    metrics::counter_add("jwks.fetch_failed", 1);
                    log::warn(
                        "JWKS fetch failed, keeping the previous keys",
                        &[("why", &why)],
                    );
                }
                Event::RefetchRateLimited => {
                    metrics::counter_add("jwks.refetch_rate_limited", 1);
                }
            }
        }
    }

    fn filters(session: &Session, key: &str) -> Option<Vec<String>> {
        let value = session
            .attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)?;
        // An unreadable value grants nothing.
        Some(acl::decode(value).unwrap_or_default())
    }

    fn cache_secs(&self) -> u32 {
        self.acl.as_ref().map_or(0, |acl| acl.cache_secs)
    }
}

impl Plugin for OAuthPlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let config: Config = config.parse()?;
        let settings = config.validate()?;
        #[cfg(not(feature = "http"))]
        if matches!(settings.remote, Some(KeySource::Url(_))) || settings.introspection.is_some() {
            return Err(format!(
                "plugin config: jwks_url and [introspection] need outgoing HTTP: this plugin was {NO_HTTP}"
            ));
        }
        for why in &settings.static_skipped {
            log::warn("inline JWKS key skipped", &[("why", why)]);
        }
        let http = HostHttp {
            timeout_ms: settings.http_timeout_ms,
        };
        let acl = settings.acl.clone();
        let file = matches!(settings.remote, Some(KeySource::File(_)));
        let mut auth = Authenticator::new(settings);
        // With a tick to refresh them, keys are never fetched on a client's path once cached.
        auth.keys.set_background_refresh(cfg!(feature = "http"));
        let plugin = Self {
            auth: RefCell::new(auth),
            acl,
            http,
        };
        if file {
            // A local file: read now, and refuse a configuration whose file cannot be used.
            let mut auth = plugin.auth.borrow_mut();
            auth.refresh(clock::now_millis(), &plugin.io());
            let events: Vec<Event> = auth.keys.events.clone();
            Self::log_events(&mut auth);
            if let Some(Event::FetchFailed(why)) = events.last() {
                return Err(format!(
                    "plugin config: jwks_file: {why} (is its directory granted to the plugin?)"
                ));
            }
        }
        Ok(plugin)
    }

    fn interests(&self) -> Interests {
        let mut hooks = Hooks::AUTHENTICATE;
        if let Some(acl) = &self.acl {
            if acl.publish_claim.is_some() {
                hooks |= Hooks::AUTHORIZE_PUBLISH;
            }
            if acl.subscribe_claim.is_some() {
                hooks |= Hooks::AUTHORIZE_SUBSCRIBE;
            }
        }
        Interests::hooks(hooks)
    }

    fn authenticate(&self, request: &AuthRequest) -> AuthVerdict {
        let client = &request.client;
        let req = Request {
            client_id: &client.client_id,
            username: client.username.as_deref(),
            password: request.password.as_deref(),
            auth_method: request.auth_method.as_deref(),
            auth_data: request.auth_data.as_deref(),
            reauthentication: request.reauthentication,
        };
        let mut auth = self.auth.borrow_mut();
        let outcome = auth.authenticate(&req, clock::now_millis(), &self.io());
        Self::log_events(&mut auth);
        match outcome {
            Outcome::Allow(attributes) => {
                metrics::counter_add("auth.allowed", 1);
                AuthVerdict::Allow(attributes)
            }
            Outcome::Deny { code, reason, log } => {
                metrics::counter_add("auth.denied", 1);
                log::info(
                    "authentication refused",
                    &[("client_id", &client.client_id), ("why", &log)],
                );
                AuthVerdict::deny(code, reason)
            }
            Outcome::Defer => AuthVerdict::Defer,
        }
    }

    fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        let Some(filters) = Self::filters(session, ATTR_PUBLISH) else {
            return AuthzVerdict::defer();
        };
        let verdict = if acl::may_publish(&filters, topic) {
            AuthzVerdict::allow()
        } else {
            AuthzVerdict::deny(reason::NOT_AUTHORIZED, REFUSED)
        };
        verdict.cache_for(self.cache_secs())
    }

    fn authorize_subscribe(&self, session: &Session, filter: &str, qos: Qos) -> SubscribeVerdict {
        let Some(filters) = Self::filters(session, ATTR_SUBSCRIBE) else {
            return SubscribeVerdict::defer();
        };
        let verdict = if acl::may_subscribe(&filters, filter) {
            SubscribeVerdict::allow(qos)
        } else {
            SubscribeVerdict::deny(reason::NOT_AUTHORIZED, REFUSED)
        };
        verdict.cache_for(self.cache_secs())
    }

    #[cfg(feature = "http")]
    fn tick(&self) -> u32 {
        let mut auth = self.auth.borrow_mut();
        if auth.settings.remote.is_none() {
            return 0;
        }
        auth.refresh(clock::now_millis(), &self.io());
        Self::log_events(&mut auth);
        // Often enough to retry a failure after min_refetch_interval, and to refresh on time.
        let policy = auth.settings.policy;
        let secs = policy
            .min_refetch_interval_ms
            .min(policy.refresh_interval_ms)
            / 1000;
        u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
    }
}
