//! Verification keys: JSON Web Key Sets (RFC 7517) parsed into keys that each verify exactly the
//! algorithms their type allows, and the JWS algorithms (RFC 7518) the plugin supports.
//!
//! The algorithm a token may use is decided by the key, never by the token's header alone: an RSA key
//! verifies RS256/RS384/RS512/PS256 only (or just the `alg` its JWK names), a P-256 key ES256 only, a
//! P-384 key ES384 only, an Ed25519 key EdDSA only, and HS256 is verified only with the shared secret
//! from the configuration, never with bytes of a public key. JWKS `oct` (symmetric) keys are not
//! accepted: a key set fetched from an identity provider has no business holding shared secrets.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use p256::ecdsa::signature::Verifier as _;
use serde::Deserialize;

/// A JWS algorithm the plugin verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 8] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
    ];

    /// The algorithm named `name` in a JOSE header or a JWK. `Ed25519` (RFC 9864's fully specified
    /// name) reads as EdDSA, the only EdDSA curve supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" | "Ed25519" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The public key (or, for HS256, the configured secret) behind a [`Key`].
#[derive(Clone)]
pub enum KeyMaterial {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An HS256 secret from the configuration.
    Hmac(Vec<u8>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            KeyMaterial::Rsa(_) => "Rsa",
            KeyMaterial::P256(_) => "P256",
            KeyMaterial::P384(_) => "P384",
            KeyMaterial::Ed25519(_) => "Ed25519",
            KeyMaterial::Hmac(_) => "Hmac",
        })
    }
}

impl KeyMaterial {
    /// The algorithms this type of key can verify, whatever a JWK or a token says.
    pub fn family(&self) -> &'static [Alg] {
        match self {
            KeyMaterial::Rsa(_) => &[Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256],
            KeyMaterial::P256(_) => &[Alg::ES256],
            KeyMaterial::P384(_) => &[Alg::ES384],
            KeyMaterial::Ed25519(_) => &[Alg::EdDSA],
            KeyMaterial::Hmac(_) => &[Alg::HS256],
        }
    }
}

/// One verification key: its `kid`, the algorithms it may verify, and the key itself.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// Never empty; always a subset of [`KeyMaterial::family`].
    pub algs: Vec<Alg>,
    pub material: KeyMaterial,
}

impl Key {
    /// A key over `material` for the algorithms of its family, or only `alg` when given (which must
    /// belong to the family).
    pub fn new(
        kid: Option<String>,
        alg: Option<Alg>,
        material: KeyMaterial,
    ) -> Result<Self, String> {
        let algs = match alg {
            None => material.family().to_vec(),
            Some(alg) if material.family().contains(&alg) => vec![alg],
            Some(alg) => return Err(format!("algorithm {alg} does not fit a {material:?} key")),
        };
        Ok(Self {
            kid,
            algs,
            material,
        })
    }

    /// The HS256 key over a configured secret.
    pub fn hmac(kid: Option<String>, secret: Vec<u8>) -> Self {
        Self {
            kid,
            algs: vec![Alg::HS256],
            material: KeyMaterial::Hmac(secret),
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        self.algs.contains(&alg)
    }

    /// Verifies `signature` over `message` with `alg`. An algorithm this key does not allow fails,
    /// whatever the signature: this is where RS/HS confusion stops.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.allows(alg) {
            return false;
        }
        match (&self.material, alg) {
            (KeyMaterial::Rsa(key), Alg::RS256) => {
                verify_pkcs1::<sha2::Sha256>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Alg::RS384) => {
                verify_pkcs1::<sha2::Sha384>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Alg::RS512) => {
                verify_pkcs1::<sha2::Sha512>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Alg::PS256) => {
                let Ok(signature) = rsa::pss::Signature::try_from(signature) else {
                    return false;
                };
                // RFC 7518 3.5: the salt is as long as the hash (32 bytes for SHA-256).
                rsa::pss::VerifyingKey::<sha2::Sha256>::new(key.clone())
                    .verify(message, &signature)
                    .is_ok()
            }
            (KeyMaterial::P256(key), Alg::ES256) => {
                // RFC 7518 3.4: R || S, 32 bytes each; not DER.
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify(message, &signature).is_ok())
            }
            (KeyMaterial::P384(key), Alg::ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            (KeyMaterial::Ed25519(key), Alg::EdDSA) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok())
            }
            (KeyMaterial::Hmac(secret), Alg::HS256) => {
                let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
                    return false;
                };
                mac.update(message);
                // Constant-time comparison.
                mac.verify_slice(signature).is_ok()
            }
            _ => false,
        }
    }
}

fn verify_pkcs1<D>(key: &rsa::PublicKey, message: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::const_oid::AssociatedOid + sha2::digest::FixedOutputReset,
{
    let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone())
        .verify(message, &signature)
        .is_ok()
}

/// Smallest RSA modulus accepted, in bits (RFC 7518 3.3: 2048 or larger).
pub const MIN_RSA_BITS: usize = 2048;

/// A parsed key set: the usable keys, and why the others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// One line per skipped JWK (unsupported type or curve, `use` other than `sig`, bad members...).
    pub skipped: Vec<String>,
}

/// A JWK as found in a JWKS document: only the members the plugin reads.
#[derive(Debug, Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Largest JWKS document parsed, in bytes, and largest number of keys kept from one.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
pub const MAX_KEYS: usize = 64;

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). A key that cannot be used is skipped (see
    /// [`KeySet::skipped`]); a document that is not a JWKS, or has no usable key, is an error.
    pub fn parse_jwks(json: &[u8]) -> Result<Self, String> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        let raw: RawJwks =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut set = KeySet::default();
        for (index, value) in raw.keys.into_iter().enumerate() {
            if set.keys.len() == MAX_KEYS {
                set.skipped.push(format!(
                    "keys[{index}] and later: more than {MAX_KEYS} keys"
                ));
                break;
            }
            match serde_json::from_value::<RawJwk>(value)
                .map_err(|e| e.to_string())
                .and_then(parse_jwk)
            {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("keys[{index}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                "the key set is empty".to_owned()
            } else {
                format!("no usable key ({})", set.skipped.join("; "))
            };
            return Err(why);
        }
        Ok(set)
    }

    /// The keys that may verify a token with this `kid` (any key when the token has none) and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |key| {
            key.allows(alg) && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
        })
    }

    /// Whether some key has this `kid`, whatever its algorithms.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

fn b64(member: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing `{member}`"))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| format!("`{member}` is not base64url: {e}"))
}

fn parse_jwk(jwk: RawJwk) -> Result<Key, String> {
    if let Some(use_) = &jwk.use_
        && use_ != "sig"
    {
        return Err(format!("use `{use_}` is not `sig`"));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("key_ops without `verify`".to_owned());
    }
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => {
            Some(Alg::from_name(name).ok_or_else(|| format!("unsupported alg `{name}`"))?)
        }
    };
    let kty = jwk.kty.as_deref().ok_or("missing `kty`")?;
    let material = match kty {
        "RSA" => {
            let n = b64("n", jwk.n.as_ref())?;
            let e = b64("e", jwk.e.as_ref())?;
            let n = rsa::BoxedUint::from_be_slice_vartime(&n);
            let e = rsa::BoxedUint::from_be_slice_vartime(&e);
            let key =
                rsa::PublicKey::new_with_size_limits(n, e, MIN_RSA_BITS..=rsa::PublicKey::MAX_SIZE)
                    .map_err(|e| format!("bad RSA key: {e}"))?;
            KeyMaterial::Rsa(key)
        }
        "EC" => {
            let x = b64("x", jwk.x.as_ref())?;
            let y = b64("y", jwk.y.as_ref())?;
            let crv = jwk.crv.as_deref().ok_or("missing `crv`")?;
            let (len, point) = (x.len(), [&[0x04], x.as_slice(), y.as_slice()].concat());
            match crv {
                "P-256" if len == 32 && y.len() == 32 => KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| "bad P-256 point")?,
                ),
                "P-384" if len == 48 && y.len() == 48 => KeyMaterial::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| "bad P-384 point")?,
                ),
                "P-256" | "P-384" => return Err(format!("bad {crv} coordinate length")),
                other => return Err(format!("unsupported curve `{other}`")),
            }
        }
        "OKP" => {
            let crv = jwk.crv.as_deref().ok_or("missing `crv`")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported curve `{crv}`"));
            }
            let x = b64("x", jwk.x.as_ref())?;
            let x: [u8; 32] = x
                .try_into()
                .map_err(|_| "an Ed25519 `x` is 32 bytes".to_owned())?;
            KeyMaterial::Ed25519(
                ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "bad Ed25519 point")?,
            )
        }
        "oct" => return Err("symmetric (`oct`) keys are not accepted in a JWKS".to_owned()),
        other => return Err(format!("unsupported kty `{other}`")),
    };
    Key::new(jwk.kid, alg, material)
}
