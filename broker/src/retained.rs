//! The retained-message store: the last retained message of every topic name.
//!
//! [`RetainedStore`] keeps at most one message per topic name in a trie of topic levels, so that a new
//! subscription's filter is matched by walking the trie ('+' iterates a node's children, '#' takes a whole
//! subtree) instead of testing every stored topic. It is generic over the message type `M` so that it
//! depends on nothing but the topic rules; expiry is the caller's policy, applied through
//! [`RetainedStore::retain`].
//!
//! Like the subscription tree it is meant to sit behind a `parking_lot::RwLock`: matching takes `&self`,
//! setting and expiring take `&mut self`. Every walk is iterative and nodes left empty are pruned, so a topic
//! with tens of thousands of levels neither overflows the stack nor leaves garbage behind.

use std::collections::HashMap;
use std::mem;
use std::str::Split;

/// A node of the trie: one topic level.
struct Node<M> {
    children: HashMap<Box<str>, Node<M>>,
    /// The retained message of the topic ending at this node, with that topic.
    message: Option<(Box<str>, M)>,
}

impl<M> Node<M> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            message: None,
        }
    }
}

impl<M> Drop for Node<M> {
    /// Drops the subtree iteratively: a deep chain of nodes would otherwise overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Node<M>> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, child)| child));
            // `node` now has no children: dropping it does not recurse.
        }
    }
}

/// A pending step of [`RetainedStore::for_each_match`].
enum Pending<'t, 'f, M> {
    /// `node` matched the filter levels before `levels`; `root` tells whether it is the root (the '$' rule).
    Match {
        node: &'t Node<M>,
        levels: Split<'f, char>,
        root: bool,
    },
    /// Everything under `node`, `node` included, matches (a '#').
    All(&'t Node<M>),
}

/// The retained messages, one per topic name, in a trie of topic levels. See the
/// [module documentation](self).
pub struct RetainedStore<M> {
    root: Node<M>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Sets (`Some`) or deletes (`None`) the retained message of a topic name; returns the previous one.
    ///
    /// `topic` must be a valid topic name. Deleting the last message of a branch prunes its nodes.
    pub fn set(&mut self, topic: &str, message: Option<M>) -> Option<M> {
        let Some(message) = message else {
            return self.delete(topic);
        };
        let mut node = &mut self.root;
        for level in topic.split('/') {
            // Look up first: entry() would allocate the key even when the child exists.
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::new());
            }
            node = match node.children.get_mut(level) {
                Some(child) => child,
                None => unreachable!("child inserted above"),
            };
        }
        match &mut node.message {
            Some((_, previous)) => Some(mem::replace(previous, message)),
            slot @ None => {
                *slot = Some((topic.into(), message));
                self.len += 1;
                None
            }
        }
    }

    fn delete(&mut self, topic: &str) -> Option<M> {
        let node = self.node_mut(topic)?;
        let (_, previous) = node.message.take()?;
        let childless = node.children.is_empty();
        self.len -= 1;
        if childless {
            self.prune(topic);
        }
        Some(previous)
    }

    fn node_mut(&mut self, topic: &str) -> Option<&mut Node<M>> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        Some(node)
    }

    /// Detaches the longest chain of empty nodes at the end of `topic`'s path (if its node is empty).
    fn prune(&mut self, topic: &str) {
        // Pass 1: the shallowest depth from which every node of the path is empty apart from the path.
        let path_len = topic.split('/').count();
        let mut node = &self.root;
        let mut first_dead = None;
        for (depth, level) in topic.split('/').enumerate() {
            node = match node.children.get(level) {
                Some(child) => child,
                None => return,
            };
            let is_last = depth + 1 == path_len;
            let dead = node.message.is_none() && node.children.len() == usize::from(!is_last);
            if dead {
                first_dead.get_or_insert(depth);
            } else {
                first_dead = None;
            }
        }
        let Some(parent_depth) = first_dead else {
            return;
        };
        // Pass 2: cut the chain below its parent.
        let mut levels = topic.split('/');
        let mut node = &mut self.root;
        for level in levels.by_ref().take(parent_depth) {
            node = match node.children.get_mut(level) {
                Some(child) => child,
                None => return,
            };
        }
        if let Some(level) = levels.next() {
            node.children.remove(level);
        }
    }

    /// The retained message of a topic name.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.as_ref().map(|(_, message)| message)
    }

    /// Calls `visit(topic, message)` for every retained message whose topic matches `filter` (a valid,
    /// non-shared topic filter), with the '$' rule: a filter starting with a wildcard does not match topics
    /// starting with '$'. The order of visits is unspecified.
    pub fn for_each_match(&self, filter: &str, mut visit: impl FnMut(&str, &M)) {
        let mut stack = vec![Pending::Match {
            node: &self.root,
            levels: filter.split('/'),
            root: true,
        }];
        let visible = |root: bool, level: &str| !(root && level.starts_with('$'));
        while let Some(pending) = stack.pop() {
            match pending {
                Pending::All(node) => {
                    if let Some((topic, message)) = &node.message {
                        visit(topic, message);
                    }
                    stack.extend(node.children.values().map(Pending::All));
                }
                Pending::Match {
                    node,
                    mut levels,
                    root,
                } => match levels.next() {
                    None => {
                        if let Some((topic, message)) = &node.message {
                            visit(topic, message);
                        }
                    }
                    // '#' matches this node (the parent level) and everything below it.
                    Some("#") => {
                        if let Some((topic, message)) = &node.message {
                            visit(topic, message);
                        }
                        stack.extend(
                            node.children
                                .iter()
                                .filter(|(level, _)| visible(root, level))
                                .map(|(_, child)| Pending::All(child)),
                        );
                    }
                    Some("+") => {
                        stack.extend(
                            node.children
                                .iter()
                                .filter(|(level, _)| visible(root, level))
                                .map(|(_, child)| Pending::Match {
                                    node: child,
                                    levels: levels.clone(),
                                    root: false,
                                }),
                        );
                    }
                    Some(level) => {
                        if let Some(child) = node.children.get(level) {
                            stack.push(Pending::Match {
                                node: child,
                                levels,
                                root: false,
                            });
                        }
                    }
                },
            }
        }
    }

    /// Removes every message for which `keep` returns false (used to drop expired messages); returns how many
    /// were removed. Nodes left empty are pruned.
    pub fn retain(&mut self, mut keep: impl FnMut(&M) -> bool) -> usize {
        let mut removed: Vec<Box<str>> = Vec::new();
        let mut stack: Vec<&mut Node<M>> = vec![&mut self.root];
        while let Some(node) = stack.pop() {
            if let Some((_, message)) = &node.message
                && !keep(message)
                && let Some((topic, _)) = node.message.take()
            {
                removed.push(topic);
            }
            stack.extend(node.children.values_mut());
        }
        self.len -= removed.len();
        for topic in &removed {
            self.prune(topic);
        }
        removed.len()
    }

    /// The number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of nodes of the trie, the root included.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_strategies::{filter, topic};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use wasp_mqtt::topic::matches;

    fn matched<M: Clone + Ord>(store: &RetainedStore<M>, filter: &str) -> Vec<(String, M)> {
        let mut out = Vec::new();
        store.for_each_match(filter, |t, m| out.push((t.to_owned(), m.clone())));
        out.sort_unstable();
        out
    }

    fn topics<M: Clone + Ord>(store: &RetainedStore<M>, filter: &str) -> Vec<String> {
        matched(store, filter).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn set_get_replace_delete() {
        let mut store = RetainedStore::new();
        assert!(store.is_empty());
        assert_eq!(store.set("a/b", Some(1)), None);
        assert_eq!(store.get("a/b"), Some(&1));
        assert_eq!(store.get("a"), None);
        assert_eq!(store.get("a/b/c"), None);
        assert_eq!(store.set("a/b", Some(2)), Some(1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.set("a", Some(3)), None);
        assert_eq!(store.len(), 2);
        assert_eq!(matched(&store, "a/b"), vec![("a/b".to_owned(), 2)]);
        assert_eq!(store.set("a/b", None), Some(2));
        assert_eq!(store.set("a/b", None), None);
        assert_eq!(store.set("x", None), None);
        assert_eq!(store.get("a/b"), None);
        assert_eq!(store.get("a"), Some(&3));
        assert_eq!(store.len(), 1);
        assert_eq!(store.set("a", None), Some(3));
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn delete_prunes() {
        let mut store = RetainedStore::new();
        store.set("a/b/c/d", Some(1));
        store.set("a/b", Some(2));
        store.set("a/x", Some(3));
        assert_eq!(store.node_count(), 6);
        store.set("a/b/c/d", None);
        assert_eq!(store.node_count(), 4); // c and d pruned, b kept (it has a message)
        store.set("a/b", None);
        assert_eq!(store.node_count(), 3); // b pruned, a kept (it has x)
        store.set("a/x", None);
        assert_eq!(store.node_count(), 1);
        // Deleting a message of an inner node keeps the node while it has children.
        store.set("p", Some(1));
        store.set("p/q", Some(2));
        store.set("p", None);
        assert_eq!(store.node_count(), 3);
        assert_eq!(topics(&store, "#"), vec!["p/q"]);
        store.set("p/q", None);
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn filters() {
        let mut store = RetainedStore::new();
        for (i, topic) in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport",
            "sport/",
            "/finance",
            "a//b",
            "$SYS/broker/load",
            "$SYS",
        ]
        .into_iter()
        .enumerate()
        {
            store.set(topic, Some(i));
        }
        assert_eq!(
            topics(&store, "sport/tennis/player1/#"),
            vec![
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(
            topics(&store, "sport/tennis/+"),
            vec!["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(topics(&store, "sport/+"), vec!["sport/"]);
        assert_eq!(topics(&store, "sport/#").len(), 6);
        assert_eq!(topics(&store, "+"), vec!["sport"]);
        assert_eq!(topics(&store, "+/+"), vec!["/finance", "sport/"]);
        assert_eq!(topics(&store, "/+"), vec!["/finance"]);
        assert_eq!(topics(&store, "a/+/b"), vec!["a//b"]);
        assert_eq!(topics(&store, "a//b"), vec!["a//b"]);
        assert_eq!(topics(&store, "a/b"), Vec::<String>::new());
        assert_eq!(topics(&store, "#").len(), 8); // everything but the two $SYS topics
        assert_eq!(topics(&store, "+/broker/+"), Vec::<String>::new());
        assert_eq!(topics(&store, "$SYS/#"), vec!["$SYS", "$SYS/broker/load"]);
        assert_eq!(topics(&store, "$SYS/+/load"), vec!["$SYS/broker/load"]);
        assert_eq!(topics(&store, "$SYS"), vec!["$SYS"]);
        assert_eq!(matched(&store, "sport"), vec![("sport".to_owned(), 4)]);
    }

    #[test]
    fn retain_removes_and_prunes() {
        let mut store = RetainedStore::new();
        for i in 0..50u32 {
            store.set(&format!("t/{}/{i}", i % 5), Some(i));
        }
        store.set("t", Some(100));
        assert_eq!(store.len(), 51);
        assert_eq!(store.retain(|m| m % 2 == 0 && *m != 100), 26);
        assert_eq!(store.len(), 25);
        assert_eq!(store.get("t"), None);
        assert_eq!(store.get("t/1/11"), None);
        assert_eq!(store.get("t/2/12"), Some(&12));
        let mut seen: Vec<u32> = matched(&store, "#").into_iter().map(|(_, m)| m).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).step_by(2).collect::<Vec<_>>());
        assert_eq!(store.retain(|_| true), 0);
        assert_eq!(store.retain(|_| false), 25);
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
        assert_eq!(store.retain(|_| false), 0);
    }

    #[test]
    fn retain_prunes_only_empty_branches() {
        let mut store = RetainedStore::new();
        store.set("a", Some(1));
        store.set("a/b", Some(2));
        store.set("a/b/c", Some(3));
        store.set("x/y", Some(4));
        assert_eq!(store.retain(|m| *m == 2), 3);
        assert_eq!(store.node_count(), 3); // root, a, b
        assert_eq!(topics(&store, "#"), vec!["a/b"]);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let mut store = RetainedStore::new();
        let deep = ["a"; 30_000].join("/");
        let empty_levels = "/".repeat(60_000);
        store.set(&deep, Some(1));
        store.set(&empty_levels, Some(2));
        assert_eq!(matched(&store, "#").len(), 2);
        assert_eq!(matched(&store, &["+"; 30_000].join("/")).len(), 1);
        assert_eq!(store.get(&deep), Some(&1));
        assert_eq!(store.set(&deep, None), Some(1));
        assert_eq!(store.node_count(), 60_002);
        assert_eq!(store.retain(|_| false), 1);
        assert_eq!(store.node_count(), 1);
        store.set(&deep, Some(3));
        // Dropping a deep chain must not recurse either.
        drop(store);
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force(
            ops in prop::collection::vec((topic(), prop::option::of(0u8..8)), 0..40),
            filters in prop::collection::vec(filter(), 1..12),
            threshold in 0u8..9,
        ) {
            let mut store = RetainedStore::new();
            let mut model: BTreeMap<String, u8> = BTreeMap::new();
            for (topic, message) in &ops {
                let expected = match message {
                    Some(m) => model.insert(topic.clone(), *m),
                    None => model.remove(topic),
                };
                prop_assert_eq!(store.set(topic, *message), expected);
                prop_assert_eq!(store.len(), model.len());
            }
            for (topic, message) in &model {
                prop_assert_eq!(store.get(topic), Some(message));
            }
            for filter in &filters {
                let expected: Vec<(String, u8)> = model
                    .iter()
                    .filter(|(t, _)| matches(filter, t))
                    .map(|(t, m)| (t.clone(), *m))
                    .collect();
                prop_assert_eq!(matched(&store, filter), expected, "filter {:?}", filter);
            }
            let before = model.len();
            model.retain(|_, m| *m < threshold);
            prop_assert_eq!(store.retain(|m| *m < threshold), before - model.len());
            prop_assert_eq!(store.len(), model.len());
            for filter in &filters {
                let expected: Vec<String> =
                    model.keys().filter(|t| matches(filter, t)).cloned().collect();
                prop_assert_eq!(topics(&store, filter), expected, "filter {:?}", filter);
            }
            for topic in model.keys() {
                prop_assert!(store.set(topic, None).is_some());
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.node_count(), 1);
        }
    }
}
