//! The password-file plugin through its real `.wasm`, loaded by the broker's own plugin host, reading
//! files from a granted directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasp_plugin_harness::{
    AuthVerdict, Denial, Harness, Hooks, HostError, LogLevel, SandboxLimits, client, plugin_wasm,
};
use wasp_plugin_password_file::{Format, hash_entry, hash_entry_with_salt};

/// The users of `fixtures/mosquitto-2.0.11.passwd` (written by `mosquitto_passwd` 2.0.11) and their
/// passwords: `$7$` with 101 and 1000 iterations, `$6$`, and awkward characters.
const FIXTURE_USERS: [(&str, &str); 6] = [
    ("pbkdf2-default", "pbkdf2-default-pw"),
    ("pbkdf2-1000", "pbkdf2-1000-pw"),
    ("sha512", "sha512-pw"),
    ("colon", "a:b$c d"),
    ("user with spaces", "pässwörd ✓"),
    ("empty-ish", " "),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(dir: &Path, config_toml: &str) -> Result<Harness, HostError> {
    Harness::load(plugin_wasm!())
        .dir(dir, "/etc/wasp")
        .config_toml(config_toml)
        .build()
}

fn fixture_plugin(config_toml: &str) -> Harness {
    load(&fixtures(), config_toml).unwrap()
}

const FIXTURE_CONFIG: &str = "file = '/etc/wasp/mosquitto-2.0.11.passwd'";

fn authenticate(plugin: &Harness, user: &str, password: &str) -> AuthVerdict {
    plugin
        .authenticate(
            client("c1")
                .username(user)
                .password(password)
                .auth_request(),
        )
        .unwrap()
}

fn allowed(user: &str) -> AuthVerdict {
    AuthVerdict::Allow(vec![("username".to_owned(), user.to_owned())])
}

fn refused() -> AuthVerdict {
    AuthVerdict::Deny(Denial {
        reason_code: 0x86,
        reason: Some("bad user name or password".to_owned()),
    })
}

fn line(user: &str, password: &str) -> String {
    hash_entry_with_salt(user, password.as_bytes(), Format::Sha512, b"0123456789ab").unwrap() + "\n"
}

/// Writes `content` to `path` and gives it the modification time `mtime_secs` (seconds after the epoch),
/// so that every rewrite has a distinct modification time whatever the file system's granularity.
fn write(path: &Path, content: &str, mtime_secs: u64) {
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
        .unwrap();
}

fn init_error(result: Result<Harness, HostError>) -> String {
    match result {
        Err(HostError::InitRejected { message, .. }) => message,
        Err(other) => panic!("expected init to refuse the configuration, got {other}"),
        Ok(_) => panic!("expected init to refuse the configuration"),
    }
}

fn logged(plugin: &Harness, level: LogLevel, needle: &str) -> usize {
    plugin
        .logs()
        .iter()
        .filter(|r| r.level == level && r.message.contains(needle))
        .count()
}

#[test]
fn every_mosquitto_passwd_format_is_allowed_with_its_password_only() {
    let plugin = fixture_plugin(FIXTURE_CONFIG);
    assert_eq!(plugin.interests().hooks, Hooks::AUTHENTICATE);
    assert!(plugin.interests().publish_filters.is_empty());
    for (user, password) in FIXTURE_USERS {
        assert_eq!(
            authenticate(&plugin, user, password),
            allowed(user),
            "{user}"
        );
        assert_eq!(
            authenticate(&plugin, user, &format!("{password}x")),
            refused(),
            "{user}"
        );
        assert_eq!(authenticate(&plugin, user, ""), refused(), "{user}");
    }
    assert_eq!(
        logged(&plugin, LogLevel::Info, "password file loaded"),
        1,
        "{:?}",
        plugin.logs()
    );
}

#[test]
fn argon2id_entries_verify_in_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let entry = hash_entry("argon", b"argon-pw", Format::Argon2id).unwrap();
    assert!(entry.starts_with("argon:$argon2id$v=19$"), "{entry}");
    write(&dir.path().join("passwd"), &format!("{entry}\n"), 1_000);
    // argon2id with its default parameters (19 MiB, 2 passes) takes ~50-60 ms in the sandbox, close to
    // the default 100 ms call budget on a busy test machine: the budget here is generous, the test is
    // about correctness.
    let plugin = Harness::load(plugin_wasm!())
        .dir(dir.path(), "/etc/wasp")
        .config_toml("file = '/etc/wasp/passwd'")
        .limits(SandboxLimits {
            call_timeout: Duration::from_secs(5),
            ..SandboxLimits::default()
        })
        .build()
        .unwrap();
    assert_eq!(authenticate(&plugin, "argon", "argon-pw"), allowed("argon"));
    assert_eq!(authenticate(&plugin, "argon", "argon-pX"), refused());
}

#[test]
fn a_known_user_without_a_password_is_refused() {
    let plugin = fixture_plugin(FIXTURE_CONFIG);
    let verdict = plugin
        .authenticate(client("c1").username("sha512").auth_request())
        .unwrap();
    assert_eq!(verdict, refused());
}

#[test]
fn unknown_users_are_refused_or_deferred_as_configured() {
    let plugin = fixture_plugin(FIXTURE_CONFIG);
    assert_eq!(authenticate(&plugin, "mallory", "sha512-pw"), refused());
    let refusals = plugin
        .logs()
        .into_iter()
        .filter(|r| r.message == "authentication refused")
        .collect::<Vec<_>>();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0]
            .fields
            .contains(&("why".to_owned(), "unknown user".to_owned())),
        "{refusals:?}"
    );

    let plugin = fixture_plugin(&format!(
        "{FIXTURE_CONFIG}\nallow_unknown_users_to_defer = true"
    ));
    assert_eq!(authenticate(&plugin, "mallory", "x"), AuthVerdict::Defer);
    // Known users are still checked.
    assert_eq!(authenticate(&plugin, "sha512", "x"), refused());
    assert_eq!(
        authenticate(&plugin, "sha512", "sha512-pw"),
        allowed("sha512")
    );
}

#[test]
fn clients_without_a_username_are_deferred() {
    let plugin = fixture_plugin(FIXTURE_CONFIG);
    let verdict = plugin.authenticate(client("anon").auth_request()).unwrap();
    assert_eq!(verdict, AuthVerdict::Defer);
    let verdict = plugin
        .authenticate(client("anon").password("sha512-pw").auth_request())
        .unwrap();
    assert_eq!(verdict, AuthVerdict::Defer);
}

#[test]
fn a_changed_file_is_reloaded_once_reload_secs_have_passed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    write(&file, &line("alice", "one"), 1_000);
    let plugin = load(dir.path(), "file = '/etc/wasp/passwd'\nreload_secs = 10").unwrap();
    assert_eq!(authenticate(&plugin, "alice", "one"), allowed("alice"));
    assert_eq!(authenticate(&plugin, "bob", "b"), refused());

    write(
        &file,
        &format!("{}{}", line("alice", "two"), line("bob", "b")),
        2_000,
    );
    // Not due yet: the old table answers.
    plugin.clock().advance(Duration::from_secs(9));
    assert_eq!(authenticate(&plugin, "bob", "b"), refused());
    assert_eq!(authenticate(&plugin, "alice", "one"), allowed("alice"));

    plugin.clock().advance(Duration::from_secs(1));
    assert_eq!(authenticate(&plugin, "bob", "b"), allowed("bob"));
    assert_eq!(authenticate(&plugin, "alice", "one"), refused());
    assert_eq!(authenticate(&plugin, "alice", "two"), allowed("alice"));
    let reloads: Vec<_> = plugin
        .logs()
        .into_iter()
        .filter(|r| r.message == "password file reloaded")
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert!(
        reloads[0]
            .fields
            .contains(&("users".to_owned(), "2".to_owned())),
        "{reloads:?}"
    );
}

#[test]
fn a_broken_file_keeps_the_old_table_until_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    write(&file, &line("alice", "one"), 1_000);
    let plugin = load(dir.path(), "file = '/etc/wasp/passwd'\nreload_secs = 0").unwrap();

    write(&file, &format!("{}bob\n", line("alice", "new")), 2_000);
    assert_eq!(authenticate(&plugin, "alice", "one"), allowed("alice"));
    assert_eq!(authenticate(&plugin, "alice", "new"), refused());
    let warnings: Vec<_> = plugin
        .logs()
        .into_iter()
        .filter(|r| r.level == LogLevel::Warn)
        .collect();
    // Logged once: the broken file is not parsed again until it changes.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("keeping the previous one")
            && warnings[0].message.contains("line 2"),
        "{warnings:?}"
    );
    assert!(
        warnings[0]
            .fields
            .contains(&("file".to_owned(), "/etc/wasp/passwd".to_owned())),
        "{warnings:?}"
    );

    // A file that disappears is a logged failure too; the table stays.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(authenticate(&plugin, "alice", "one"), allowed("alice"));
    assert_eq!(
        logged(&plugin, LogLevel::Warn, "cannot stat the password file"),
        1
    );

    write(&file, &line("alice", "fixed"), 3_000);
    assert_eq!(authenticate(&plugin, "alice", "fixed"), allowed("alice"));
    assert_eq!(authenticate(&plugin, "alice", "one"), refused());
}

#[test]
fn bad_configurations_are_rejected_at_init() {
    let message = init_error(load(&fixtures(), "reload_secs = 5"));
    assert!(message.contains("missing field `file`"), "{message}");

    let message = init_error(load(&fixtures(), &format!("{FIXTURE_CONFIG}\nreload = 5")));
    assert!(message.contains("unknown field `reload`"), "{message}");

    let message = init_error(load(&fixtures(), "file = '/etc/wasp/no-such-file'"));
    assert!(
        message.contains("cannot read the password file /etc/wasp/no-such-file"),
        "{message}"
    );

    // The directory was not granted: the plugin sees no file system at all.
    let message = init_error(
        Harness::load(plugin_wasm!())
            .config_toml(FIXTURE_CONFIG)
            .build(),
    );
    assert!(
        message.contains("is its directory granted to the plugin?"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("passwd"),
        &format!("{}alice:$6$bad\n", line("bob", "b")),
        1_000,
    );
    let message = init_error(load(dir.path(), "file = '/etc/wasp/passwd'"));
    assert!(
        message.starts_with("password file /etc/wasp/passwd: line 2:"),
        "{message}"
    );
}
