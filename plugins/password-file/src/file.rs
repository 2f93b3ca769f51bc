//! The password file: `username:hash` lines.

use std::collections::HashMap;
use std::fmt;

use crate::hash::PasswordHash;

/// A line of the file that cannot be used, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The result of checking a username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Ok,
    BadPassword,
    UnknownUser,
}

/// A parsed password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Parses the text of a password file.
    ///
    /// Blank lines and lines starting with `#` are skipped; every other line must be `username:hash`
    /// (white space around either part is trimmed, as mosquitto does). Where mosquitto only logs a
    /// warning and skips the line (no `:`, an empty username, an undecodable hash, a duplicate user),
    /// this is an error: a half-read file is not loaded.
    pub fn parse(text: &str) -> Result<PasswordFile, ParseError> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ParseError { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((username, hash)) = trimmed.split_once(':') else {
                return Err(err("expected username:hash".into()));
            };
            let username = username.trim();
            let hash = hash.trim();
            if username.is_empty() {
                return Err(err("empty username".into()));
            }
            if username.len() > 65535 {
                return Err(err("username longer than 65535 bytes".into()));
            }
            if hash.contains(':') {
                return Err(err("more than one ':' on the line".into()));
            }
            let hash =
                PasswordHash::parse(hash).map_err(|m| err(format!("user {username:?}: {m}")))?;
            if users.insert(username.to_owned(), hash).is_some() {
                return Err(err(format!("duplicate user {username:?}")));
            }
        }
        Ok(PasswordFile { users })
    }

    /// Checks `password` for `username`; the hash comparison is constant-time.
    pub fn verify(&self, username: &str, password: &[u8]) -> Verify {
        match self.users.get(username) {
            None => Verify::UnknownUser,
            Some(hash) if hash.verify(password) => Verify::Ok,
            Some(_) => Verify::BadPassword,
        }
    }

    /// Whether the file has an entry for `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The decoded hash of `username`'s entry.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Format, hash_entry_with_salt};

    fn entry(user: &str, password: &str) -> String {
        hash_entry_with_salt(
            user,
            password.as_bytes(),
            Format::Sha512Pbkdf2 { iterations: 2 },
            b"0123456789ab",
        )
        .unwrap()
    }

    #[test]
    fn verifies_known_unknown_and_wrong() {
        let text = format!(
            "# comment\n\n{}\n  {}  \r\n",
            entry("alice", "a-pass"),
            entry("bob smith", "b-pass")
        );
        let file = PasswordFile::parse(&text).unwrap();
        assert_eq!(file.len(), 2);
        assert_eq!(file.verify("alice", b"a-pass"), Verify::Ok);
        assert_eq!(file.verify("alice", b"b-pass"), Verify::BadPassword);
        assert_eq!(file.verify("bob smith", b"b-pass"), Verify::Ok);
        assert_eq!(file.verify("carol", b"a-pass"), Verify::UnknownUser);
        // Usernames are case-sensitive and not trimmed at lookup.
        assert_eq!(file.verify("Alice", b"a-pass"), Verify::UnknownUser);
        assert_eq!(file.verify("alice ", b"a-pass"), Verify::UnknownUser);
    }

    #[test]
    fn white_space_around_the_colon_is_trimmed() {
        let e = entry("dave", "d");
        let spaced = e.replacen(':', " :\t", 1);
        let file = PasswordFile::parse(&spaced).unwrap();
        assert_eq!(file.verify("dave", b"d"), Verify::Ok);
    }

    #[test]
    fn empty_file_has_no_users() {
        let file = PasswordFile::parse("").unwrap();
        assert!(file.is_empty());
        assert_eq!(file.verify("x", b""), Verify::UnknownUser);
    }

    #[test]
    fn errors_name_the_line() {
        let good = entry("alice", "a");
        let cases = [
            (
                format!("{good}\nno-colon-here\n"),
                2,
                "expected username:hash",
            ),
            (format!("\n\n:{}\n", &good[6..]), 3, "empty username"),
            (format!("{good}\n{good}\n"), 2, "duplicate user"),
            ("eve:plaintext\n".to_owned(), 1, "not a password hash"),
            (format!("{good}:extra\n"), 1, "more than one ':'"),
            ("mallory:$6$abc$def\n".to_owned(), 1, "user \"mallory\""),
        ];
        for (text, line, needle) in cases {
            let e = PasswordFile::parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }
}
