//! [`RedbStore`]: the four keyspaces of the broker's storage interface as redb tables.

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use wasp_plugin_sdk::storage::{Key, Keyspace, Op, key};

type Table = TableDefinition<'static, (&'static str, u64), &'static [u8]>;

const RETAINED: Table = TableDefinition::new("retained");
const SESSIONS: Table = TableDefinition::new("sessions");
const MESSAGES: Table = TableDefinition::new("messages");
const INCOMING_QOS2: Table = TableDefinition::new("incoming-qos2");

/// Every table, in the WIT's keyspace order: a keyspace's table is `TABLES[keyspace as usize]`.
const TABLES: [Table; 4] = [RETAINED, SESSIONS, MESSAGES, INCOMING_QOS2];

/// A failure of the database, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

fn failed<E: Into<redb::Error>>(doing: &str) -> impl Fn(E) -> StoreError + '_ {
    move |e| StoreError(format!("{doing}: {}", e.into()))
}

/// The broker's records in one redb database file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its tables) if needed. A file left by a crash is
    /// repaired by redb on open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(failed("begin transaction"))?;
        for definition in TABLES {
            txn.open_table(definition)
                .map_err(failed("create tables"))?;
        }
        txn.commit().map_err(failed("create tables"))?;
        Ok(Self { db })
    }

    /// Applies `batch` in one transaction, durable when this returns. Each table is opened once per
    /// transaction, not once per op.
    pub fn write(&self, batch: &[Op]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin transaction"))?;
        {
            let mut tables = Vec::with_capacity(TABLES.len());
            for definition in TABLES {
                tables.push(txn.open_table(definition).map_err(failed("open table"))?);
            }
            for op in batch {
                match op {
                    Op::Put((key, value)) => {
                        tables[key.keyspace as usize]
                            .insert((key.name.as_str(), key.seq), value.as_slice())
                            .map_err(failed("put"))?;
                    }
                    Op::Delete(key) => {
                        tables[key.keyspace as usize]
                            .remove((key.name.as_str(), key.seq))
                            .map_err(failed("delete"))?;
                    }
                    Op::DeleteAll((keyspace, name)) => {
                        tables[*keyspace as usize]
                            .retain_in((name.as_str(), 0)..=(name.as_str(), u64::MAX), |_, _| false)
                            .map_err(failed("delete all"))?;
                    }
                }
            }
        }
        txn.commit().map_err(failed("commit"))
    }

    /// Up to `limit` records of `keyspace` after `after`, in key order.
    pub fn load(
        &self,
        keyspace: Keyspace,
        after: Option<&Key>,
        limit: u32,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin read"))?;
        let t = txn
            .open_table(TABLES[keyspace as usize])
            .map_err(failed("open table"))?;
        let lower = match after {
            Some(key) => Bound::Excluded((key.name.as_str(), key.seq)),
            None => Bound::Unbounded,
        };
        let range = t
            .range::<(&str, u64)>((lower, Bound::Unbounded))
            .map_err(failed("read"))?;
        let mut records = Vec::new();
        for entry in range.take(limit as usize) {
            let (stored, value) = entry.map_err(failed("read"))?;
            let (name, seq) = stored.value();
            records.push((key(keyspace, name, seq), value.value().to_vec()));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(keyspace: Keyspace, name: &str, seq: u64, value: &[u8]) -> Op {
        Op::Put((key(keyspace, name, seq), value.to_vec()))
    }

    fn names(records: &[(Key, Vec<u8>)]) -> Vec<(String, u64, Vec<u8>)> {
        records
            .iter()
            .map(|(k, v)| (k.name.clone(), k.seq, v.clone()))
            .collect()
    }

    #[test]
    fn writes_survive_reopening_and_load_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasp.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .write(&[
                    put(Keyspace::Messages, "b", 2, b"b2"),
                    put(Keyspace::Messages, "a", 10, b"a10"),
                    put(Keyspace::Messages, "a", 9, b"a9"),
                    put(Keyspace::Retained, "t/1", 0, b"r"),
                ])
                .unwrap();
            store
                .write(&[
                    Op::Delete(key(Keyspace::Retained, "t/1", 0)),
                    put(Keyspace::Messages, "a", 9, b"a9'"),
                ])
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let all = store.load(Keyspace::Messages, None, 100).unwrap();
        assert_eq!(
            names(&all),
            [
                ("a".to_owned(), 9, b"a9'".to_vec()),
                ("a".to_owned(), 10, b"a10".to_vec()),
                ("b".to_owned(), 2, b"b2".to_vec()),
            ]
        );
        assert!(
            store
                .load(Keyspace::Retained, None, 100)
                .unwrap()
                .is_empty()
        );
        // Paging: after the first record, at most one.
        let page = store.load(Keyspace::Messages, Some(&all[0].0), 1).unwrap();
        assert_eq!(names(&page), [("a".to_owned(), 10, b"a10".to_vec())]);
    }

    #[test]
    fn delete_all_removes_one_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("wasp.redb")).unwrap();
        store
            .write(&[
                put(Keyspace::IncomingQos2, "a", 1, b""),
                put(Keyspace::IncomingQos2, "a", 65535, b""),
                put(Keyspace::IncomingQos2, "ab", 1, b""),
                put(Keyspace::IncomingQos2, "", 7, b""),
            ])
            .unwrap();
        store
            .write(&[Op::DeleteAll((Keyspace::IncomingQos2, "a".to_owned()))])
            .unwrap();
        let left = store.load(Keyspace::IncomingQos2, None, 10).unwrap();
        assert_eq!(
            names(&left),
            [("".to_owned(), 7, vec![]), ("ab".to_owned(), 1, vec![])]
        );
    }
}
