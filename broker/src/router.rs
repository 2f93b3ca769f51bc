//! The subscription tree: which subscriptions a published topic name reaches.
//!
//! [`SubscriptionTree`] owns every subscription of the broker, indexed by topic filter in a trie of topic
//! levels, and answers "who receives a message published to this topic?" ([`SubscriptionTree::for_each_match`])
//! including the choice of one member per shared-subscription group (round-robin, skipping unavailable
//! members).
//!
//! It is generic over the subscriber key `K` (a session or client identifier) and the subscription value `V`
//! (options such as QoS, No Local, subscription identifier) so that it depends on nothing but the topic
//! rules: it can be written, tested and benchmarked independently of the session types.
//!
//! Concurrency: it is designed to sit behind a `parking_lot::RwLock`, with many concurrent readers (every
//! PUBLISH matches through `&self`) and rare writers (SUBSCRIBE / UNSUBSCRIBE / disconnect take `&mut self`).
//! The only state mutated by readers is each shared group's round-robin cursor, an `AtomicUsize`.
//!
//! Matching allocates nothing: the topic is split with `wasp_mqtt::topic::levels` (a byte loop, faster than
//! `str::split`) and the trie is walked by looping down one branch and recursing only where both a literal
//! child and a `'+'` child continue the walk. Insert and remove are iterative too, removed nodes are
//! pruned, and dropping a tree is iterative, so a filter with tens of thousands of levels cannot overflow
//! the stack.

use std::collections::HashMap;
use std::hash::Hash;
use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasp_mqtt::topic::{Levels, levels};

/// Below this many entries a subscriber list is searched linearly; above it a key index is kept.
const INDEX_THRESHOLD: usize = 16;

/// A list of `(key, value)` entries, iterated as a slice (the hot path) and searched by key either linearly
/// (small lists) or through an index (large lists, e.g. thousands of subscribers of one filter).
struct Entries<K, V> {
    items: Vec<(K, V)>,
    /// Position of each key in `items`, kept only while `items` is large. Boxed so that the common case
    /// (no index) costs one word per tree node instead of a whole `HashMap`.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone, V> Entries<K, V> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            index: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.items.iter().position(|(k, _)| k == key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            return Some(mem::replace(&mut self.items[i].1, value));
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.items.len());
        }
        self.items.push((key, value));
        if self.index.is_none() && self.items.len() > INDEX_THRESHOLD {
            let index = self
                .items
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            self.index = Some(Box::new(index));
        }
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        let (_, value) = self.items.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(key);
            if let Some((moved, _)) = self.items.get(i)
                && let Some(slot) = index.get_mut(moved)
            {
                *slot = i;
            }
            if self.items.len() < INDEX_THRESHOLD / 2 {
                self.index = None;
            }
        }
        Some(value)
    }
}

/// The members of one shared-subscription group on one filter.
struct SharedGroup<K, V> {
    name: Box<str>,
    members: Entries<K, V>,
    /// Round-robin cursor: the member to try first on the next message (modulo the member count).
    next: AtomicUsize,
}

impl<K: Eq + Hash + Clone, V> SharedGroup<K, V> {
    /// Picks the next member round-robin, skipping unavailable ones; if none is available, the next one.
    fn pick(&self, available: &impl Fn(&K, &V) -> bool) -> Option<&(K, V)> {
        let members = &self.members.items;
        let len = members.len();
        if len == 0 {
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let start = ticket % len;
        for skipped in 0..len {
            let i = (start + skipped) % len;
            let member = &members[i];
            if available(&member.0, &member.1) {
                if skipped > 0 {
                    // Resume after the chosen member rather than at a skipped one, so the members after an
                    // unavailable one are not picked twice as often. Losing this race to a concurrent reader
                    // only costs fairness, never correctness.
                    let _ = self.next.compare_exchange(
                        ticket.wrapping_add(1),
                        ticket.wrapping_add(1 + skipped),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                return Some(member);
            }
        }
        Some(&members[start])
    }
}

/// The subscriptions whose filter ends at one node of the trie.
struct Subscribers<K, V> {
    plain: Entries<K, V>,
    shared: Vec<SharedGroup<K, V>>,
}

impl<K: Eq + Hash + Clone, V> Subscribers<K, V> {
    fn new() -> Self {
        Self {
            plain: Entries::new(),
            shared: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }

    fn insert(&mut self, group: Option<&str>, key: K, value: V) -> Option<V> {
        let Some(group) = group else {
            return self.plain.insert(key, value);
        };
        if let Some(g) = self.shared.iter_mut().find(|g| &*g.name == group) {
            return g.members.insert(key, value);
        }
        let mut members = Entries::new();
        members.insert(key, value);
        self.shared.push(SharedGroup {
            name: group.into(),
            members,
            next: AtomicUsize::new(0),
        });
        None
    }

    fn remove(&mut self, group: Option<&str>, key: &K) -> Option<V> {
        let Some(group) = group else {
            return self.plain.remove(key);
        };
        let i = self.shared.iter().position(|g| &*g.name == group)?;
        let value = self.shared[i].members.remove(key)?;
        if self.shared[i].members.is_empty() {
            self.shared.swap_remove(i);
        }
        Some(value)
    }

    #[inline]
    fn visit(&self, available: &impl Fn(&K, &V) -> bool, visit: &mut impl FnMut(&K, &V)) {
        for (k, v) in &self.plain.items {
            visit(k, v);
        }
        for group in &self.shared {
            if let Some((k, v)) = group.pick(available) {
                visit(k, v);
            }
        }
    }
}

/// A node of the trie: one topic level.
struct Node<K, V> {
    /// Children for literal levels (including the empty level and levels starting with '$').
    children: HashMap<Box<str>, Node<K, V>>,
    /// The '+' child.
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions to "<this node's filter>/#" ('#' is always the last level, so it has no children).
    hash: Option<Box<Subscribers<K, V>>>,
    /// Subscriptions whose filter ends at this node.
    subs: Subscribers<K, V>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: Subscribers {
                plain: Entries {
                    items: Vec::new(),
                    index: None,
                },
                shared: Vec::new(),
            },
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree iteratively: a deep chain of nodes would otherwise overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Node<K, V>> = Vec::new();
        let take = |node: &mut Node<K, V>, stack: &mut Vec<Node<K, V>>| {
            stack.extend(node.children.drain().map(|(_, child)| child));
            if let Some(plus) = node.plus.take() {
                stack.push(*plus);
            }
        };
        take(self, &mut stack);
        while let Some(mut node) = stack.pop() {
            take(&mut node, &mut stack);
            // `node` now has no children: dropping it does not recurse.
        }
    }
}

/// Which child a filter level (other than a final '#') leads to.
enum Step<'a> {
    Literal(&'a str),
    Plus,
}

fn step(level: &str) -> Step<'_> {
    match level {
        "+" => Step::Plus,
        literal => Step::Literal(literal),
    }
}

/// Splits a filter into the levels of the path to its node and whether it ends with '#' (whose
/// subscriptions live in that node's '#' leaf). A '#' anywhere else (an invalid filter) is a literal level,
/// which no topic name matches.
fn path_of(filter: &str) -> (impl Iterator<Item = &str> + Clone, bool) {
    let (path, hash) = match filter.strip_suffix("#") {
        Some("") => (None, true),
        Some(path) => match path.strip_suffix('/') {
            Some(path) => (Some(path), true),
            None => (Some(filter), false),
        },
        None => (Some(filter), false),
    };
    (path.map(|p| p.split('/')).into_iter().flatten(), hash)
}

/// Every subscription of the broker, in a trie of topic levels. See the [module documentation](self).
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds or replaces the subscription of `key` to `filter` (in shared group `group` if `Some`). Returns the
    /// previous value.
    ///
    /// `filter` must be a valid plain topic filter (for a shared subscription, the part after
    /// `$share/{group}/`). A plain subscription and a shared one of the same key on the same filter are
    /// distinct entries.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, key: K, value: V) -> Option<V> {
        let (levels, hash) = path_of(filter);
        let mut node = &mut self.root;
        for level in levels {
            node = match step(level) {
                Step::Plus => node.plus.get_or_insert_with(|| Box::new(Node::new())),
                Step::Literal(level) => {
                    // Look up first: entry() would allocate the key even when the child exists.
                    if !node.children.contains_key(level) {
                        node.children.insert(level.into(), Node::new());
                    }
                    match node.children.get_mut(level) {
                        Some(child) => child,
                        None => unreachable!("child inserted above"),
                    }
                }
            };
        }
        let subs = if hash {
            node.hash
                .get_or_insert_with(|| Box::new(Subscribers::new()))
        } else {
            &mut node.subs
        };
        let previous = subs.insert(group, key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes the subscription of `key` to `filter` (in shared group `group` if `Some`). Returns its value,
    /// or `None` if there was no such subscription. Nodes left empty are pruned.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, key: &K) -> Option<V> {
        let (value, now_empty) = {
            let subs = self.subscribers_mut(filter)?;
            let value = subs.remove(group, key)?;
            (value, subs.is_empty())
        };
        self.len -= 1;
        if now_empty {
            self.prune(filter);
        }
        Some(value)
    }

    /// The subscribers of exactly `filter`, if its node exists.
    fn subscribers_mut(&mut self, filter: &str) -> Option<&mut Subscribers<K, V>> {
        let (levels, hash) = path_of(filter);
        let mut node = &mut self.root;
        for level in levels {
            node = match step(level) {
                Step::Plus => node.plus.as_deref_mut()?,
                Step::Literal(level) => node.children.get_mut(level)?,
            };
        }
        if hash {
            node.hash.as_deref_mut()
        } else {
            Some(&mut node.subs)
        }
    }

    /// After the subscribers of `filter` became empty, detaches the longest chain of nodes left empty at the
    /// end of its path (or only its empty '#' leaf).
    fn prune(&mut self, filter: &str) {
        let (levels, hash) = path_of(filter);
        // Pass 1: find the shallowest depth from which every node of the path is empty apart from the path.
        let mut node = &self.root;
        let mut first_dead: Option<usize> = None;
        let path_len = levels.clone().count();
        for (depth, level) in levels.clone().enumerate() {
            node = match step(level) {
                Step::Plus => match node.plus.as_deref() {
                    Some(child) => child,
                    None => return,
                },
                Step::Literal(level) => match node.children.get(level) {
                    Some(child) => child,
                    None => return,
                },
            };
            // Links to non-empty things: only the path's '#' leaf can be empty (empty ones are always pruned).
            let links = node.children.len()
                + usize::from(node.plus.is_some())
                + usize::from(node.hash.as_ref().is_some_and(|h| !h.is_empty()));
            // An intermediate node's only link must be the path; the last node must have none.
            let is_last = depth + 1 == path_len;
            let dead = node.subs.is_empty() && links == usize::from(!is_last);
            if dead {
                first_dead.get_or_insert(depth);
            } else {
                first_dead = None;
            }
        }
        // Pass 2: cut the chain below its parent, or only the empty '#' leaf.
        let (parent_depth, cut_hash) = match first_dead {
            Some(depth) => (depth, false),
            None if hash => (path_len, true),
            None => return,
        };
        let mut node = &mut self.root;
        let mut levels = levels;
        for level in levels.by_ref().take(parent_depth) {
            node = match step(level) {
                Step::Plus => match node.plus.as_deref_mut() {
                    Some(child) => child,
                    None => return,
                },
                Step::Literal(level) => match node.children.get_mut(level) {
                    Some(child) => child,
                    None => return,
                },
            };
        }
        if cut_hash {
            node.hash = None;
            return;
        }
        match levels.next().map(step) {
            Some(Step::Plus) => node.plus = None,
            Some(Step::Literal(level)) => {
                node.children.remove(level);
            }
            None => {}
        }
    }

    /// Calls `visit` for every subscription whose filter matches `topic` (a valid topic name): every
    /// non-shared subscription, and for each matching shared group exactly one member, chosen round-robin,
    /// skipping members for which `available(key, value)` is false; if no member is available, the next one in
    /// round-robin order anyway.
    ///
    /// A key subscribed through several matching filters is visited once per filter: deduplicating (MQTT 5.0
    /// delivers one message with several subscription identifiers) is the caller's business. The order of
    /// visits is unspecified.
    pub fn for_each_match(
        &self,
        topic: &str,
        available: impl Fn(&K, &V) -> bool,
        mut visit: impl FnMut(&K, &V),
    ) {
        let mut levels = levels(topic);
        let Some(first) = levels.next() else {
            return;
        };
        let root = &self.root;
        // The '$' rule: a filter starting with a wildcard does not match a topic starting with '$'.
        if !first.starts_with('$') {
            if let Some(hash) = &root.hash {
                hash.visit(&available, &mut visit);
            }
            if let Some(plus) = &root.plus {
                walk(plus, levels.clone(), &available, &mut visit);
            }
        }
        if let Some(child) = root.children.get(first) {
            walk(child, levels, &available, &mut visit);
        }
    }

    /// The number of subscriptions, shared-group members included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of nodes of the trie, the root included ('#' leaves are not counted).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }

    /// The number of '#' leaves.
    #[cfg(test)]
    fn hash_leaf_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += usize::from(node.hash.is_some());
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

/// Visits the subscriptions under `node`, which matched the topic levels before `levels`.
///
/// Loops down one branch and recurses only when both the literal child and the '+' child continue, so the
/// recursion depth is bounded by the number of such forks, not by the number of levels.
fn walk<K: Eq + Hash + Clone, V>(
    mut node: &Node<K, V>,
    mut levels: Levels<'_>,
    available: &impl Fn(&K, &V) -> bool,
    visit: &mut impl FnMut(&K, &V),
) {
    loop {
        // "<path>/#" matches the path itself and everything below it.
        if let Some(hash) = &node.hash {
            hash.visit(available, visit);
        }
        let Some(level) = levels.next() else {
            node.subs.visit(available, visit);
            return;
        };
        let literal = node.children.get(level);
        node = match (literal, node.plus.as_deref()) {
            (Some(literal), Some(plus)) => {
                walk(plus, levels.clone(), available, visit);
                literal
            }
            (Some(next), None) | (None, Some(next)) => next,
            (None, None) => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_strategies::{filter, topic};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use wasp_mqtt::topic::matches;

    fn matched<V: Copy + Ord>(tree: &SubscriptionTree<u32, V>, topic: &str) -> Vec<(u32, V)> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |_, _| true, |k, v| out.push((*k, *v)));
        out.sort_unstable();
        out
    }

    #[test]
    fn empty_tree() {
        let tree: SubscriptionTree<u32, ()> = SubscriptionTree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        let mut n = 0;
        tree.for_each_match("a/b", |_, _| true, |_, _| n += 1);
        assert_eq!(n, 0);
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn wildcards_and_levels() {
        let mut tree = SubscriptionTree::new();
        let filters = [
            "sport/tennis/player1/#",
            "sport/tennis/+",
            "sport/#",
            "#",
            "+/+",
            "/+",
            "+",
            "a//b",
            "a/+/b",
            "$SYS/#",
            "$SYS/+",
            "+/monitor/Clients",
        ];
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(tree.insert(f, None, i as u32, *f), None);
        }
        assert_eq!(tree.len(), filters.len());
        let ids = |topic: &str| {
            matched(&tree, topic)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("sport/tennis/player1"), vec![0, 1, 2, 3]);
        assert_eq!(ids("sport/tennis/player1/ranking"), vec![0, 2, 3]);
        assert_eq!(ids("sport"), vec![2, 3, 6]);
        assert_eq!(ids("sport/"), vec![2, 3, 4]);
        assert_eq!(ids("/finance"), vec![3, 4, 5]);
        assert_eq!(ids("a//b"), vec![3, 7, 8]);
        assert_eq!(ids("a/x/b"), vec![3, 8]);
        assert_eq!(ids("$SYS"), vec![9]);
        assert_eq!(ids("$SYS/monitor"), vec![9, 10]);
        assert_eq!(ids("$SYS/monitor/Clients"), vec![9]);
        assert_eq!(ids("x/monitor/Clients"), vec![3, 11]);
    }

    #[test]
    fn insert_same_filter_and_key_replaces() {
        let mut tree = SubscriptionTree::new();
        assert_eq!(tree.insert("a/b", None, 1, "first"), None);
        assert_eq!(tree.insert("a/b", None, 1, "second"), Some("first"));
        assert_eq!(tree.len(), 1);
        assert_eq!(matched(&tree, "a/b"), vec![(1, "second")]);
        assert_eq!(tree.insert("a/#", None, 1, "hash"), None);
        assert_eq!(tree.insert("a/#", None, 1, "hash2"), Some("hash"));
        assert_eq!(tree.len(), 2);
        assert_eq!(matched(&tree, "a/b"), vec![(1, "hash2"), (1, "second")]);
    }

    #[test]
    fn plain_and_shared_of_same_key_are_distinct() {
        let mut tree = SubscriptionTree::new();
        assert_eq!(tree.insert("a", None, 1, "plain"), None);
        assert_eq!(tree.insert("a", Some("g"), 1, "shared"), None);
        assert_eq!(tree.insert("a", Some("h"), 1, "other group"), None);
        assert_eq!(tree.insert("a", Some("g"), 1, "shared2"), Some("shared"));
        assert_eq!(tree.len(), 3);
        assert_eq!(
            matched(&tree, "a"),
            vec![(1, "other group"), (1, "plain"), (1, "shared2")]
        );
        assert_eq!(tree.remove("a", Some("g"), &1), Some("shared2"));
        assert_eq!(tree.remove("a", Some("g"), &1), None);
        assert_eq!(matched(&tree, "a"), vec![(1, "other group"), (1, "plain")]);
        assert_eq!(tree.remove("a", None, &1), Some("plain"));
        assert_eq!(tree.remove("a", Some("h"), &1), Some("other group"));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn remove_missing() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b", None, 1, ());
        assert_eq!(tree.remove("a/b", None, &2), None);
        assert_eq!(tree.remove("a/c", None, &1), None);
        assert_eq!(tree.remove("a", None, &1), None);
        assert_eq!(tree.remove("a/b/c", None, &1), None);
        assert_eq!(tree.remove("a/#", None, &1), None);
        assert_eq!(tree.remove("a/+", None, &1), None);
        assert_eq!(tree.remove("a/b", Some("g"), &1), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.node_count(), 3);
    }

    #[test]
    fn remove_prunes() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b/c/d", None, 1, ());
        tree.insert("a/b", None, 2, ());
        tree.insert("a/+/#", None, 3, ());
        tree.insert("#", Some("g"), 4, ());
        assert_eq!(tree.node_count(), 6); // root, a, b, c, d, +
        assert_eq!(tree.hash_leaf_count(), 2);

        assert_eq!(tree.remove("a/b/c/d", None, &1), Some(()));
        assert_eq!(tree.node_count(), 4); // c and d pruned, b kept (it has a subscription)
        assert_eq!(tree.remove("a/+/#", None, &3), Some(()));
        assert_eq!(tree.node_count(), 3); // '+' pruned with its '#' leaf
        assert_eq!(tree.hash_leaf_count(), 1);
        assert_eq!(tree.remove("a/b", None, &2), Some(()));
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.remove("#", Some("g"), &4), Some(()));
        assert_eq!(tree.hash_leaf_count(), 0);
        assert!(tree.is_empty());

        // A '#' leaf is pruned on its own when its node still has other children.
        tree.insert("x/#", None, 1, ());
        tree.insert("x/y", None, 1, ());
        assert_eq!(tree.remove("x/#", None, &1), Some(()));
        assert_eq!(tree.hash_leaf_count(), 0);
        assert_eq!(tree.node_count(), 3);
        assert_eq!(matched(&tree, "x/y"), vec![(1, ())]);
        assert_eq!(tree.remove("x/y", None, &1), Some(()));
        assert_eq!(tree.node_count(), 1);

        // A node with subscriptions of its own is kept when its child goes.
        tree.insert("p", None, 1, ());
        tree.insert("p/q/r", None, 1, ());
        tree.remove("p/q/r", None, &1);
        assert_eq!(tree.node_count(), 2);
        // A node keeping a '#' leaf is kept when its other child goes.
        tree.insert("p/#", None, 1, ());
        tree.insert("p/s", None, 1, ());
        tree.remove("p", None, &1);
        tree.remove("p/s", None, &1);
        assert_eq!(tree.node_count(), 2);
        assert_eq!(matched(&tree, "p/z"), vec![(1, ())]);
        tree.remove("p/#", None, &1);
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.hash_leaf_count(), 0);
    }

    #[test]
    fn large_subscriber_lists_use_an_index() {
        let mut tree = SubscriptionTree::new();
        for i in 0..100u32 {
            assert_eq!(tree.insert("t", None, i, i), None);
            assert_eq!(tree.insert("t", Some("g"), i, i), None);
        }
        for i in 0..100u32 {
            assert_eq!(tree.insert("t", None, i, i + 1000), Some(i));
        }
        assert_eq!(tree.len(), 200);
        // Remove the even keys: swap_remove moves entries, the index must follow them.
        for i in (0..100u32).step_by(2) {
            assert_eq!(tree.remove("t", None, &i), Some(i + 1000));
            assert_eq!(tree.remove("t", Some("g"), &i), Some(i));
        }
        for i in 0..100u32 {
            let expected = (i % 2 == 1).then_some(i + 1000);
            assert_eq!(tree.insert("t", None, i, i + 2000), expected, "key {i}");
            if i % 2 == 0 {
                assert_eq!(tree.remove("t", None, &i), Some(i + 2000));
            }
        }
        let mut seen = BTreeSet::new();
        tree.for_each_match(
            "t",
            |_, _| true,
            |k, v| {
                if *v >= 2000 {
                    seen.insert(*k);
                }
            },
        );
        assert_eq!(seen, (1..100).step_by(2).collect());
        for i in (1..100u32).step_by(2) {
            assert_eq!(tree.remove("t", None, &i), Some(i + 2000));
            assert_eq!(tree.remove("t", Some("g"), &i), Some(i));
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    fn shared_counts(
        tree: &SubscriptionTree<u32, ()>,
        topic: &str,
        rounds: usize,
        available: impl Fn(&u32) -> bool,
    ) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..rounds {
            let mut n = 0;
            tree.for_each_match(
                topic,
                |k, _| available(k),
                |k, _| {
                    *counts.entry(*k).or_insert(0) += 1;
                    n += 1;
                },
            );
            assert_eq!(n, 1, "exactly one member of the group per message");
        }
        counts
    }

    #[test]
    fn shared_round_robin_is_even() {
        let mut tree = SubscriptionTree::new();
        for k in 1..=3 {
            tree.insert("jobs/+", Some("workers"), k, ());
        }
        let counts = shared_counts(&tree, "jobs/1", 300, |_| true);
        assert_eq!(counts, BTreeMap::from([(1, 100), (2, 100), (3, 100)]));
        // Consecutive messages go to distinct members.
        let mut order = Vec::new();
        for _ in 0..6 {
            tree.for_each_match("jobs/x", |_, _| true, |k, _| order.push(*k));
        }
        assert_eq!(order[..3].iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(order[..3], order[3..]);
    }

    #[test]
    fn shared_skips_unavailable_members() {
        let mut tree = SubscriptionTree::new();
        for k in 1..=4 {
            tree.insert("jobs", Some("workers"), k, ());
        }
        let counts = shared_counts(&tree, "jobs", 300, |k| *k != 2);
        assert_eq!(counts, BTreeMap::from([(1, 100), (3, 100), (4, 100)]));
        let counts = shared_counts(&tree, "jobs", 300, |k| *k == 3 || *k == 4);
        assert_eq!(counts, BTreeMap::from([(3, 150), (4, 150)]));
        let counts = shared_counts(&tree, "jobs", 10, |k| *k == 1);
        assert_eq!(counts, BTreeMap::from([(1, 10)]));
        // Nobody available: round-robin over everybody anyway.
        let counts = shared_counts(&tree, "jobs", 400, |_| false);
        assert_eq!(
            counts,
            BTreeMap::from([(1, 100), (2, 100), (3, 100), (4, 100)])
        );
    }

    #[test]
    fn shared_groups_are_independent_and_mix_with_plain() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/#", Some("g1"), 1, ());
        tree.insert("a/#", Some("g1"), 2, ());
        tree.insert("a/+", Some("g2"), 3, ());
        tree.insert("a/+", Some("g2"), 4, ());
        tree.insert("a/b", None, 5, ());
        tree.insert("a/b", Some("g1"), 6, ()); // same group name, different filter: a different group
        let mut counts = BTreeMap::new();
        for _ in 0..100 {
            let mut per_message = Vec::new();
            tree.for_each_match("a/b", |_, _| true, |k, _| per_message.push(*k));
            per_message.sort_unstable();
            assert_eq!(per_message.len(), 4, "{per_message:?}");
            assert!(per_message.contains(&5) && per_message.contains(&6));
            for k in per_message {
                *counts.entry(k).or_insert(0) += 1;
            }
        }
        assert_eq!(
            counts,
            BTreeMap::from([(1, 50), (2, 50), (3, 50), (4, 50), (5, 100), (6, 100)])
        );
    }

    #[test]
    fn shared_dollar_rule() {
        let mut tree = SubscriptionTree::new();
        tree.insert("#", Some("g"), 1, ());
        tree.insert("$SYS/#", Some("g"), 2, ());
        assert_eq!(
            shared_counts(&tree, "$SYS/x", 3, |_| true),
            BTreeMap::from([(2, 3)])
        );
        assert_eq!(
            shared_counts(&tree, "x", 3, |_| true),
            BTreeMap::from([(1, 3)])
        );
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        let mut tree = SubscriptionTree::new();
        let deep_filter = "/".repeat(60_000);
        tree.insert(&deep_filter, None, 1, ());
        let plus_filter = ["+"; 30_000].join("/");
        tree.insert(&plus_filter, None, 2, ());
        assert_eq!(matched(&tree, &deep_filter).len(), 1);
        let deep_topic = ["a"; 30_000].join("/");
        assert_eq!(matched(&tree, &deep_topic), vec![(2, ())]);
        assert_eq!(tree.remove(&deep_filter, None, &1), Some(()));
        assert_eq!(tree.node_count(), 30_001);
        // Dropping the remaining deep chain must not recurse either.
        drop(tree);
    }

    #[test]
    fn concurrent_readers() {
        let mut tree = SubscriptionTree::new();
        for k in 0..4u32 {
            tree.insert("t/+", Some("g"), k, ());
            tree.insert("t/#", None, k, ());
        }
        let tree = std::sync::Arc::new(tree);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let tree = tree.clone();
                std::thread::spawn(move || {
                    let mut counts = [0usize; 4];
                    for _ in 0..1000 {
                        let mut n = 0;
                        tree.for_each_match(
                            "t/x",
                            |_, _| true,
                            |k, _| {
                                counts[*k as usize] += 1;
                                n += 1;
                            },
                        );
                        assert_eq!(n, 5);
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0usize; 4];
        for handle in handles {
            for (t, c) in total.iter_mut().zip(handle.join().unwrap()) {
                *t += c;
            }
        }
        // Every reader sees each plain subscription 1000 times; fetch_add spreads the group's 4000 messages
        // exactly evenly.
        assert_eq!(total, [5000; 4]);
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force(
            filters in prop::collection::vec(filter(), 0..24),
            topics in prop::collection::vec(topic(), 1..16),
            removed in prop::collection::vec(any::<bool>(), 24),
        ) {
            let mut tree = SubscriptionTree::new();
            let mut live: BTreeMap<(String, u32), ()> = BTreeMap::new();
            // Keys are taken modulo 3 so that filters repeat with the same key (replacing).
            for (i, f) in filters.iter().enumerate() {
                let key = (i % 3) as u32;
                let previous = tree.insert(f, None, key, ());
                prop_assert_eq!(previous.is_some(), live.insert((f.clone(), key), ()).is_some());
            }
            prop_assert_eq!(tree.len(), live.len());
            for (i, f) in filters.iter().enumerate() {
                if removed[i] {
                    let key = (i % 3) as u32;
                    let expected = live.remove(&(f.clone(), key));
                    prop_assert_eq!(tree.remove(f, None, &key), expected);
                }
            }
            prop_assert_eq!(tree.len(), live.len());
            for topic in &topics {
                let mut got = Vec::new();
                tree.for_each_match(topic, |_, _| true, |k, _| got.push(*k));
                got.sort_unstable();
                let mut expected: Vec<u32> = live
                    .keys()
                    .filter(|(f, _)| matches(f, topic))
                    .map(|(_, k)| *k)
                    .collect();
                expected.sort_unstable();
                prop_assert_eq!(got, expected, "topic {:?}", topic);
            }
            for (f, key) in live.keys() {
                prop_assert_eq!(tree.remove(f, None, key), Some(()));
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 1);
            prop_assert_eq!(tree.hash_leaf_count(), 0);
        }
    }
}
