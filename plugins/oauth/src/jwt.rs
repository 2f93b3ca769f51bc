//! JSON Web Tokens (RFC 7519) in JWS compact serialization: parsing, signature verification against a
//! [`KeySet`], and claim validation against a clock given by the caller.
//!
//! Nothing here reads a clock: `now` (seconds since the Unix epoch) is a parameter, which the plugin
//! takes from the host's clock (controlled by the test harness).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwk::{Alg, KeySet};

/// Largest token accepted, in bytes (bigger ones are refused before any decoding).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. The [`fmt::Display`] text is for the broker's log, not for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url segments, or a header or payload that is not a JSON object.
    Malformed(String),
    /// `alg: none` (an unsecured JWT).
    AlgNone,
    /// An algorithm the plugin does not support, or the configuration does not allow.
    AlgNotAllowed(String),
    /// A `crit` header: the plugin understands no JWS extension, so it must refuse (RFC 7515 4.1.11).
    CriticalHeader,
    /// The token's `kid` is in no known key set.
    UnknownKid(String),
    /// No key allows the token's algorithm (with its `kid`, when it has one): e.g. HS256 with the `kid`
    /// of an RSA key.
    NoKeyForAlg(Alg),
    /// No candidate key verified the signature.
    BadSignature,
    Expired {
        exp: i64,
        now: i64,
    },
    NotYetValid {
        nbf: i64,
        now: i64,
    },
    IssuedInFuture {
        iat: i64,
        now: i64,
    },
    WrongIssuer,
    WrongAudience,
    MissingClaim(String),
    /// A registered claim of the wrong JSON type (e.g. a string `exp`).
    BadClaim(&'static str),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::AlgNone => f.write_str("unsecured token (alg none)"),
            JwtError::AlgNotAllowed(alg) => write!(f, "algorithm {alg:?} not allowed"),
            JwtError::CriticalHeader => f.write_str("token with a crit header"),
            JwtError::UnknownKid(kid) => write!(f, "unknown key id {kid:?}"),
            JwtError::NoKeyForAlg(alg) => write!(f, "no key allows algorithm {alg}"),
            JwtError::BadSignature => f.write_str("bad signature"),
            JwtError::Expired { exp, now } => write!(f, "expired (exp {exp}, now {now})"),
            JwtError::NotYetValid { nbf, now } => write!(f, "not yet valid (nbf {nbf}, now {now})"),
            JwtError::IssuedInFuture { iat, now } => {
                write!(f, "issued in the future (iat {iat}, now {now})")
            }
            JwtError::WrongIssuer => f.write_str("wrong issuer"),
            JwtError::WrongAudience => f.write_str("wrong audience"),
            JwtError::MissingClaim(name) => write!(f, "missing claim {name:?}"),
            JwtError::BadClaim(name) => write!(f, "claim {name:?} has the wrong type"),
        }
    }
}

/// The JOSE header members the plugin reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

/// A token split and decoded, its signature not verified yet.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    /// `base64url(header) '.' base64url(payload)`: what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

fn segment(name: &str, text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| JwtError::Malformed(format!("{name} is not base64url: {e}")))
}

/// Whether `text` has the shape of a JWS compact token (three non-empty dot-separated segments, the
/// first starting like a JSON object), to tell JWTs from opaque tokens without reporting errors.
pub fn looks_like_jwt(text: &str) -> bool {
    let mut parts = text.split('.');
    // base64url of `{"` and `{ "` / `{\n`...: every JSON object header starts with "ey".
    matches!((parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(p), Some(s), None) if h.starts_with("ey") && !p.is_empty() && !s.is_empty())
}

/// Splits and decodes `token`; refuses `alg: none`, unknown algorithms and `crit` headers.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| JwtError::Malformed("not three segments".into()))?;
    let (header, payload) = signing_input
        .split_once('.')
        .filter(|(_, payload)| !payload.contains('.'))
        .ok_or_else(|| JwtError::Malformed("not three segments".into()))?;
    let raw: RawHeader = serde_json::from_slice(&segment("header", header)?)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let alg = raw
        .alg
        .ok_or_else(|| JwtError::Malformed("header without alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = Alg::from_name(&alg).ok_or(JwtError::AlgNotAllowed(alg))?;
    if raw.crit.is_some() {
        return Err(JwtError::CriticalHeader);
    }
    Ok(Parsed {
        header: Header { alg, kid: raw.kid },
        signing_input,
        signature: segment("signature", signature)?,
        payload: segment("payload", payload)?,
    })
}

impl Parsed<'_> {
    /// Verifies the signature with the keys of `keys` that allow the header's algorithm (and have its
    /// `kid`, when it names one), then decodes the claims. The claims are not validated yet.
    pub fn verify(&self, keys: &KeySet) -> Result<Claims, JwtError> {
        let Header { alg, kid } = &self.header;
        if let Some(kid) = kid
            && !keys.has_kid(kid)
        {
            return Err(JwtError::UnknownKid(kid.clone()));
        }
        let mut candidates = keys.candidates(kid.as_deref(), *alg).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::NoKeyForAlg(*alg));
        }
        if !candidates.any(|key| key.verify(*alg, self.signing_input.as_bytes(), &self.signature)) {
            return Err(JwtError::BadSignature);
        }
        match serde_json::from_slice::<Value>(&self.payload) {
            Ok(Value::Object(map)) => Ok(Claims(map)),
            _ => Err(JwtError::Malformed("payload is not a JSON object".into())),
        }
    }
}

/// The claims of a token (or of an introspection response): a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A string claim.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (seconds; a fractional value is truncated). `Err` when present but not a
    /// number.
    pub fn time(&self, name: &'static str) -> Result<Option<i64>, JwtError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or(JwtError::BadClaim(name)),
            Some(_) => Err(JwtError::BadClaim(name)),
        }
    }

    /// The values of a claim that is a string or an array of strings (`aud`); `Err` for other types.
    pub fn strings(&self, name: &'static str) -> Result<Vec<&str>, JwtError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().ok_or(JwtError::BadClaim(name)))
                .collect(),
            Some(_) => Err(JwtError::BadClaim(name)),
        }
    }
}

/// What a token's claims must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// Accepted issuers; empty: `iss` not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences (one must be in the token's `aud`); empty: `aud` not checked.
    pub audiences: Vec<String>,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: i64,
    /// Claims that must be present (for example `exp`, `sub`).
    pub required: Vec<String>,
}

impl Validation {
    /// Checks `claims` at `now` (seconds since the Unix epoch).
    pub fn check(&self, claims: &Claims, now: i64) -> Result<(), JwtError> {
        for name in &self.required {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(JwtError::MissingClaim(name.clone()));
            }
        }
        let leeway = self.leeway_secs;
        // RFC 7519 4.1.4: the token must not be accepted on or after `exp`.
        if let Some(exp) = claims.time("exp")?
            && now >= exp.saturating_add(leeway)
        {
            return Err(JwtError::Expired { exp, now });
        }
        if let Some(nbf) = claims.time("nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(JwtError::NotYetValid { nbf, now });
        }
        if let Some(iat) = claims.time("iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(JwtError::IssuedInFuture { iat, now });
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                Some(Value::String(iss)) if self.issuers.contains(iss) => {}
                None => return Err(JwtError::MissingClaim("iss".into())),
                _ => return Err(JwtError::WrongIssuer),
            }
        }
        if !self.audiences.is_empty() {
            if claims.get("aud").is_none() {
                return Err(JwtError::MissingClaim("aud".into()));
            }
            let aud = claims.strings("aud")?;
            if !aud.iter().any(|a| self.audiences.iter().any(|b| a == b)) {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// Parses, verifies and validates `token` with `keys` at `now`; refuses algorithms outside `allowed`
/// (when not empty).
pub fn decode(
    token: &str,
    keys: &KeySet,
    allowed: &[Alg],
    validation: &Validation,
    now: i64,
) -> Result<Claims, JwtError> {
    let parsed = parse(token)?;
    if !allowed.is_empty() && !allowed.contains(&parsed.header.alg) {
        return Err(JwtError::AlgNotAllowed(parsed.header.alg.name().into()));
    }
    let claims = parsed.verify(keys)?;
    validation.check(&claims, now)?;
    Ok(claims)
}
