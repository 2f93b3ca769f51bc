//! [`FilterTree`]: a set of plain topic filters, each with values, matched against topic names through a
//! trie of topic levels instead of one [`matches`](crate::topic::matches) per filter.
//!
//! It is the small, read-mostly sibling of the broker's subscription tree: built once (e.g. a plugin
//! chain's publish filters), then matched on every PUBLISH without allocating. Matching follows
//! [`matches`](crate::topic::matches) exactly (which the property tests check): `+` matches one level
//! (possibly empty), `#` matches its parent level and everything below, and a topic starting with `$` is
//! not matched by a filter starting with a wildcard.

use crate::topic::{Levels, levels};

/// One level of the trie: the values of the filters ending here, of the filters ending with `#` here, and
/// the children by literal level (sorted, searched by binary search) and by `+`.
#[derive(Debug, Clone)]
struct Node<V> {
    /// Filters that end at this level (`a/b` at node `a` → `b`).
    exact: Vec<V>,
    /// Filters that end with `#` below this level (`a/#` at node `a`).
    hash: Vec<V>,
    literal: Vec<(Box<str>, Node<V>)>,
    plus: Option<Box<Node<V>>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            exact: Vec::new(),
            hash: Vec::new(),
            literal: Vec::new(),
            plus: None,
        }
    }
}

impl<V> Node<V> {
    fn child(&self, level: &str) -> Option<&Node<V>> {
        self.literal
            .binary_search_by(|(l, _)| (**l).cmp(level))
            .ok()
            .map(|i| &self.literal[i].1)
    }

    fn child_mut(&mut self, level: &str) -> &mut Node<V> {
        let i = match self.literal.binary_search_by(|(l, _)| (**l).cmp(level)) {
            Ok(i) => i,
            Err(i) => {
                self.literal.insert(i, (level.into(), Node::default()));
                i
            }
        };
        &mut self.literal[i].1
    }
}

/// Plain topic filters (no `$share/` prefix), each with one or more values.
///
/// ```
/// use wasp_mqtt::topic::FilterTree;
///
/// let mut tree = FilterTree::new();
/// tree.insert("sensors/+/temp", 1);
/// tree.insert("sensors/#", 2);
/// let mut found = Vec::new();
/// tree.for_each_match("sensors/k1/temp", |v| found.push(*v));
/// found.sort();
/// assert_eq!(found, [1, 2]);
/// assert!(!tree.any_match("alerts"));
/// ```
#[derive(Debug, Clone)]
pub struct FilterTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for FilterTree<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> FilterTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many values were inserted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value was inserted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` for the (valid, plain) filter `filter`. A filter inserted twice keeps both values.
    pub fn insert(&mut self, filter: &str, value: V) {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                node.hash.push(value);
                self.len += 1;
                return;
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.child_mut(level)
            };
        }
        node.exact.push(value);
        self.len += 1;
    }

    /// Calls `f` with the value of every filter matching the topic name `topic`, each once per insertion.
    /// The order is unspecified. Allocates nothing.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        let dollar = topic.starts_with('$');
        walk(&self.root, levels(topic), dollar, &mut f);
    }

    /// Whether any filter matches `topic`.
    pub fn any_match(&self, topic: &str) -> bool {
        let mut any = false;
        self.for_each_match(topic, |_| any = true);
        any
    }
}

/// Matches the remaining `levels` from `node`. `first` is true at the root for a `$` topic: wildcards
/// do not match its first level. Loops down the literal branch and recurses only into `+` branches.
fn walk<'t, V>(
    mut node: &Node<V>,
    mut levels: Levels<'t>,
    mut dollar_first: bool,
    f: &mut impl FnMut(&V),
) {
    loop {
        if !dollar_first {
            // `a/#` matches `a` itself and everything below it.
            node.hash.iter().for_each(&mut *f);
        }
        let Some(level) = levels.next() else {
            node.exact.iter().for_each(&mut *f);
            return;
        };
        if !dollar_first && let Some(plus) = &node.plus {
            walk(plus, levels.clone(), false, f);
        }
        dollar_first = false;
        match node.child(level) {
            Some(child) => node = child,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;

    fn matched(tree: &FilterTree<usize>, topic: &str) -> Vec<usize> {
        let mut found = Vec::new();
        tree.for_each_match(topic, |v| found.push(*v));
        found.sort_unstable();
        found
    }

    #[test]
    fn spec_examples() {
        let filters = [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "sport/tennis/+",
            "+",
            "+/+",
            "/+",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
            "sport/tennis/player1",
        ];
        let mut tree = FilterTree::new();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, i);
        }
        assert_eq!(tree.len(), filters.len());
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport",
            "sport/",
            "/finance",
            "$SYS/monitor/Clients",
            "$SYS",
            "a/monitor/Clients",
            "",
        ] {
            let expected: Vec<usize> = (0..filters.len())
                .filter(|&i| matches(filters[i], topic))
                .collect();
            assert_eq!(matched(&tree, topic), expected, "{topic:?}");
        }
    }

    #[test]
    fn duplicates_keep_every_value_and_empty_tree_matches_nothing() {
        let mut tree = FilterTree::new();
        assert!(tree.is_empty());
        assert!(!tree.any_match("a"));
        tree.insert("a/+", 1);
        tree.insert("a/+", 2);
        assert_eq!(matched(&tree, "a/b"), [1, 2]);
        assert!(tree.any_match("a/"));
        assert!(!tree.any_match("a"));
    }

    /// A topic name of one to four levels, with empty levels and `$` levels.
    fn topic() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "", "$s"]);
        prop::collection::vec(level, 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("a topic name is not empty", |t| !t.is_empty())
    }

    /// A topic filter of up to four levels, `+` among them, possibly ending in `#`.
    fn filter() -> impl Strategy<Value = String> {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn tree_matching_equals_linear_matching(
            filters in prop::collection::vec(filter(), 0..12),
            topics in prop::collection::vec(topic(), 1..8),
        ) {
            let mut tree = FilterTree::new();
            for (i, f) in filters.iter().enumerate() {
                tree.insert(f, i);
            }
            for topic in &topics {
                let expected: Vec<usize> = (0..filters.len())
                    .filter(|&i| matches(&filters[i], topic))
                    .collect();
                prop_assert_eq!(matched(&tree, topic), expected.clone(), "topic {:?}", topic);
                prop_assert_eq!(tree.any_match(topic), !expected.is_empty());
            }
        }
    }
}
