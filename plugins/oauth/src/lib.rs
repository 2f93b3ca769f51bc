//! OAuth 2.0 bearer-token authentication for Wasp: JWTs verified with keys from a JWKS (inline, file
//! or URL) or an HS256 secret, opaque tokens checked by RFC 7662 introspection, claims bound to the
//! client, and an ACL taken from claims enforced by the authorizer hooks.
//!
//! Host-independent logic, unit-tested natively: [`jwk`] (keys and algorithms), [`jwt`] (parsing,
//! signatures, claims), [`keystore`] (refresh policy, rate-limited refetch, sharing through kv),
//! [`introspect`], [`acl`], [`auth`] (the decision), [`config`]. The I/O it needs goes through the
//! [`Fetcher`], [`FormPoster`] and [`Store`] traits; [`plugin`] implements them with the host's
//! imports and is the WebAssembly glue.

pub mod acl;
pub mod auth;
pub mod config;
pub mod introspect;
pub mod jwk;
pub mod jwt;
pub mod keystore;
mod plugin;

pub use auth::{Authenticator, Io, Outcome, Request};
pub use config::{Config, DEFAULT_AUTH_METHOD, Settings};
pub use introspect::FormPoster;
pub use keystore::{Fetcher, Store};
pub use plugin::OAuthPlugin;

wasp_plugin_sdk::export_plugin!(OAuthPlugin);
