//! The host's wall clock. Use it rather than `std::time`: the test harness controls it.
//!
//! ```
//! let now = wasp_plugin_sdk::clock::now_millis();
//! assert!(now > 1_600_000_000_000);
//! ```
//!
//! Compiled natively, it reads the system clock.

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::wasp::plugin::clock::now_millis()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }
}

/// Wall-clock time in whole seconds since the Unix epoch (e.g. to check a token's `exp`).
pub fn now_seconds() -> u64 {
    now_millis() / 1000
}
