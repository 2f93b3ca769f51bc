//! Tests the template's `app.py` through its real component, built by
//! `wasp_plugin_harness::build_python` (cached in the target dir) and loaded by the broker's own plugin host.
//! The same tests as the Rust template's.

use std::path::{Path, PathBuf};

use wasp_plugin_harness::{
    AuthVerdict, Harness, Hooks, HostError, build_python, client, wasp_wit_dir,
};

fn wasm() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_python(dir, "app", &wasp_wit_dir(), "authenticator-plugin")
}

fn plugin() -> Harness {
    Harness::load(wasm())
        .config_json(r#"{"username": "alice"}"#)
        .build()
        .unwrap()
}

#[test]
fn the_configured_user_is_allowed() {
    let verdict =
        plugin().authenticate(client("c1").username("alice").password("x").auth_request());
    assert!(
        matches!(verdict, Ok(AuthVerdict::Allow(ref attributes)) if attributes.is_empty()),
        "{verdict:?}"
    );
}

#[test]
fn other_clients_are_deferred_to_the_next_plugin() {
    let plugin = plugin();
    let verdict = plugin.authenticate(client("c2").username("bob").auth_request());
    assert!(matches!(verdict, Ok(AuthVerdict::Defer)), "{verdict:?}");
    let verdict = plugin.authenticate(client("c3").auth_request());
    assert!(matches!(verdict, Ok(AuthVerdict::Defer)), "{verdict:?}");
}

#[test]
fn it_declares_authentication_only() {
    assert_eq!(plugin().interests().hooks, Hooks::AUTHENTICATE);
}

#[test]
fn a_config_without_username_is_refused() {
    let result = Harness::load(wasm())
        .config_json(r#"{"user": "alice"}"#)
        .build();
    match result {
        Err(HostError::InitRejected { message, .. }) => {
            assert!(message.contains("unknown field `user`"), "{message}");
        }
        Err(other) => panic!("expected the plugin to refuse its configuration, got {other}"),
        Ok(_) => panic!("expected the plugin to refuse its configuration"),
    }
}
