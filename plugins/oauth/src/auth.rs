//! The authentication decision: where the token is, how it is checked (JWT or introspection), the
//! claims binding, and the session attributes of an accepted client.
//!
//! The token comes either as the CONNECT password (any MQTT version; the user name is ignored unless
//! `binding.username_claim` binds it), or through MQTT 5 enhanced authentication: Authentication Method
//! [`DEFAULT_AUTH_METHOD`](crate::DEFAULT_AUTH_METHOD) (configurable) with the token as Authentication
//! Data, in CONNECT and in re-authentication (AUTH 0x19), which replaces the session's attributes.

use serde_json::Value;

use crate::acl::{self, ATTR_PUBLISH, ATTR_SUBSCRIBE};
use crate::config::{KeySource, NonTokenPasswords, Settings};
use crate::introspect::{Answer, FormPoster};
use crate::jwt::{self, Claims, JwtError};
use crate::keystore::{Fetcher, KeyStore, Store};

/// Session attribute read by the broker: when the credentials end, in milliseconds since the Unix
/// epoch (the token's `exp` plus the leeway). The broker disconnects the client then (MQTT 5: 0xA0)
/// unless it re-authenticated.
pub const ATTR_EXPIRES_AT: &str = "wasp:expires-at";
/// Session attribute: the token's `sub`.
pub const ATTR_SUBJECT: &str = "oauth:subject";
/// Prefix of the attributes copied from the claims listed in `attributes`.
pub const ATTR_CLAIM_PREFIX: &str = "oauth:claim:";

/// MQTT 5 reason codes used.
pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
pub const NOT_AUTHORIZED: u8 = 0x87;
pub const SERVER_UNAVAILABLE: u8 = 0x88;
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// A CONNECT or re-authentication, as the decision needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub auth_method: Option<&'a str>,
    pub auth_data: Option<&'a [u8]>,
    pub reauthentication: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow(Vec<(String, String)>),
    /// `reason` goes to MQTT 5 clients, `log` to the broker's log only.
    Deny {
        code: u8,
        reason: &'static str,
        log: String,
    },
    Defer,
}

fn deny(code: u8, reason: &'static str, log: impl Into<String>) -> Outcome {
    Outcome::Deny {
        code,
        reason,
        log: log.into(),
    }
}

/// Reads files as a [`Fetcher`] (status 200), for `jwks_file`.
pub struct FileFetcher;

impl Fetcher for FileFetcher {
    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        std::fs::read(path)
            .map(|body| (200, body))
            .map_err(|e| format!("cannot read {path}: {e}"))
    }
}

/// The authenticator of one plugin instance.
#[derive(Debug)]
pub struct Authenticator {
    pub settings: Settings,
    pub keys: KeyStore,
}

/// The I/O the decision may need.
pub struct Io<'a> {
    pub http: &'a dyn Fetcher,
    pub post: &'a dyn FormPoster,
    pub store: &'a dyn Store,
}

impl Authenticator {
    pub fn new(settings: Settings) -> Self {
        let remote = settings.remote.as_ref().map(|source| match source {
            KeySource::Url(url) => url.clone(),
            KeySource::File(path) => path.clone(),
        });
        let keys = KeyStore::new(settings.static_keys.clone(), remote, settings.policy);
        Self { settings, keys }
    }

    /// The fetcher of the remote key set: files are read directly, URLs go through `http`.
    fn key_fetcher<'a>(&self, http: &'a dyn Fetcher) -> &'a dyn Fetcher {
        match self.settings.remote {
            Some(KeySource::File(_)) => &FileFetcher,
            _ => http,
        }
    }

    /// Refreshes the key set if it is due (for a periodic tick, and at init).
    pub fn refresh(&mut self, now_ms: u64, io: &Io<'_>) {
        let fetcher = self.key_fetcher(io.http);
        self.keys.refresh_if_due(now_ms, fetcher, io.store);
    }

    /// Decides on `request` at `now_ms` (milliseconds since the Unix epoch).
    pub fn authenticate(&mut self, request: &Request<'_>, now_ms: u64, io: &Io<'_>) -> Outcome {
        // Where is the token?
        let (token, via_password) = match request.auth_method {
            Some(method) if method == self.settings.auth_method => match request.auth_data {
                Some(data) if !data.is_empty() => (data, false),
                _ => {
                    return deny(
                        NOT_AUTHORIZED,
                        "the authentication data must hold the token",
                        "enhanced authentication without a token",
                    );
                }
            },
            // Another method: another plugin's business.
            Some(_) => return Outcome::Defer,
            None => match request.password {
                Some(password) if !password.is_empty() => (password, true),
                _ => return Outcome::Defer,
            },
        };
        let refused_code = if via_password {
            BAD_USERNAME_OR_PASSWORD
        } else {
            NOT_AUTHORIZED
        };
        let Ok(token) = std::str::from_utf8(token) else {
            return deny(refused_code, "invalid token", "token is not UTF-8");
        };
        let token = token.trim();
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token);

        let claims = if jwt::looks_like_jwt(token)
            && (!self.keys.keys().keys.is_empty() || self.settings.remote.is_some())
        {
            match self.check_jwt(token, now_ms, io) {
                Ok(claims) => claims,
                Err(outcome) => return outcome.with_code(refused_code),
            }
        } else if let Some(introspection) = &self.settings.introspection {
            match introspection.introspect(token, now_ms, io.post, io.store) {
                Answer::Active(claims) => {
                    let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
                    if let Err(e) = self.settings.validation.check(&claims, now) {
                        return deny(
                            refused_code,
                            "invalid token",
                            format!("introspected token: {e}"),
                        );
                    }
                    claims
                }
                Answer::Inactive => {
                    return deny(
                        refused_code,
                        "invalid token",
                        "introspection: token not active",
                    );
                }
                Answer::Failed(why) => {
                    return deny(SERVER_UNAVAILABLE, "token check unavailable", why);
                }
            }
        } else if via_password && self.settings.non_token_passwords == NonTokenPasswords::Defer {
            return Outcome::Defer;
        } else {
            return deny(
                refused_code,
                "invalid token",
                "not a JWT and no introspection",
            );
        };
        self.bind(&claims, request, refused_code)
    }

    fn check_jwt(&mut self, token: &str, now_ms: u64, io: &Io<'_>) -> Result<Claims, Outcome> {
        let fetcher = self.key_fetcher(io.http);
        let result = self.keys.verify(
            token,
            &self.settings.algorithms,
            &self.settings.validation,
            now_ms,
            fetcher,
            io.store,
        );
        result.map_err(|e| match e {
            // No key at all yet (the identity provider never answered): not the client's fault.
            JwtError::UnknownKid(_) | JwtError::NoKeyForAlg(_) if !self.keys.has_remote_keys() => {
                deny(
                    SERVER_UNAVAILABLE,
                    "token check unavailable",
                    format!("no keys yet: {e}"),
                )
            }
            e => deny(BAD_USERNAME_OR_PASSWORD, "invalid token", e.to_string()),
        })
    }

    /// The claims binding, then the session attributes.
    fn bind(&self, claims: &Claims, request: &Request<'_>, refused_code: u8) -> Outcome {
        let binding = &self.settings.binding;
        if let Some(claim) = &binding.client_id_claim
            && claims.str(claim) != Some(request.client_id)
        {
            return deny(
                NOT_AUTHORIZED,
                "token not issued for this client",
                format!("claim {claim:?} does not equal the client id"),
            );
        }
        if let Some(claim) = &binding.username_claim
            && (request.username.is_none() || claims.str(claim) != request.username)
        {
            return deny(
                refused_code,
                "token not issued for this user",
                format!("claim {claim:?} does not equal the user name"),
            );
        }
        let mut attributes = Vec::new();
        if let Some(sub) = claims.str("sub") {
            attributes.push((ATTR_SUBJECT.to_owned(), sub.to_owned()));
        }
        if let Ok(Some(exp)) = claims.time("exp") {
            let until = exp.saturating_add(i64::from(self.settings.leeway_secs));
            let ms = u64::try_from(until).unwrap_or(0).saturating_mul(1000);
            attributes.push((ATTR_EXPIRES_AT.to_owned(), ms.to_string()));
        }
        if let Some(acl_config) = &self.settings.acl {
            for (attribute, claim) in [
                (ATTR_PUBLISH, &acl_config.publish_claim),
                (ATTR_SUBSCRIBE, &acl_config.subscribe_claim),
            ] {
                if let Some(claim) = claim {
                    let filters = acl::claim_filters(claims.get(claim));
                    let (kept, _dropped) =
                        acl::resolve(&filters, request.client_id, request.username);
                    attributes.push((attribute.to_owned(), acl::encode(&kept)));
                }
            }
        }
        for name in &self.settings.attributes {
            let value = match claims.get(name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            attributes.push((format!("{ATTR_CLAIM_PREFIX}{name}"), value));
        }
        Outcome::Allow(attributes)
    }
}

impl Outcome {
    /// A refusal of the client's token gets `code` (0x86 for a password, 0x87 for enhanced
    /// authentication); an unavailable identity provider keeps 0x88.
    fn with_code(self, code: u8) -> Self {
        match self {
            Outcome::Deny {
                code: BAD_USERNAME_OR_PASSWORD,
                reason,
                log,
            } => Outcome::Deny { code, reason, log },
            other => other,
        }
    }
}
