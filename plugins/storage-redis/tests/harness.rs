//! The storage-redis plugin through its real `.wasm`, loaded by the broker's own plugin host, talking to
//! a real `redis-server` on loopback through the sockets its grant lists.

use wasp_plugin_harness::redis::RedisServer;
use wasp_plugin_harness::storage::{Key, Keyspace, Op};
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

fn key(keyspace: Keyspace, name: &str, seq: u64) -> Key {
    Key {
        keyspace,
        name: name.to_owned(),
        seq,
    }
}

#[test]
fn a_second_instance_reads_what_the_first_wrote() {
    let server = RedisServer::start().unwrap();
    {
        let plugin = load(&server, true).unwrap();
        assert!(plugin.exports().storage);
        plugin
            .storage_write(&[
                Op::Put((key(Keyspace::Sessions, "c1", 0), b"session".to_vec())),
                Op::Put((key(Keyspace::Messages, "c1", 1), b"m1".to_vec())),
                Op::Put((key(Keyspace::Messages, "c1", 2), b"m2".to_vec())),
                Op::Put((key(Keyspace::Messages, "c2", 1), b"other".to_vec())),
            ])
            .unwrap()
            .unwrap();
        plugin
            .storage_write(&[
                Op::Delete(key(Keyspace::Messages, "c1", 1)),
                Op::DeleteAll((Keyspace::Messages, "c2".to_owned())),
            ])
            .unwrap()
            .unwrap();
    }
    // In Redis, under the configured prefix.
    assert_eq!(server.command(&["HLEN", "{test}:messages"]).unwrap(), ":1");
    let plugin = load(&server, true).unwrap();
    let messages = plugin
        .storage_load(Keyspace::Messages, None, 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        messages,
        vec![(key(Keyspace::Messages, "c1", 2), b"m2".to_vec())]
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
