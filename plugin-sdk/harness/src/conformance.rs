//! Checks a plugin against the contract of a WIT interface, through the harness: for storage backends,
//! [`storage_backend`].

use crate::Harness;
use crate::storage::{Key, Keyspace, Op};

fn key(keyspace: Keyspace, name: &str, seq: u64) -> Key {
    Key {
        keyspace,
        name: name.to_owned(),
        seq,
    }
}

/// Checks a storage backend (WIT `storage`, 0.1.2) on an empty store; panics, saying what broke, when it
/// does not keep the contract the broker relies on. `open` returns a new instance of the plugin on the
/// same (initially empty) data each time it is called; it is called twice.
///
/// What it checks: puts, deletes and `delete-all` applied in order; the same batch applied twice (the
/// broker's retry) ends in the same state; what one instance wrote, a new instance reads; `load` returns
/// a keyspace in key order (name, then seq), page by page after the last key of the previous page, and
/// nothing of other keyspaces or other names.
pub fn storage_backend(open: impl Fn() -> Harness) {
    let first_batch = [
        Op::Put((key(Keyspace::Sessions, "c1", 0), b"session".to_vec())),
        Op::Put((key(Keyspace::Messages, "c1", 1), b"m1".to_vec())),
        Op::Put((key(Keyspace::Messages, "c1", 2), b"m2".to_vec())),
        Op::Put((key(Keyspace::Messages, "c2", 1), b"other".to_vec())),
        Op::Put((key(Keyspace::IncomingQos2, "c1", 7), Vec::new())),
    ];
    let second_batch = [
        Op::Delete(key(Keyspace::Messages, "c1", 1)),
        Op::DeleteAll((Keyspace::Messages, "c2".to_owned())),
        Op::Put((key(Keyspace::Messages, "c1", 3), b"m3".to_vec())),
    ];
    {
        let plugin = open();
        assert!(plugin.exports().storage, "the plugin exports no storage");
        // Each batch twice, as the broker retries a batch whose answer it did not get.
        for batch in [&first_batch[..], &first_batch, &second_batch, &second_batch] {
            if let Err(e) = plugin.storage_write(batch).expect("write called") {
                panic!("write of {batch:?} failed: {e}");
            }
        }
    }
    let plugin = open();
    let load = |keyspace, after: Option<&Key>, limit| {
        plugin
            .storage_load(keyspace, after, limit)
            .expect("load called")
            .unwrap_or_else(|e| panic!("load of {keyspace:?} failed: {e}"))
    };
    assert_eq!(
        load(Keyspace::Messages, None, 10),
        vec![
            (key(Keyspace::Messages, "c1", 2), b"m2".to_vec()),
            (key(Keyspace::Messages, "c1", 3), b"m3".to_vec()),
        ],
        "messages after puts, a delete, a delete-all and a retried batch, read by a new instance"
    );
    assert_eq!(
        load(Keyspace::Sessions, None, 10),
        vec![(key(Keyspace::Sessions, "c1", 0), b"session".to_vec())]
    );
    assert_eq!(
        load(Keyspace::IncomingQos2, None, 10),
        vec![(key(Keyspace::IncomingQos2, "c1", 7), Vec::new())],
        "an empty value is a record"
    );
    assert_eq!(load(Keyspace::Retained, None, 10), Vec::new());

    // Key order and paging: names that prefix one another, seqs past 9, written out of order.
    let mut expected = Vec::new();
    for name in ["t", "t/a", "t/b", "ta"] {
        for seq in [0u64, 2, 10, u64::MAX] {
            expected.push((
                key(Keyspace::Retained, name, seq),
                format!("{name}{seq}").into_bytes(),
            ));
        }
    }
    let batch: Vec<Op> = expected.iter().rev().cloned().map(Op::Put).collect();
    plugin
        .storage_write(&batch)
        .expect("write called")
        .unwrap_or_else(|e| panic!("write of {} records failed: {e}", batch.len()));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = load(Keyspace::Retained, after.as_ref(), 5);
        assert!(
            page.len() <= 5,
            "a page of {} records for a limit of 5",
            page.len()
        );
        seen.extend(page.iter().cloned());
        if page.len() < 5 {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    assert_eq!(seen, expected, "the retained keyspace, in pages of 5");
}
