//! The storage-redis plugin through its real `.wasm`, loaded by the broker's own plugin host, talking to
//! a real `redis-server` on loopback through the sockets its grant lists.

use wasp_plugin_harness::redis::RedisServer;
use wasp_plugin_harness::{Harness, HostError, plugin_wasm};

fn load(server: &RedisServer, grant: bool) -> Result<Harness, HostError> {
    let builder = Harness::load(plugin_wasm!())
        .config_toml(&format!("address = '{}'\nprefix = 'test'", server.addr()));
    let builder = if grant {
        builder.sockets([server.addr()])
    } else {
        builder
    };
    builder.build()
}

#[test]
fn keeps_the_storage_contract() {
    let server = RedisServer::start().unwrap();
    wasp_plugin_harness::conformance::storage_backend(|| load(&server, true).unwrap());
    // In Redis, under the configured prefix: the keyspace's hash and its order.
    assert_eq!(server.command(&["HLEN", "{test}:messages"]).unwrap(), ":2");
    assert_eq!(
        server.command(&["ZCARD", "{test}:messages:order"]).unwrap(),
        ":2"
    );
}

#[test]
fn without_the_sockets_grant_init_names_it() {
    let server = RedisServer::start().unwrap();
    let error = load(&server, false).err().expect("no grant, no connection");
    let message = error.to_string();
    assert!(
        message.contains(&format!("sockets = [\"{}\"]", server.addr())),
        "{message}"
    );
}

#[test]
fn a_server_that_does_not_sync_every_write_is_refused() {
    let server = RedisServer::start().unwrap();
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "appendfsync", "everysec"])
            .unwrap(),
        "+OK"
    );
    let message = load(&server, true).err().expect("refused").to_string();
    assert!(
        message.contains("appendfsync everysec") && message.contains("require_fsync = false"),
        "{message}"
    );
    // The operator's explicit opt-out is accepted.
    Harness::load(plugin_wasm!())
        .sockets([server.addr()])
        .config_toml(&format!(
            "address = '{}'\nrequire_fsync = false",
            server.addr()
        ))
        .build()
        .unwrap();
}
