//! The acl-file plugin through its real `.wasm`, loaded by the broker's own plugin host, reading the ACL
//! file from a granted directory.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;
use wasp_plugin_harness::{
    AuthzVerdict, Decision, Denial, Harness, Hooks, HostError, LogLevel, Qos, Session,
    SubscribeDecision, SubscribeVerdict, client, plugin_wasm,
};

/// The example of mosquitto.conf(5) (`aclfile.example`), with more user rules, `deny` rules and patterns.
const ACL: &str = "\
# This affects access control for clients with no username.
topic read $SYS/#
topic read public/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar
topic readwrite foo/+/status
topic deny foo/secret/status
topic read sensors/#
topic deny sensors/private/#

user sue
topic write sensors/sue/#

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
pattern readwrite devices/%u/#
pattern read inbox/%c/#
";

/// Writes `content` to `path` and gives it the modification time `mtime_secs` (seconds after the epoch),
/// so that every rewrite has a distinct modification time whatever the file system's granularity.
fn write(path: &Path, content: &str, mtime_secs: u64) {
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
        .unwrap();
}

fn load(dir: &Path, config_toml: &str) -> Result<Harness, HostError> {
    Harness::load(plugin_wasm!())
        .dir(dir, "/etc/wasp")
        .config_toml(config_toml)
        .build()
}

/// The plugin over `content` in a fresh directory (kept alive with it).
fn plugin_with(content: &str) -> (Harness, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("acl"), content, 1_000);
    let plugin = load(dir.path(), "file = '/etc/wasp/acl'").unwrap();
    (plugin, dir)
}

fn anonymous(client_id: &str) -> Session {
    client(client_id).session(&[])
}

fn user(client_id: &str, username: &str) -> Session {
    client(client_id)
        .username(username)
        .session(&[("username", username)])
}

fn may_publish(plugin: &Harness, session: &Session, topic: &str) -> bool {
    let verdict = plugin
        .authorize_publish(session, topic, Qos::AtLeastOnce, false)
        .unwrap();
    assert_eq!(verdict.cache_seconds, Some(5), "{verdict:?}");
    match verdict.decision {
        Decision::Allow => true,
        Decision::Deny(denial) => {
            assert_eq!(denial, not_authorized());
            false
        }
        Decision::Defer => panic!("the ACL file decides every publish"),
    }
}

fn may_subscribe(plugin: &Harness, session: &Session, filter: &str) -> bool {
    let verdict = plugin
        .authorize_subscribe(session, filter, Qos::ExactlyOnce)
        .unwrap();
    assert_eq!(verdict.cache_seconds, Some(5), "{verdict:?}");
    match verdict.decision {
        // Granted at the QoS asked for.
        SubscribeDecision::Allow(qos) => {
            assert_eq!(qos, Qos::ExactlyOnce);
            true
        }
        SubscribeDecision::Deny(denial) => {
            assert_eq!(denial, not_authorized());
            false
        }
        SubscribeDecision::Defer => panic!("the ACL file decides every subscription"),
    }
}

fn not_authorized() -> Denial {
    Denial {
        reason_code: 0x87,
        reason: Some("not authorized".to_owned()),
    }
}

fn init_error(result: Result<Harness, HostError>) -> String {
    match result {
        Err(HostError::InitRejected { message, .. }) => message,
        Err(other) => panic!("expected init to refuse the configuration, got {other}"),
        Ok(_) => panic!("expected init to refuse the configuration"),
    }
}

#[test]
fn it_declares_both_authorization_hooks_for_every_topic() {
    let (plugin, _dir) = plugin_with(ACL);
    assert_eq!(
        plugin.interests().hooks,
        Hooks::AUTHORIZE_PUBLISH | Hooks::AUTHORIZE_SUBSCRIBE
    );
    assert!(plugin.interests().publish_filters.is_empty());
}

#[test]
fn clients_without_a_username_get_the_rules_before_the_first_user_line() {
    let (plugin, _dir) = plugin_with(ACL);
    let anon = anonymous("anon");
    assert!(may_subscribe(&plugin, &anon, "$SYS/#"));
    assert!(may_subscribe(&plugin, &anon, "$SYS/broker/+"));
    assert!(may_subscribe(&plugin, &anon, "public/+/x"));
    assert!(!may_publish(&plugin, &anon, "$SYS/broker/uptime"));
    assert!(!may_publish(&plugin, &anon, "public/a"));
    assert!(!may_subscribe(&plugin, &anon, "#"));
    assert!(!may_subscribe(&plugin, &anon, "foo/bar"));
    // A user is not anonymous: roger does not get the anonymous $SYS rule.
    assert!(!may_subscribe(&plugin, &user("r", "roger"), "$SYS/#"));
}

#[test]
fn user_sections_with_deny_rules() {
    let (plugin, _dir) = plugin_with(ACL);
    let roger = user("r", "roger");
    assert!(may_publish(&plugin, &roger, "foo/bar"));
    assert!(may_subscribe(&plugin, &roger, "foo/bar"));
    assert!(!may_publish(&plugin, &roger, "foo/baz"));
    assert!(may_publish(&plugin, &roger, "foo/kitchen/status"));
    // `deny` rules come first wherever they are written.
    assert!(!may_publish(&plugin, &roger, "foo/secret/status"));
    // Read-only.
    assert!(!may_publish(&plugin, &roger, "sensors/kitchen"));

    let sue = user("s", "sue");
    assert!(may_publish(&plugin, &sue, "sensors/sue/temp"));
    assert!(!may_subscribe(&plugin, &sue, "sensors/sue/#"));
    assert!(!may_publish(&plugin, &sue, "foo/bar"));

    // A username without a section has only the patterns.
    let eve = user("e", "eve");
    assert!(!may_publish(&plugin, &eve, "foo/bar"));
    assert!(!may_subscribe(&plugin, &eve, "public/#"));
}

#[test]
fn subscriptions_with_wildcards_need_the_whole_filter_readable() {
    let (plugin, _dir) = plugin_with(ACL);
    let roger = user("r", "roger");
    assert!(may_subscribe(&plugin, &roger, "sensors/kitchen/#"));
    assert!(may_subscribe(&plugin, &roger, "sensors/kitchen/+/temp"));
    // `sensors/private/#` is denied, and overlaps these.
    assert!(!may_subscribe(&plugin, &roger, "sensors/#"));
    assert!(!may_subscribe(&plugin, &roger, "sensors/+/temp"));
    assert!(!may_subscribe(&plugin, &roger, "sensors/+/temp/+"));
    assert!(!may_subscribe(&plugin, &roger, "sensors/private/x"));
    // `foo/secret/status` is denied and `foo/+/status` would receive it.
    assert!(!may_subscribe(&plugin, &roger, "foo/+/status"));
    assert!(may_subscribe(&plugin, &roger, "foo/kitchen/status"));
    // Nothing covers the whole tree.
    assert!(!may_subscribe(&plugin, &roger, "#"));
    assert!(!may_subscribe(&plugin, &roger, "+/bar"));
}

#[test]
fn patterns_substitute_the_client_id_and_the_username() {
    let (plugin, _dir) = plugin_with(ACL);
    let roger = user("dev1", "roger");
    assert!(may_publish(
        &plugin,
        &roger,
        "$SYS/broker/connection/dev1/state"
    ));
    assert!(!may_publish(
        &plugin,
        &roger,
        "$SYS/broker/connection/dev2/state"
    ));
    assert!(may_publish(&plugin, &roger, "devices/roger/temp"));
    assert!(may_subscribe(&plugin, &roger, "devices/roger/#"));
    assert!(!may_publish(&plugin, &roger, "devices/sue/temp"));
    assert!(!may_subscribe(&plugin, &roger, "devices/+/temp"));
    assert!(may_subscribe(&plugin, &roger, "inbox/dev1/#"));
    assert!(!may_subscribe(&plugin, &roger, "inbox/dev2/#"));
    assert!(!may_publish(&plugin, &roger, "inbox/dev1/x"));

    // Patterns apply to anonymous clients too, but `%u` ones need a username.
    let anon = anonymous("anon7");
    assert!(may_publish(
        &plugin,
        &anon,
        "$SYS/broker/connection/anon7/state"
    ));
    assert!(may_subscribe(&plugin, &anon, "inbox/anon7/+"));
    assert!(!may_publish(&plugin, &anon, "devices//temp"));

    // A client id with a wildcard gets no pattern access at all.
    let wild = user("dev+", "roger");
    assert!(!may_publish(&plugin, &wild, "devices/roger/temp"));
    assert!(!may_subscribe(&plugin, &wild, "inbox/dev+/#"));
    // Its own rules still apply.
    assert!(may_publish(&plugin, &wild, "foo/bar"));
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl");
    write(&file, "user roger\ntopic foo/bar\n", 1_000);
    let plugin = load(dir.path(), "file = '/etc/wasp/acl'").unwrap();
    let roger = user("r", "roger");
    assert!(may_publish(&plugin, &roger, "foo/bar"));
    assert!(!may_publish(&plugin, &roger, "foo/baz"));

    write(&file, "user roger\ntopic foo/baz\n", 2_000);
    // Checked at most every 5 s.
    plugin.clock().advance(Duration::from_secs(4));
    assert!(may_publish(&plugin, &roger, "foo/bar"));
    plugin.clock().advance(Duration::from_secs(1));
    assert!(!may_publish(&plugin, &roger, "foo/bar"));
    assert!(may_publish(&plugin, &roger, "foo/baz"));
    let logs = plugin.logs();
    assert_eq!(
        logs.iter()
            .filter(|r| r.message == "ACL file reloaded")
            .count(),
        1,
        "{logs:?}"
    );

    write(&file, "user roger\ntopic sometimes foo/bar\n", 3_000);
    plugin.clock().advance(Duration::from_secs(5));
    assert!(may_publish(&plugin, &roger, "foo/baz"));
    assert!(!may_publish(&plugin, &roger, "foo/bar"));
    plugin.clock().advance(Duration::from_secs(5));
    assert!(may_publish(&plugin, &roger, "foo/baz"));
    let warnings: Vec<_> = plugin
        .logs()
        .into_iter()
        .filter(|r| r.level == LogLevel::Warn)
        .collect();
    // Logged once: the broken file is not parsed again until it changes.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("keeping the previous one")
            && warnings[0].message.contains("line 2")
            && warnings[0]
                .fields
                .contains(&("file".to_owned(), "/etc/wasp/acl".to_owned())),
        "{warnings:?}"
    );

    write(&file, "user roger\ntopic read foo/#\n", 4_000);
    plugin.clock().advance(Duration::from_secs(5));
    assert!(!may_publish(&plugin, &roger, "foo/baz"));
    assert!(may_subscribe(&plugin, &roger, "foo/#"));
}

#[test]
fn verdicts_are_typed_with_reason_and_cache_lifetime() {
    let (plugin, _dir) = plugin_with(ACL);
    let roger = user("r", "roger");
    assert_eq!(
        plugin
            .authorize_publish(&roger, "foo/bar", Qos::AtMostOnce, true)
            .unwrap(),
        AuthzVerdict {
            decision: Decision::Allow,
            cache_seconds: Some(5),
        }
    );
    assert_eq!(
        plugin
            .authorize_subscribe(&roger, "foo/baz", Qos::AtMostOnce)
            .unwrap(),
        SubscribeVerdict {
            decision: SubscribeDecision::Deny(not_authorized()),
            cache_seconds: Some(5),
        }
    );
}

#[test]
fn bad_configurations_are_rejected_at_init() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("acl"),
        "user roger\ntopic foo/#/bar\n",
        1_000,
    );

    let message = init_error(load(dir.path(), ""));
    assert!(message.contains("missing field `file`"), "{message}");
    let message = init_error(load(dir.path(), "file = '/etc/wasp/acl'\nreload_secs = 1"));
    assert!(message.contains("unknown field `reload_secs`"), "{message}");
    let message = init_error(load(dir.path(), "file = '/etc/wasp/missing'"));
    assert!(
        message.contains("cannot read the ACL file /etc/wasp/missing"),
        "{message}"
    );
    let message = init_error(
        Harness::load(plugin_wasm!())
            .config_toml("file = '/etc/wasp/acl'")
            .build(),
    );
    assert!(
        message.contains("is its directory granted to the plugin?"),
        "{message}"
    );
    let message = init_error(load(dir.path(), "file = '/etc/wasp/acl'"));
    assert!(
        message.starts_with("ACL file /etc/wasp/acl: line 2: invalid topic filter"),
        "{message}"
    );
}
