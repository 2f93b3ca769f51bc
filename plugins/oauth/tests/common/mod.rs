//! Test keys (tests/fixtures, made by generate.sh), tokens signed by `jsonwebtoken` (an independent
//! implementation), JWKS documents, and scripted HTTP.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wasp_oauth_plugin::{Fetcher, FormPoster};

pub const NOW: u64 = 1_700_000_000; // seconds
pub const NOW_MS: u64 = NOW * 1000;
pub const ISS: &str = "https://idp.example/realms/mqtt";
pub const AUD: &str = "mqtt-broker";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A signing key of the fixtures with its algorithm and `kid`.
pub struct Signer {
    pub key: EncodingKey,
    pub alg: Algorithm,
    pub kid: Option<String>,
}

impl Signer {
    pub fn new(file: &str, alg: Algorithm, kid: &str) -> Self {
        let pem = fixture(file);
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => panic!("{alg:?}"),
        }
        .unwrap();
        Self {
            key,
            alg,
            kid: (!kid.is_empty()).then(|| kid.to_owned()),
        }
    }

    pub fn hs256(secret: &[u8], kid: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            kid: (!kid.is_empty()).then(|| kid.to_owned()),
        }
    }

    /// The public JWK, with `kid` and, when `with_alg`, `alg`.
    pub fn jwk(&self, with_alg: bool) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = self.kid.clone();
        if !with_alg {
            jwk.common.key_algorithm = None;
        }
        serde_json::to_value(jwk).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Valid claims at [`NOW`] for client `dev1`.
pub fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "dev1",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
    })
}

pub fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

/// A token assembled by hand: any header, claims, and HMAC-SHA256 key (or `None`: the signature is
/// the given bytes).
pub fn handmade(header: &Value, claims: &Value, hmac_key: Option<&[u8]>, sig: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = match hmac_key {
        Some(key) => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        None => sig.to_vec(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Answers GETs (and POSTs) from a changeable document, counting the calls.
pub struct Http {
    pub jwks: RefCell<Result<(u16, String), String>>,
    pub gets: Cell<usize>,
    pub introspection: RefCell<Vec<Result<(u16, String), String>>>,
    pub posts: RefCell<Vec<String>>,
}

impl Http {
    pub fn serving(body: &str) -> Self {
        let http = Self::default();
        http.serve(body);
        http
    }
    pub fn serve(&self, body: &str) {
        *self.jwks.borrow_mut() = Ok((200, body.to_owned()));
    }
    pub fn fail(&self, why: Result<u16, &str>) {
        *self.jwks.borrow_mut() = match why {
            Ok(status) => Ok((status, String::new())),
            Err(why) => Err(why.to_owned()),
        };
    }
}

impl Fetcher for Http {
    fn get(&self, _url: &str) -> Result<(u16, Vec<u8>), String> {
        self.gets.set(self.gets.get() + 1);
        self.jwks
            .borrow()
            .clone()
            .map(|(status, body)| (status, body.into_bytes()))
    }
}

impl FormPoster for Http {
    fn post_form(
        &self,
        _url: &str,
        _headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        self.posts.borrow_mut().push(body.to_owned());
        let mut answers = self.introspection.borrow_mut();
        if answers.is_empty() {
            return Err("no scripted answer".into());
        }
        answers
            .remove(0)
            .map(|(status, body)| (status, body.into_bytes()))
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            jwks: RefCell::new(Err("nothing served".into())),
            gets: Cell::new(0),
            introspection: RefCell::default(),
            posts: RefCell::default(),
        }
    }
}
