//! The storage-redb plugin through its real `.wasm`, loaded by the broker's own plugin host, writing its
//! database in a granted directory.

use tempfile::TempDir;
use wasp_plugin_harness::storage::{Key, Keyspace, Op};
use wasp_plugin_harness::{Harness, HostError, plugin_wasm};

fn load(dir: &TempDir) -> Result<Harness, HostError> {
    Harness::load(plugin_wasm!())
        .dir_writable(dir.path(), "/data")
        .config_toml("path = '/data/wasp.redb'")
        .build()
}

fn key(keyspace: Keyspace, name: &str, seq: u64) -> Key {
    Key {
        keyspace,
        name: name.to_owned(),
        seq,
    }
}

#[test]
fn batches_are_on_disk_for_the_next_instance() {
    let dir = tempfile::tempdir().unwrap();
    {
        let plugin = load(&dir).unwrap();
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
    assert!(dir.path().join("wasp.redb").exists());
    // Another host, another instance: what was written is read back from the file.
    let plugin = load(&dir).unwrap();
    let messages = plugin
        .storage_load(Keyspace::Messages, None, 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        messages,
        vec![(key(Keyspace::Messages, "c1", 2), b"m2".to_vec())]
    );
    let sessions = plugin
        .storage_load(Keyspace::Sessions, None, 10)
        .unwrap()
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(
        plugin
            .storage_load(Keyspace::Retained, None, 10)
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn loads_page_by_page_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = load(&dir).unwrap();
    let batch: Vec<Op> = (0..25)
        .rev()
        .map(|i| Op::Put((key(Keyspace::Retained, &format!("t/{i:02}"), 0), vec![i])))
        .collect();
    plugin.storage_write(&batch).unwrap().unwrap();
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = plugin
            .storage_load(Keyspace::Retained, after.as_ref(), 10)
            .unwrap()
            .unwrap();
        seen.extend(page.iter().map(|(k, v)| (k.name.clone(), v[0])));
        if page.len() < 10 {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    let expected: Vec<(String, u8)> = (0..25).map(|i| (format!("t/{i:02}"), i)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn without_a_writable_directory_init_says_what_to_grant() {
    let dir = tempfile::tempdir().unwrap();
    let error = Harness::load(plugin_wasm!())
        .dir(dir.path(), "/data")
        .config_toml("path = '/data/wasp.redb'")
        .build()
        .err()
        .expect("a read-only directory is refused");
    let message = error.to_string();
    assert!(message.contains("writable = true"), "{message}");
}
