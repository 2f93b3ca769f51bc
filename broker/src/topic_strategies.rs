//! Property-test strategies shared by the tries' tests: small topic names and filters over a few levels,
//! including empty levels and `$` topics, so that random cases hit the edge rules often.

use proptest::prelude::*;

/// A topic name of one to four levels.
pub(crate) fn topic() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$s"]);
    prop::collection::vec(level, 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
}

/// A topic filter of up to four levels, `+` among them, possibly ending in `#`.
pub(crate) fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$s", "+"]);
    (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty())
}
