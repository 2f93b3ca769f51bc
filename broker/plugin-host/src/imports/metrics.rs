//! `wasp:plugin/metrics`: counters per plugin, published by the broker as `plugin.<name>.<counter>`.
//! At most [`MAX_COUNTERS`] names per plugin, each at most 128 bytes; others are ignored (warned once).

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::bindings::wasp::plugin::metrics::Host;
use crate::instance::State;

pub const MAX_COUNTERS: usize = 256;
const MAX_NAME: usize = 128;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: Mutex<(BTreeMap<String, u64>, bool)>,
}

impl Counters {
    /// Adds `delta` (saturating). `Err(first)` when the name is refused, `first` the first time a name
    /// is refused for this plugin (to warn once).
    /// The name is copied only the first time it is counted.
    pub fn add(&self, name: &str, delta: u64) -> Result<(), bool> {
        let mut guard = self.values.lock();
        let (map, refused_before) = &mut *guard;
        if let Some(value) = map.get_mut(name) {
            *value = value.saturating_add(delta);
            return Ok(());
        }
        if name.len() > MAX_NAME || map.len() >= MAX_COUNTERS {
            let first = !*refused_before;
            *refused_before = true;
            return Err(first);
        }
        map.insert(name.to_owned(), delta);
        Ok(())
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.values
            .lock()
            .0
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

impl Host for State {
    fn counter_add(&mut self, name: String, delta: u64) {
        if let Err(true) = self.ctx.metrics.add(&name, delta) {
            tracing::warn!(
                plugin = &*self.ctx.name,
                counter = super::truncate(name, MAX_NAME),
                "plugin counter refused (more than {MAX_COUNTERS} counters or a name over {MAX_NAME} bytes); further refusals are not logged"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_saturate_and_cap_names() {
        let counters = Counters::default();
        assert_eq!(counters.add("a", u64::MAX - 1), Ok(()));
        assert_eq!(counters.add("a", 5), Ok(()));
        assert_eq!(counters.snapshot(), vec![("a".to_owned(), u64::MAX)]);
        assert_eq!(counters.add(&"x".repeat(MAX_NAME + 1), 1), Err(true));
        assert_eq!(counters.add(&"y".repeat(MAX_NAME + 1), 1), Err(false));
        for i in 1..MAX_COUNTERS {
            assert_eq!(counters.add(&format!("c{i}"), 1), Ok(()));
        }
        assert_eq!(counters.add("one-too-many", 1), Err(false));
        assert_eq!(counters.snapshot().len(), MAX_COUNTERS);
    }
}
