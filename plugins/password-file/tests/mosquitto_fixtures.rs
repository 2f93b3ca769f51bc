//! Entries written by the real `mosquitto_passwd` 2.0.11 (see `fixtures/generate.sh`).

use wasp_plugin_password_file::{PasswordFile, PasswordHash, Verify};

const FILE: &str = include_str!("fixtures/mosquitto-2.0.11.passwd");

const USERS: [(&str, &str); 6] = [
    ("pbkdf2-default", "pbkdf2-default-pw"),
    ("pbkdf2-1000", "pbkdf2-1000-pw"),
    ("sha512", "sha512-pw"),
    ("colon", "a:b$c d"),
    ("user with spaces", "pässwörd ✓"),
    ("empty-ish", " "),
];

#[test]
fn every_fixture_user_verifies_with_its_password_only() {
    let file = PasswordFile::parse(FILE).unwrap();
    assert_eq!(file.len(), USERS.len());
    for (user, pw) in USERS {
        assert_eq!(file.verify(user, pw.as_bytes()), Verify::Ok, "{user}");
        for (_, other) in USERS.iter().filter(|(u, _)| *u != user) {
            assert_eq!(
                file.verify(user, other.as_bytes()),
                Verify::BadPassword,
                "{user}"
            );
        }
        assert_eq!(file.verify(user, b""), Verify::BadPassword, "{user}");
    }
    assert_eq!(file.verify("nobody", b"x"), Verify::UnknownUser);
}

#[test]
fn fixture_kinds_and_iterations_are_read() {
    let file = PasswordFile::parse(FILE).unwrap();
    assert!(matches!(
        file.get("pbkdf2-default"),
        Some(PasswordHash::Sha512Pbkdf2 { iterations: 101, salt, .. }) if salt.len() == 12
    ));
    assert!(matches!(
        file.get("pbkdf2-1000"),
        Some(PasswordHash::Sha512Pbkdf2 {
            iterations: 1000,
            ..
        })
    ));
    assert!(
        matches!(file.get("sha512"), Some(PasswordHash::Sha512 { salt, .. }) if salt.len() == 12)
    );
}

#[test]
fn fixture_entries_reencode_byte_for_byte() {
    for line in FILE.lines() {
        let (_, hash) = line.split_once(':').unwrap();
        assert_eq!(PasswordHash::parse(hash).unwrap().encode(), hash);
    }
}
