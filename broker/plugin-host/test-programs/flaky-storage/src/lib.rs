//! A storage backend that can be made to fail: it keeps the records in memory (one instance lives as
//! long as its calls succeed) and refuses every `write` and `load` while the file `/ctl/fail` exists in
//! the directory granted at `/ctl` (tests create and remove it from the host). `/ctl/slow` makes each
//! `write` take 300 ms first.

wit_bindgen::generate!({ world: "storage-plugin", path: "../../../../wit" });

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::wasp::plugin::storage::{self, Key, Keyspace, Op};
use exports::wasp::plugin::plugin;
use wasp::plugin::types::{Hooks, Interests};

type Records = BTreeMap<(u8, String, u64), Vec<u8>>;

thread_local! {
    static RECORDS: RefCell<Records> = const { RefCell::new(BTreeMap::new()) };
}

fn space(keyspace: Keyspace) -> u8 {
    match keyspace {
        Keyspace::Retained => 0,
        Keyspace::Sessions => 1,
        Keyspace::Messages => 2,
        Keyspace::IncomingQos2 => 3,
    }
}

fn refuse() -> Result<(), String> {
    if std::fs::metadata("/ctl/fail").is_ok() {
        return Err("the test's backend is down (/ctl/fail exists)".to_owned());
    }
    Ok(())
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(_config: String) -> Result<Interests, String> {
        Ok(Interests {
            hooks: Hooks::empty(),
            publish_filters: Vec::new(),
        })
    }
}

impl storage::Guest for Guest {
    fn write(batch: Vec<Op>) -> Result<(), String> {
        if std::fs::metadata("/ctl/slow").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        refuse()?;
        RECORDS.with(|records| {
            let mut records = records.borrow_mut();
            for op in batch {
                match op {
                    Op::Put((key, value)) => {
                        records.insert((space(key.keyspace), key.name, key.seq), value);
                    }
                    Op::Delete(key) => {
                        records.remove(&(space(key.keyspace), key.name, key.seq));
                    }
                    Op::DeleteAll((keyspace, name)) => {
                        let s = space(keyspace);
                        records.retain(|(k, n, _), _| !(*k == s && *n == name));
                    }
                }
            }
        });
        Ok(())
    }

    fn load(
        keyspace: Keyspace,
        after: Option<Key>,
        limit: u32,
    ) -> Result<Vec<(Key, Vec<u8>)>, String> {
        refuse()?;
        let s = space(keyspace);
        Ok(RECORDS.with(|records| {
            records
                .borrow()
                .iter()
                .filter(|((k, n, q), _)| {
                    *k == s
                        && after
                            .as_ref()
                            .is_none_or(|a| (n.as_str(), *q) > (a.name.as_str(), a.seq))
                })
                .take(limit as usize)
                .map(|((_, name, seq), value)| {
                    (
                        Key {
                            keyspace,
                            name: name.clone(),
                            seq: *seq,
                        },
                        value.clone(),
                    )
                })
                .collect()
        }))
    }
}

export!(Guest);
