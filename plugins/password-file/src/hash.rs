//! Password hashes as mosquitto writes them, plus argon2id in PHC string format.
//!
//! Construction, checked against mosquitto's `password_mosq.c` / `password_common.c` and against real
//! `mosquitto_passwd` 2.0.11 output (see `tests/fixtures/`):
//!
//! * `$6$<salt>$<hash>`: `hash = SHA-512(password ‖ salt)` (password first, then the raw salt bytes).
//! * `$7$<iterations>$<salt>$<hash>`: `hash = PBKDF2-HMAC-SHA512(password, salt, iterations, 64 bytes)`.
//! * salt and hash are standard-alphabet base64 with `=` padding and no line breaks; mosquitto writes
//!   12-byte salts (2.0) and accepts 12- or 64-byte salts when reading; the hash is always 64 bytes.
//! * `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: the PHC string format (the reference argon2 library's
//!   encoding, also what mosquitto 2.1 writes).

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Length of a SHA-512 digest and of mosquitto's derived hashes.
pub const HASH_LEN: usize = 64;
/// The salt length `mosquitto_passwd` 2.0 writes.
pub const MOSQUITTO_SALT_LEN: usize = 12;
/// The salt length used for new argon2id entries.
pub const ARGON2_SALT_LEN: usize = 16;
/// `mosquitto_passwd`'s default PBKDF2 iteration count (`PW_DEFAULT_ITERATIONS` in mosquitto 2.0).
pub const DEFAULT_ITERATIONS: u32 = 101;

/// Standard alphabet, `=` padding on output; on input padding is optional, as OpenSSL's decoder is lenient.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hash format of a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `$6$`: salted SHA-512 (mosquitto ≤ 1.6 default, `mosquitto_passwd -H sha512`).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 (mosquitto 2.0 default, `-H sha512-pbkdf2 -I <iterations>`).
    Sha512Pbkdf2 { iterations: u32 },
    /// argon2id in PHC string format, with the argon2 crate's default (OWASP) parameters.
    Argon2id,
}

impl Default for Format {
    /// What `mosquitto_passwd` 2.0 writes by default.
    fn default() -> Self {
        Format::Sha512Pbkdf2 {
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

/// Why an entry could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The username cannot be stored in a password file line.
    InvalidUsername(String),
    /// The salt has a length the format (or mosquitto) does not accept.
    InvalidSalt(String),
    /// PBKDF2 needs at least one iteration.
    InvalidIterations,
    /// The operating system's random source failed.
    Random(String),
    /// The argon2 implementation refused its input.
    Argon2(String),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::InvalidUsername(m) => write!(f, "invalid username: {m}"),
            HashError::InvalidSalt(m) => write!(f, "invalid salt: {m}"),
            HashError::InvalidIterations => f.write_str("PBKDF2 iterations must be at least 1"),
            HashError::Random(m) => write!(f, "no random salt: {m}"),
            HashError::Argon2(m) => write!(f, "argon2: {m}"),
        }
    }
}

impl std::error::Error for HashError {}

/// One decoded password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$<salt>$<hash>`.
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_LEN] },
    /// `$7$<iterations>$<salt>$<hash>`.
    Sha512Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    /// A validated argon2id PHC string.
    Argon2id { phc: String },
}

impl fmt::Debug for PasswordHash {
    /// Shows the kind and cost, not the salt or hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512"),
            PasswordHash::Sha512Pbkdf2 { iterations, .. } => {
                write!(
                    f,
                    "PasswordHash::Sha512Pbkdf2 {{ iterations: {iterations} }}"
                )
            }
            PasswordHash::Argon2id { .. } => f.write_str("PasswordHash::Argon2id"),
        }
    }
}

fn decode_salt(b64: &str) -> Result<Vec<u8>, String> {
    let salt = B64
        .decode(b64)
        .map_err(|e| format!("salt is not valid base64: {e}"))?;
    if salt.len() != MOSQUITTO_SALT_LEN && salt.len() != HASH_LEN {
        return Err(format!(
            "salt is {} bytes; mosquitto accepts {MOSQUITTO_SALT_LEN} or {HASH_LEN}",
            salt.len()
        ));
    }
    Ok(salt)
}

fn decode_hash(b64: &str) -> Result<[u8; HASH_LEN], String> {
    let hash = B64
        .decode(b64)
        .map_err(|e| format!("hash is not valid base64: {e}"))?;
    <[u8; HASH_LEN]>::try_from(hash.as_slice())
        .map_err(|_| format!("hash is {} bytes, expected {HASH_LEN}", hash.len()))
}

fn sha512(password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut digest = Sha512::new();
    digest.update(password);
    digest.update(salt);
    digest.finalize().into()
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

impl PasswordHash {
    /// Decodes the hash part of a password file line.
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        if let Some(rest) = s.strip_prefix("$6$") {
            let [salt, hash] = split_exact::<2>(rest)?;
            Ok(PasswordHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            })
        } else if let Some(rest) = s.strip_prefix("$7$") {
            let [iterations, salt, hash] = split_exact::<3>(rest)?;
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| format!("iteration count {iterations:?} is not a number"))?;
            if iterations == 0 {
                return Err("iteration count must be at least 1".into());
            }
            Ok(PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            })
        } else if s.starts_with("$argon2id$") {
            let parsed = argon2::PasswordHash::new(s)
                .map_err(|e| format!("invalid argon2id PHC string: {e}"))?;
            argon2::Params::try_from(&parsed)
                .map_err(|e| format!("invalid argon2id parameters: {e}"))?;
            if parsed.hash.is_none() {
                return Err("argon2id PHC string has no hash".into());
            }
            Ok(PasswordHash::Argon2id { phc: s.to_owned() })
        } else if s.starts_with('$') {
            Err("unknown hash type; expected $6$, $7$ or $argon2id$".into())
        } else {
            Err("not a password hash (plain-text passwords are not accepted; hash them with mosquitto_passwd -U or wasp passwd)".into())
        }
    }

    /// Hashes `password` with the entry's salt and parameters and compares in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => sha512(password, salt).ct_eq(hash).into(),
            PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2_sha512(password, salt, *iterations)
                .ct_eq(hash)
                .into(),
            PasswordHash::Argon2id { phc } => match argon2::PasswordHash::new(phc) {
                // The argon2 crate compares the derived output in constant time.
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            },
        }
    }

    /// The entry's text, byte-for-byte as mosquitto writes it.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt,
                hash,
            } => format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash)),
            PasswordHash::Argon2id { phc } => phc.clone(),
        }
    }
}

fn split_exact<const N: usize>(s: &str) -> Result<[&str; N], String> {
    let parts: Vec<&str> = s.split('$').collect();
    <[&str; N]>::try_from(parts.as_slice())
        .map_err(|_| format!("expected {N} '$'-separated fields after the type"))
        .and_then(|fields| {
            if fields.iter().any(|f| f.is_empty()) {
                Err("empty field in hash".to_owned())
            } else {
                Ok(fields)
            }
        })
}

/// Hashes `password` in `format` with the given salt (12 or 64 bytes for `$6$`/`$7$`, 8 to 64 for argon2id).
pub fn hash_password_with_salt(
    password: &[u8],
    format: Format,
    salt: &[u8],
) -> Result<PasswordHash, HashError> {
    match format {
        Format::Sha512 | Format::Sha512Pbkdf2 { .. } => {
            if salt.len() != MOSQUITTO_SALT_LEN && salt.len() != HASH_LEN {
                return Err(HashError::InvalidSalt(format!(
                    "{} bytes; mosquitto reads only {MOSQUITTO_SALT_LEN}- or {HASH_LEN}-byte salts",
                    salt.len()
                )));
            }
        }
        Format::Argon2id => {
            if !(8..=64).contains(&salt.len()) {
                return Err(HashError::InvalidSalt(format!(
                    "{} bytes; argon2id salts are 8 to 64 bytes",
                    salt.len()
                )));
            }
        }
    }
    Ok(match format {
        Format::Sha512 => PasswordHash::Sha512 {
            salt: salt.to_vec(),
            hash: sha512(password, salt),
        },
        Format::Sha512Pbkdf2 { iterations } => {
            if iterations == 0 {
                return Err(HashError::InvalidIterations);
            }
            PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt: salt.to_vec(),
                hash: pbkdf2_sha512(password, salt, iterations),
            }
        }
        Format::Argon2id => {
            let salt =
                SaltString::encode_b64(salt).map_err(|e| HashError::InvalidSalt(e.to_string()))?;
            let phc = argon2::Argon2::default()
                .hash_password(password, &salt)
                .map_err(|e| HashError::Argon2(e.to_string()))?
                .to_string();
            PasswordHash::Argon2id { phc }
        }
    })
}

/// Checks that `username` can be stored in a password file line and read back unchanged.
fn check_username(username: &str) -> Result<(), HashError> {
    let bad = |m: &str| Err(HashError::InvalidUsername(m.to_owned()));
    if username.is_empty() {
        return bad("empty");
    }
    if username.len() > 65535 {
        return bad("longer than 65535 bytes");
    }
    if username.contains(':') {
        return bad("contains ':'");
    }
    if username.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if username.starts_with('#') {
        return bad("starts with '#' (the line would be a comment)");
    }
    if username.trim() != username {
        return bad("starts or ends with white space (trimmed when read)");
    }
    Ok(())
}

/// A password file line (`username:hash`, no line break) with the given salt.
pub fn hash_entry_with_salt(
    username: &str,
    password: &[u8],
    format: Format,
    salt: &[u8],
) -> Result<String, HashError> {
    check_username(username)?;
    let hash = hash_password_with_salt(password, format, salt)?;
    Ok(format!("{username}:{}", hash.encode()))
}

/// A password file line (`username:hash`, no line break) with a fresh random salt from the operating
/// system (12 bytes for `$6$`/`$7$`, like `mosquitto_passwd` 2.0; 16 bytes for argon2id).
pub fn hash_entry(username: &str, password: &[u8], format: Format) -> Result<String, HashError> {
    let mut salt = [0u8; ARGON2_SALT_LEN];
    let len = match format {
        Format::Argon2id => ARGON2_SALT_LEN,
        _ => MOSQUITTO_SALT_LEN,
    };
    getrandom::fill(&mut salt[..len]).map_err(|e| HashError::Random(e.to_string()))?;
    hash_entry_with_salt(username, password, format, &salt[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 12] = *b"0123456789ab";

    #[test]
    fn mosquitto_sha512_entry_verifies() {
        // Written by mosquitto_passwd 2.0.11 -H sha512 for the password "hunter2".
        let h = PasswordHash::parse("$6$6unYQMxH2oNDbSPM$Xc0sQnzW14+ShKPI76UlJufjEnbA/FJnhXaCzC7VoGvM2Q090D3MFkGn3t/ILpEN+/7EDMwn/hQ/gt+ZhDpY8Q==").unwrap();
        assert!(h.verify(b"hunter2"));
        assert!(!h.verify(b"hunter3"));
        assert!(!h.verify(b""));
    }

    #[test]
    fn mosquitto_pbkdf2_entry_verifies_and_reencodes_byte_exact() {
        let text = "$7$101$09qWtzqKlrtJWn5d$qzMo6PvMjv+8qydl6f8PGHUhjhN7qasreqm71l+CKt7fUdMyjFmIau+hfrMrUXiy7Fthf5kYtK2zQkP9r6JQeQ==";
        let h = PasswordHash::parse(text).unwrap();
        assert!(h.verify(b"correct horse"));
        assert!(!h.verify(b"correct horse "));
        assert_eq!(h.encode(), text);
        // Re-hashing with the same salt reproduces mosquitto's bytes exactly.
        let PasswordHash::Sha512Pbkdf2 { salt, .. } = &h else {
            panic!("wrong kind")
        };
        let again = hash_password_with_salt(
            b"correct horse",
            Format::Sha512Pbkdf2 { iterations: 101 },
            salt,
        )
        .unwrap();
        assert_eq!(again.encode(), text);
    }

    #[test]
    fn sha512_is_password_then_salt() {
        let h = hash_password_with_salt(b"pw", Format::Sha512, &SALT).unwrap();
        let PasswordHash::Sha512 { hash, .. } = &h else {
            panic!("wrong kind")
        };
        let mut d = Sha512::new();
        d.update(b"pw0123456789ab");
        assert_eq!(hash.as_slice(), d.finalize().as_slice());
        let mut d = Sha512::new();
        d.update(b"0123456789abpw");
        assert_ne!(hash.as_slice(), d.finalize().as_slice());
    }

    #[test]
    fn written_entries_round_trip() {
        for format in [
            Format::Sha512,
            Format::Sha512Pbkdf2 { iterations: 7 },
            Format::Argon2id,
        ] {
            let line = hash_entry("dev-1", b"s3cret", format).unwrap();
            let hash = PasswordHash::parse(line.strip_prefix("dev-1:").unwrap()).unwrap();
            assert!(hash.verify(b"s3cret"), "{format:?}");
            assert!(!hash.verify(b"s3creT"), "{format:?}");
            assert_eq!(hash.encode(), line["dev-1:".len()..]);
        }
    }

    #[test]
    fn random_salts_differ() {
        let a = hash_entry("u", b"p", Format::Sha512).unwrap();
        let b = hash_entry("u", b"p", Format::Sha512).unwrap();
        assert_ne!(a, b);
        // 12 salt bytes are 16 base64 characters, as mosquitto_passwd 2.0 writes.
        assert_eq!(a.split('$').nth(2).unwrap().len(), 16);
    }

    #[test]
    fn argon2id_phc_entries() {
        let h = hash_password_with_salt(b"pw", Format::Argon2id, b"saltsaltsalt").unwrap();
        let text = h.encode();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        let parsed = PasswordHash::parse(&text).unwrap();
        assert!(parsed.verify(b"pw"));
        assert!(!parsed.verify(b"pW"));
        // Other argon2 variants are not accepted, nor truncated strings.
        assert!(PasswordHash::parse(&text.replace("argon2id", "argon2i")).is_err());
        assert!(PasswordHash::parse(&text[..text.rfind('$').unwrap()]).is_err());
        assert!(PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$").is_err());
    }

    #[test]
    fn argon2id_matches_the_reference_implementation() {
        // Both strings come from the reference argon2 CLI (Debian package `argon2`):
        //   echo -n 'correct horse' | argon2 saltsaltsalt -id -t 2 -k 19456 -p 1 -e
        //   echo -n 'password' | argon2 somesalt -id -t 2 -m 6 -p 1 -e
        let ours = hash_password_with_salt(b"correct horse", Format::Argon2id, b"saltsaltsalt")
            .unwrap()
            .encode();
        assert_eq!(
            ours,
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$sDq4SJydHwxWnLTlXqq5ZzNDfmXrJUlaeTohxQaFrio"
        );
        let h = PasswordHash::parse(
            "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHQ$FqGkmHNGCd0BRW2kBt6fPZ2pPmyGwwChL8FGUhTOSSI",
        )
        .unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"Password"));
    }

    #[test]
    fn malformed_hashes_are_rejected() {
        let good_hash = "Xc0sQnzW14+ShKPI76UlJufjEnbA/FJnhXaCzC7VoGvM2Q090D3MFkGn3t/ILpEN+/7EDMwn/hQ/gt+ZhDpY8Q==";
        for bad in [
            "",
            "plaintext",
            "$5$abc$def",
            "$6$",
            "$6$6unYQMxH2oNDbSPM",
            "$6$6unYQMxH2oNDbSPM$",
            "$6$!!!!$xyz",
            "$6$c2hvcnQ=$Xc0sQnzW14+ShKPI76UlJufjEnbA/FJnhXaCzC7VoGvM2Q090D3MFkGn3t/ILpEN+/7EDMwn/hQ/gt+ZhDpY8Q==",
            "$6$6unYQMxH2oNDbSPM$c2hvcnQ=",
            "$7$0$6unYQMxH2oNDbSPM$x",
            "$7$-1$6unYQMxH2oNDbSPM$x",
            "$7$ten$6unYQMxH2oNDbSPM$x",
            "$7$101$6unYQMxH2oNDbSPM",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(PasswordHash::parse(&format!("$6$6unYQMxH2oNDbSPM${good_hash}$extra")).is_err());
        assert!(PasswordHash::parse(&format!("$7$0$6unYQMxH2oNDbSPM${good_hash}")).is_err());
        assert!(PasswordHash::parse(&format!("$7$5$6unYQMxH2oNDbSPM${good_hash}")).is_ok());
    }

    #[test]
    fn writer_rejects_usernames_that_do_not_round_trip() {
        for bad in ["", "a:b", "#admin", " alice", "bob ", "new\nline"] {
            assert!(
                matches!(
                    hash_entry_with_salt(bad, b"p", Format::Sha512, &SALT),
                    Err(HashError::InvalidUsername(_))
                ),
                "{bad:?}"
            );
        }
        assert!(hash_entry_with_salt("user with space", b"p", Format::Sha512, &SALT).is_ok());
    }

    #[test]
    fn writer_rejects_bad_salts_and_iterations() {
        assert!(matches!(
            hash_entry_with_salt("u", b"p", Format::Sha512, b"short"),
            Err(HashError::InvalidSalt(_))
        ));
        assert!(hash_entry_with_salt("u", b"p", Format::Sha512, &[7u8; 64]).is_ok());
        assert!(matches!(
            hash_entry_with_salt("u", b"p", Format::Argon2id, b"1234567"),
            Err(HashError::InvalidSalt(_))
        ));
        assert_eq!(
            hash_entry_with_salt("u", b"p", Format::Sha512Pbkdf2 { iterations: 0 }, &SALT),
            Err(HashError::InvalidIterations)
        );
    }

    #[test]
    fn debug_does_not_leak_hash_material() {
        let h = hash_password_with_salt(b"pw", Format::Sha512, &SALT).unwrap();
        assert_eq!(format!("{h:?}"), "PasswordHash::Sha512");
        assert_eq!(Format::default(), Format::Sha512Pbkdf2 { iterations: 101 });
    }
}
