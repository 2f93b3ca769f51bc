//! The harness against the plugin host's guest test programs.

use std::path::Path;
use std::time::Duration;

use wasp_plugin_harness::*;
use wasp_plugin_host::test_programs as guests;

#[test]
fn typed_calls_reach_the_plugin_with_toml_config() {
    let plugin = Harness::load(guests::ALLOW_DENY)
        .config_toml("users = ['alice']\nfilters = ['a/#']\ntag = 'T'")
        .build()
        .unwrap();
    assert_eq!(plugin.interests().publish_filters, ["a/#"]);
    assert_eq!(
        plugin.exports(),
        Exports {
            authenticator: true,
            authorizer: true,
            transformer: true,
            cacheable_transformer: false,
            stamping_transformer: false,
            sized_transformer: false,
            ticker: true,
            storage: false,
        }
    );

    let alice = client("c1").username("alice").password("pw");
    assert_eq!(
        plugin.authenticate(alice.clone().auth_request()).unwrap(),
        AuthVerdict::Allow(vec![("user".to_owned(), "alice".to_owned())])
    );
    assert!(matches!(
        plugin
            .authenticate(client("c2").username("eve").auth_request())
            .unwrap(),
        AuthVerdict::Deny(Denial {
            reason_code: 0x86,
            ..
        })
    ));
    let session = alice.session(&[("user", "alice")]);
    let verdict = plugin
        .authorize_publish(&session, "allow/x", Qos::AtLeastOnce, false)
        .unwrap();
    assert_eq!(verdict.decision, Decision::Allow);
    let verdict = plugin
        .authorize_subscribe(&session, "deny/#", Qos::AtMostOnce)
        .unwrap();
    assert!(matches!(verdict.decision, SubscribeDecision::Deny(_)));
    match plugin.transform(&session, message("a/b", "x")).unwrap() {
        TransformVerdict::Modify(patch) => {
            assert_eq!(patch.payload.as_deref(), Some(&b"X"[..]));
            assert_eq!(patch.user_properties.unwrap()[0].value, "T");
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(plugin.metrics(), vec![("authenticate".to_owned(), 2)]);
    assert_eq!(plugin.kv().get("seen"), Some(2u64.to_le_bytes().to_vec()));
    let logs = plugin.logs();
    assert!(
        logs.iter()
            .any(|r| r.message == "initialised" && r.fields[0].1 == "a/#"),
        "{logs:?}"
    );
    assert_eq!(plugin.stats().total_calls(), 5);
}

#[test]
fn the_clock_is_the_tests() {
    let plugin = Harness::load(guests::ALLOW_DENY)
        .config_json(r#"{"users": ["alice"], "expires_at": 1700000060000}"#)
        .build()
        .unwrap();
    let request = || client("c1").username("alice").auth_request();
    assert!(matches!(
        plugin.authenticate(request()).unwrap(),
        AuthVerdict::Allow(_)
    ));
    plugin.clock().advance(Duration::from_secs(60));
    assert!(matches!(
        plugin.authenticate(request()).unwrap(),
        AuthVerdict::Deny(_)
    ));
    plugin.clock().set_millis(0);
    assert!(matches!(
        plugin.authenticate(request()).unwrap(),
        AuthVerdict::Allow(_)
    ));
}

#[test]
fn enhanced_auth_round_trip() {
    let plugin = Harness::load(guests::ALLOW_DENY).build().unwrap();
    let first = client("c1").auth("challenge", None).auth_request();
    assert_eq!(
        plugin.authenticate(first).unwrap(),
        AuthVerdict::Continue(b"question".to_vec())
    );
    let answer = client("c1")
        .auth("challenge", Some(b"answer"))
        .auth_request();
    assert!(matches!(
        plugin.authenticate(answer).unwrap(),
        AuthVerdict::Allow(_)
    ));
}

#[test]
fn faults_surface_as_call_errors_with_production_limits() {
    let plugin = Harness::load(guests::TRAP).build().unwrap();
    let boom = client("c1").username("boom").auth_request();
    assert!(matches!(plugin.authenticate(boom), Err(CallError::Trap(_))));
    assert!(
        plugin
            .logs()
            .iter()
            .any(|r| r.message.contains("guest panics on purpose"))
    );
    assert!(
        plugin
            .authenticate(client("c1").username("ok").auth_request())
            .is_ok()
    );

    let plugin = Harness::load(guests::SPIN)
        .limits(SandboxLimits {
            call_timeout: Duration::from_millis(50),
            ..SandboxLimits::default()
        })
        .build()
        .unwrap();
    assert_eq!(
        plugin.authenticate(client("c1").username("spin").auth_request()),
        Err(CallError::Timeout)
    );
}

#[test]
fn init_rejection_is_a_load_error() {
    let error = Harness::load(guests::INIT_REJECT)
        .build()
        .err()
        .expect("init must reject `{}`");
    assert!(
        matches!(error, HostError::InitRejected { ref message, .. } if message.contains("token")),
        "{error:?}"
    );
    assert!(
        Harness::load(guests::INIT_REJECT)
            .config_toml("token = 'x'")
            .build()
            .is_ok()
    );
}

#[test]
fn granted_directories_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.txt"), "alice").unwrap();
    let plugin = Harness::load(guests::FS_PROBE)
        .dir(dir.path(), "/etc/plugin")
        .build()
        .unwrap();
    let session = client("c1").session(&[]);
    let read = |topic: &str| match plugin.transform(&session, message(topic, "")).unwrap() {
        TransformVerdict::Modify(patch) => String::from_utf8(patch.payload.unwrap()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(read("read//etc/plugin/users.txt"), "ok:alice");
    assert!(read("read//etc/passwd").starts_with("err:"));
}

#[test]
fn build_wasm_builds_a_plugin_crate_to_a_component() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../broker/plugin-host/test-programs/auth-only");
    let wasm = build_wasm(&crate_dir);
    assert_eq!(wasm.extension().unwrap(), "wasm");
    assert!(
        wasm.to_string_lossy().contains("wasp-plugins"),
        "{}",
        wasm.display()
    );
    let plugin = Harness::load(&wasm).build().unwrap();
    assert!(matches!(
        plugin.authenticate(client("c1").auth_request()).unwrap(),
        AuthVerdict::Allow(_)
    ));
    // Built once per process.
    assert_eq!(build_wasm(&crate_dir), wasm);
}
