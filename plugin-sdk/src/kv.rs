//! A key-value store private to the plugin, kept by the host (it survives the replacement of a trapped
//! instance; whether it survives a broker restart is the broker's choice).
//!
//! ```
//! use wasp_plugin_sdk::kv;
//!
//! kv::set("failures/alice", &3u32.to_le_bytes());
//! assert_eq!(kv::get("failures/alice"), Some(3u32.to_le_bytes().to_vec()));
//! kv::delete("failures/alice");
//! assert_eq!(kv::get("failures/alice"), None);
//! ```
//!
//! Compiled natively, the store is an in-memory map private to the current thread.

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static STORE: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::wasp::plugin::kv::get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        STORE.with(|store| store.borrow().get(key).cloned())
    }
}

/// Stores `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::wasp::plugin::kv::set(key, value);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        STORE.with(|store| store.borrow_mut().insert(key.to_owned(), value.to_vec()));
    }
}

/// Removes `key` (nothing happens if it is absent).
pub fn delete(key: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::wasp::plugin::kv::delete(key);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        STORE.with(|store| store.borrow_mut().remove(key));
    }
}
