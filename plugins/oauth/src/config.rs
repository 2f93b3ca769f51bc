//! The plugin's configuration (`[plugins.config]`), and its validation into [`Settings`].

use serde::Deserialize;
use serde_json::Value;

use crate::introspect::Introspection;
use crate::jwk::{Alg, Key, KeySet};
use crate::jwt::Validation;
use crate::keystore::RefreshPolicy;

/// The MQTT 5 Authentication Method of enhanced authentication with a bearer token in the
/// Authentication Data, unless the configuration names another.
pub const DEFAULT_AUTH_METHOD: &str = "OAUTH2-JWT";

/// One string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// What to do with a password that is not a JWT when no introspection endpoint is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonTokenPasswords {
    /// Refuse the client (0x86).
    #[default]
    Deny,
    /// Leave the client to the next plugin (e.g. a password file).
    Defer,
}

/// `[plugins.config]` of the oauth plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accepted `iss` values; absent: not checked.
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` values (one must be in the token's `aud`); absent: not checked.
    pub audience: Option<OneOrMany>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u32,
    /// Claims every token (or introspection answer) must have.
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// JWS algorithms accepted; absent: every supported one (each key still allows only its own).
    pub algorithms: Option<Vec<String>>,
    /// An inline JWKS: a table `{ keys = [...] }` or its JSON text.
    pub jwks: Option<Value>,
    /// Path of a JWKS file inside a directory granted to the plugin; read again every
    /// `refresh_interval_secs`.
    pub jwks_file: Option<String>,
    /// URL of the identity provider's JWKS (`jwks_uri`), fetched through the host's `http` import.
    pub jwks_url: Option<String>,
    /// Shared secret for HS256 tokens (at least 32 bytes).
    pub hs256_secret: Option<String>,
    /// Age after which the key set is fetched (or read) again, in seconds.
    #[serde(default = "default_refresh_interval_secs")]
    pub refresh_interval_secs: u32,
    /// Least time between fetches caused by an unknown `kid` or retrying a failure, in seconds.
    #[serde(default = "default_min_refetch_interval_secs")]
    pub min_refetch_interval_secs: u32,
    /// Timeout of one HTTP request, in milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u32,
    /// MQTT 5 Authentication Method of enhanced authentication.
    #[serde(default = "default_auth_method")]
    pub auth_method: String,
    /// A password that is not a JWT, without introspection: `"deny"` (default) or `"defer"`.
    #[serde(default)]
    pub non_token_passwords: NonTokenPasswords,
    #[serde(default)]
    pub binding: Binding,
    pub acl: Option<AclConfig>,
    pub introspection: Option<IntrospectionConfig>,
    /// Claims copied into session attributes `oauth:claim:<name>` for later plugins.
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// Claims that must equal what the client presented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The claim that must equal the client identifier (e.g. `"sub"`, `"client_id"`, `"azp"`).
    pub client_id_claim: Option<String>,
    /// The claim that must equal the user name (e.g. `"preferred_username"`); absent: the user name is
    /// ignored.
    pub username_claim: Option<String>,
}

/// ACL taken from claims.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Claim listing the topic filters the client may publish to (`%c`, `%u` substituted).
    pub publish_claim: Option<String>,
    /// Claim listing the topic filters the client may subscribe within.
    pub subscribe_claim: Option<String>,
    /// Seconds the broker may reuse a verdict.
    #[serde(default = "default_acl_cache_secs")]
    pub cache_secs: u32,
}

/// RFC 7662 token introspection for opaque tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "default_introspection_cache_secs")]
    pub cache_secs: u32,
    #[serde(default = "default_failure_cache_secs")]
    pub failure_cache_secs: u32,
    #[serde(default = "default_cache_slots")]
    pub cache_slots: u32,
}

fn default_leeway_secs() -> u32 {
    30
}
fn default_required_claims() -> Vec<String> {
    vec!["exp".to_owned()]
}
fn default_refresh_interval_secs() -> u32 {
    300
}
fn default_min_refetch_interval_secs() -> u32 {
    60
}
fn default_http_timeout_ms() -> u32 {
    2_000
}
fn default_auth_method() -> String {
    DEFAULT_AUTH_METHOD.to_owned()
}
fn default_acl_cache_secs() -> u32 {
    10
}
fn default_introspection_cache_secs() -> u32 {
    300
}
fn default_failure_cache_secs() -> u32 {
    10
}
fn default_cache_slots() -> u32 {
    4096
}

/// Where the remote key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Url(String),
    File(String),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub validation: Validation,
    pub algorithms: Vec<Alg>,
    /// Inline JWKS keys and the HS256 key.
    pub static_keys: Vec<Key>,
    /// Skipped keys of the inline JWKS (logged at init).
    pub static_skipped: Vec<String>,
    pub remote: Option<KeySource>,
    pub policy: RefreshPolicy,
    pub http_timeout_ms: u32,
    pub auth_method: String,
    pub non_token_passwords: NonTokenPasswords,
    pub binding: Binding,
    pub acl: Option<AclConfig>,
    pub introspection: Option<Introspection>,
    pub leeway_secs: u32,
    pub attributes: Vec<String>,
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{key}: {url:?} is not an http(s) URL"))?;
    if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
        return Err(format!("{key}: {url:?} has no host"));
    }
    Ok(())
}

fn non_empty(key: &str, values: Vec<String>) -> Result<Vec<String>, String> {
    if values.is_empty() || values.iter().any(String::is_empty) {
        return Err(format!(
            "{key}: must be a non-empty string or list of non-empty strings"
        ));
    }
    Ok(values)
}

impl Config {
    /// Checks the configuration; errors name the key (`plugin config: <key>: ...`).
    pub fn validate(self) -> Result<Settings, String> {
        self.validate_inner()
            .map_err(|e| format!("plugin config: {e}"))
    }

    fn validate_inner(self) -> Result<Settings, String> {
        let issuers = self
            .issuer
            .map(|i| non_empty("issuer", i.into_vec()))
            .transpose()?
            .unwrap_or_default();
        let audiences = self
            .audience
            .map(|a| non_empty("audience", a.into_vec()))
            .transpose()?
            .unwrap_or_default();
        if self.leeway_secs > 600 {
            return Err("leeway_secs: at most 600".into());
        }
        let algorithms = match self.algorithms {
            None => Vec::new(),
            Some(names) if names.is_empty() => {
                return Err(
                    "algorithms: empty list (omit the key to accept every algorithm)".into(),
                );
            }
            Some(names) => names
                .iter()
                .map(|name| {
                    Alg::from_name(name).ok_or_else(|| {
                        format!(
                            "algorithms: unsupported {name:?} (supported: {})",
                            Alg::ALL.map(Alg::name).join(", ")
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let sources = [
            self.jwks.is_some(),
            self.jwks_file.is_some(),
            self.jwks_url.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources > 1 {
            return Err("jwks, jwks_file, jwks_url: give at most one".into());
        }
        let mut static_keys = Vec::new();
        let mut static_skipped = Vec::new();
        if let Some(jwks) = self.jwks {
            let text = match jwks {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let set = KeySet::parse_jwks(text.as_bytes()).map_err(|e| format!("jwks: {e}"))?;
            static_keys.extend(set.keys);
            static_skipped = set.skipped;
        }
        if let Some(secret) = self.hs256_secret {
            if secret.len() < 32 {
                return Err("hs256_secret: at least 32 bytes (RFC 7518 3.2)".into());
            }
            static_keys.push(Key::hmac(None, secret.into_bytes()));
        }
        let remote = match (self.jwks_url, self.jwks_file) {
            (Some(url), _) => {
                check_url("jwks_url", &url)?;
                Some(KeySource::Url(url))
            }
            (None, Some(path)) if path.is_empty() => return Err("jwks_file: empty path".into()),
            (None, Some(path)) => Some(KeySource::File(path)),
            (None, None) => None,
        };
        let introspection = self
            .introspection
            .map(|i| -> Result<Introspection, String> {
                check_url("introspection.url", &i.url)?;
                if i.client_id.is_empty() {
                    return Err("introspection.client_id: empty".into());
                }
                if i.cache_slots == 0 {
                    return Err("introspection.cache_slots: at least 1".into());
                }
                Ok(Introspection {
                    url: i.url,
                    client_id: i.client_id,
                    client_secret: i.client_secret,
                    cache_ms: u64::from(i.cache_secs) * 1000,
                    failure_cache_ms: u64::from(i.failure_cache_secs) * 1000,
                    cache_slots: i.cache_slots,
                })
            })
            .transpose()?;
        if static_keys.is_empty() && remote.is_none() && introspection.is_none() {
            return Err(
                "no way to check tokens: give jwks, jwks_file, jwks_url, hs256_secret or [introspection]"
                    .into(),
            );
        }
        if self.refresh_interval_secs == 0 {
            return Err("refresh_interval_secs: at least 1".into());
        }
        if self.min_refetch_interval_secs == 0 {
            return Err("min_refetch_interval_secs: at least 1 (refetch storms)".into());
        }
        if self.auth_method.is_empty() {
            return Err("auth_method: empty".into());
        }
        for (key, claim) in [
            ("binding.client_id_claim", &self.binding.client_id_claim),
            ("binding.username_claim", &self.binding.username_claim),
        ] {
            if claim.as_deref() == Some("") {
                return Err(format!("{key}: empty claim name"));
            }
        }
        if let Some(acl) = &self.acl {
            if acl.publish_claim.is_none() && acl.subscribe_claim.is_none() {
                return Err("acl: give publish_claim, subscribe_claim or both".into());
            }
            if [&acl.publish_claim, &acl.subscribe_claim]
                .iter()
                .any(|c| c.as_deref() == Some(""))
            {
                return Err("acl: empty claim name".into());
            }
        }
        if self.attributes.iter().any(String::is_empty) {
            return Err("attributes: empty claim name".into());
        }
        Ok(Settings {
            validation: Validation {
                issuers,
                audiences,
                leeway_secs: i64::from(self.leeway_secs),
                required: self.required_claims,
            },
            algorithms,
            static_keys,
            static_skipped,
            remote,
            policy: RefreshPolicy {
                refresh_interval_ms: u64::from(self.refresh_interval_secs) * 1000,
                min_refetch_interval_ms: u64::from(self.min_refetch_interval_secs) * 1000,
            },
            http_timeout_ms: self.http_timeout_ms,
            auth_method: self.auth_method,
            non_token_passwords: self.non_token_passwords,
            binding: self.binding,
            acl: self.acl,
            introspection,
            leeway_secs: self.leeway_secs,
            attributes: self.attributes,
        })
    }
}
