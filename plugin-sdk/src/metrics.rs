//! Counters, published with the broker's metrics as `plugin.<plugin name>.<name>`.
//!
//! ```
//! use wasp_plugin_sdk::metrics;
//!
//! metrics::counter_add("denied", 1);
//! # #[cfg(not(target_arch = "wasm32"))]
//! assert_eq!(metrics::native_counter("denied"), 1);
//! ```
//!
//! Compiled natively, the counters live in memory, private to the current thread, and
//! [`native_counter`] reads them.

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static COUNTERS: std::cell::RefCell<std::collections::HashMap<String, u64>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Adds `delta` to the counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::wasp::plugin::metrics::counter_add(name, delta);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        COUNTERS.with(|counters| {
            let mut counters = counters.borrow_mut();
            let counter = counters.entry(name.to_owned()).or_default();
            *counter = counter.saturating_add(delta);
        });
    }
}

/// Native builds only: the current value of the in-memory counter `name` (0 if never added to), for unit
/// tests of plugin logic.
#[cfg(not(target_arch = "wasm32"))]
pub fn native_counter(name: &str) -> u64 {
    COUNTERS.with(|counters| counters.borrow().get(name).copied().unwrap_or(0))
}
