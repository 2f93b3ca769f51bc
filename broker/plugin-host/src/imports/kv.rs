//! `wasp:plugin/kv`: a key-value store private to each plugin, shared by its instances.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::bindings::wasp::plugin::kv::Host;
use crate::instance::State;

/// A plugin's key-value store. `set` may refuse a write (quota); the guest's call then fails.
pub trait KvStore: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String>;
    fn delete(&self, key: &str);
}

/// An in-memory [`KvStore`] with a quota on the bytes it holds (keys and values), so a plugin cannot
/// make the host allocate without bound. Default quota 16 MiB.
#[derive(Debug)]
pub struct MemoryKv {
    entries: Mutex<(HashMap<String, Vec<u8>>, usize)>,
    quota_bytes: usize,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::with_quota(16 << 20)
    }
}

impl MemoryKv {
    pub fn with_quota(quota_bytes: usize) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), 0)),
            quota_bytes,
        }
    }

    /// Bytes held (keys and values).
    pub fn used_bytes(&self) -> usize {
        self.entries.lock().1
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.lock().0.keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.lock().0.get(key).cloned()
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        let mut guard = self.entries.lock();
        let (map, used) = &mut *guard;
        let old = map.get(key).map_or(0, |v| key.len() + v.len());
        let new_used = *used - old + key.len() + value.len();
        if new_used > self.quota_bytes {
            return Err(format!("kv quota of {} bytes exceeded", self.quota_bytes));
        }
        *used = new_used;
        map.insert(key.to_owned(), value);
        Ok(())
    }

    fn delete(&self, key: &str) {
        let mut guard = self.entries.lock();
        let (map, used) = &mut *guard;
        if let Some(value) = map.remove(key) {
            *used -= key.len() + value.len();
        }
    }
}

impl Host for State {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.ctx.services.kv.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.ctx
            .services
            .kv
            .set(&key, value)
            .map_err(wasmtime::Error::msg)
    }

    fn delete(&mut self, key: String) {
        self.ctx.services.kv.delete(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_frees_on_overwrite_and_delete() {
        let kv = MemoryKv::with_quota(10);
        kv.set("ab", vec![0; 8]).unwrap();
        assert_eq!(kv.used_bytes(), 10);
        assert!(kv.set("c", vec![]).is_err(), "over quota");
        kv.set("ab", vec![0; 2]).unwrap();
        assert_eq!(kv.used_bytes(), 4);
        kv.delete("ab");
        assert_eq!(kv.used_bytes(), 0);
        assert_eq!(kv.get("ab"), None);
    }
}
