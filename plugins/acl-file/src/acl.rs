//! The ACL file and its access decisions.

use std::collections::HashMap;
use std::fmt;

use crate::topic::{filter_covers, filter_matches, filters_overlap, valid_filter, valid_topic};

/// A line of the file that cannot be used, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive a message published on a topic name (mosquitto's per-delivery `read` check).
    Read,
    /// Publish to a topic name (`write`).
    Write,
    /// Subscribe with a topic filter: granted only when every topic the filter can match is readable.
    Subscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Perm {
    fn reads(self) -> bool {
        matches!(self, Perm::Read | Perm::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Perm::Write | Perm::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    filter: String,
    perm: Perm,
}

/// Rules in mosquitto's evaluation order: `deny` rules first, the others in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleList(Vec<Rule>);

impl RuleList {
    fn push(&mut self, rule: Rule) {
        if rule.perm == Perm::Deny {
            let denies = self.0.iter().take_while(|r| r.perm == Perm::Deny).count();
            self.0.insert(denies, rule);
        } else {
            self.0.push(rule);
        }
    }
}

/// A parsed mosquitto ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    /// `topic` lines before the first `user` line: clients without a username.
    anonymous: RuleList,
    /// `topic` lines after `user <name>` (sections of the same user are merged, as mosquitto does).
    users: HashMap<String, RuleList>,
    /// `pattern` lines, wherever they appear: every client, with `%c`/`%u` substituted.
    patterns: RuleList,
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

impl AclFile {
    /// Parses the text of an ACL file (syntax of mosquitto.conf(5), `acl_file`).
    ///
    /// `# ...` comments and blank lines are skipped. `topic [read|write|readwrite|deny] <filter>` and
    /// `pattern [read|write|readwrite|deny] <filter>` (the access defaults to readwrite; the filter is the
    /// rest of the line and may contain spaces), `user <name>` (the rest of the line). Unknown keywords,
    /// unknown access types, invalid filters and empty usernames are errors, as in mosquitto 2.
    pub fn parse(text: &str) -> Result<AclFile, ParseError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ParseError { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(trimmed);
            match keyword {
                "topic" | "pattern" => {
                    let (first, remainder) = split_word(rest);
                    if first.is_empty() {
                        return Err(err(format!("{keyword} without a topic")));
                    }
                    let (perm, filter) = if remainder.is_empty() {
                        (Perm::ReadWrite, first)
                    } else {
                        let perm = match first {
                            "read" => Perm::Read,
                            "write" => Perm::Write,
                            "readwrite" => Perm::ReadWrite,
                            "deny" => Perm::Deny,
                            other => {
                                return Err(err(format!(
                                    "invalid access type {other:?} (read, write, readwrite or deny)"
                                )));
                            }
                        };
                        (perm, remainder)
                    };
                    if !valid_filter(filter) {
                        return Err(err(format!("invalid topic filter {filter:?}")));
                    }
                    let rule = Rule {
                        filter: filter.to_owned(),
                        perm,
                    };
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            None => acl.anonymous.push(rule),
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        }
                    }
                }
                "user" => {
                    if rest.is_empty() {
                        return Err(err("user without a username".into()));
                    }
                    user = Some(rest.to_owned());
                }
                other => return Err(err(format!("unknown keyword {other:?}"))),
            }
        }
        Ok(acl)
    }

    /// Whether the client may do `access` on `topic_or_filter` (a topic name for `Read` and `Write`, a
    /// filter for `Subscribe`). Denied unless a rule allows it.
    ///
    /// Order, as mosquitto 2's `acl_file` check: the client's own rules (its username's section, or the
    /// anonymous rules when it has no username), `deny` first, the first match decides; then, if the
    /// file has `pattern` lines and the username or client id contains `+` or `#`, deny; then the
    /// patterns the same way; then deny.
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic_or_filter: &str,
        access: Access,
    ) -> bool {
        let valid = match access {
            Access::Read | Access::Write => valid_topic(topic_or_filter),
            Access::Subscribe => valid_filter(topic_or_filter),
        };
        if !valid {
            return false;
        }
        let own = match username {
            Some(u) => self.users.get(u),
            None => Some(&self.anonymous),
        };
        for rule in own.map(|l| l.0.as_slice()).unwrap_or_default() {
            if let Some(decision) = decide(&rule.filter, rule.perm, topic_or_filter, access) {
                return decision;
            }
        }
        if self.patterns.0.is_empty() {
            return false;
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if username.is_some_and(dangerous) || dangerous(client_id) {
            return false;
        }
        for rule in &self.patterns.0 {
            let Some(filter) = substitute(&rule.filter, client_id, username) else {
                continue;
            };
            if let Some(decision) = decide(&filter, rule.perm, topic_or_filter, access) {
                return decision;
            }
        }
        false
    }
}

/// One rule's verdict, `None` when the rule does not apply and the next one is asked.
fn decide(filter: &str, perm: Perm, target: &str, access: Access) -> Option<bool> {
    match access {
        Access::Read | Access::Write => {
            if !filter_matches(filter, target) {
                None
            } else if perm == Perm::Deny {
                Some(false)
            } else if (access == Access::Read && perm.reads())
                || (access == Access::Write && perm.writes())
            {
                Some(true)
            } else {
                None
            }
        }
        Access::Subscribe => {
            if perm == Perm::Deny {
                // Some topic of the subscription would be denied: refuse the whole filter.
                filters_overlap(filter, target).then_some(false)
            } else if perm.reads() && filter_covers(filter, target) {
                Some(true)
            } else {
                None
            }
        }
    }
}

/// `%c` and `%u` replaced by the client id and username; `None` (the pattern does not apply) when the
/// pattern needs a username the client does not have, or an identifier that is empty or contains `/`
/// (which would let it span, and reach into, other levels of the hierarchy).
fn substitute(pattern: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    let usable = |s: &str| !s.is_empty() && !s.contains('/');
    if pattern.contains("%u") && !username.is_some_and(usable) {
        return None;
    }
    if pattern.contains("%c") && !usable(client_id) {
        return None;
    }
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '%' {
            match chars.peek() {
                Some('c') => {
                    chars.next();
                    out.push_str(client_id);
                    continue;
                }
                Some('u') => {
                    chars.next();
                    out.push_str(username.unwrap_or_default());
                    continue;
                }
                _ => {}
            }
        }
        out.push(ch);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> AclFile {
        AclFile::parse(text).unwrap()
    }

    /// The example of mosquitto.conf(5) / aclfile.example.
    const MOSQUITTO_EXAMPLE: &str = "\
# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
";

    #[test]
    fn mosquitto_documentation_example() {
        let a = acl(MOSQUITTO_EXAMPLE);
        // Anonymous clients can read $SYS but not write it.
        assert!(a.check("anon", None, "$SYS/broker/uptime", Access::Read));
        assert!(!a.check("anon", None, "$SYS/broker/uptime", Access::Write));
        assert!(a.check("anon", None, "$SYS/#", Access::Subscribe));
        assert!(!a.check("anon", None, "foo/bar", Access::Read));
        // roger has readwrite on foo/bar only (and no $SYS read: anonymous rules are not his).
        assert!(a.check("r1", Some("roger"), "foo/bar", Access::Read));
        assert!(a.check("r1", Some("roger"), "foo/bar", Access::Write));
        assert!(a.check("r1", Some("roger"), "foo/bar", Access::Subscribe));
        assert!(!a.check("r1", Some("roger"), "foo/baz", Access::Write));
        assert!(!a.check("r1", Some("roger"), "$SYS/broker/uptime", Access::Read));
        // The pattern: every client may write its own bridge state topic.
        let own = "$SYS/broker/connection/bridge-1/state";
        assert!(a.check("bridge-1", None, own, Access::Write));
        assert!(a.check("bridge-1", Some("roger"), own, Access::Write));
        assert!(!a.check("bridge-2", Some("roger"), own, Access::Write));
        assert!(!a.check("bridge-1", Some("roger"), own, Access::Read));
        // A user without a section still gets the patterns, and nothing else.
        assert!(a.check("bridge-1", Some("other"), own, Access::Write));
        assert!(!a.check("c", Some("other"), "foo/bar", Access::Read));
    }

    #[test]
    fn deny_by_default_and_for_empty_files() {
        let a = acl("");
        for access in [Access::Read, Access::Write, Access::Subscribe] {
            assert!(!a.check("c", None, "a", access));
            assert!(!a.check("c", Some("u"), "a", access));
        }
    }

    #[test]
    fn access_types() {
        let a = acl("user u\ntopic read r/#\ntopic write w/#\ntopic readwrite rw/#\ntopic rw2/#\n");
        let c = |t, acc| a.check("c", Some("u"), t, acc);
        assert!(c("r/x", Access::Read) && !c("r/x", Access::Write));
        assert!(!c("w/x", Access::Read) && c("w/x", Access::Write));
        assert!(c("rw/x", Access::Read) && c("rw/x", Access::Write));
        assert!(c("rw2/x", Access::Read) && c("rw2/x", Access::Write));
        assert!(c("r/#", Access::Subscribe) && !c("w/#", Access::Subscribe));
    }

    #[test]
    fn deny_rules_win_wherever_they_are_written() {
        let a = acl("user u\ntopic readwrite home/#\ntopic deny home/secret/#\n");
        let c = |t, acc| a.check("c", Some("u"), t, acc);
        assert!(c("home/kitchen", Access::Write));
        assert!(!c("home/secret/key", Access::Write));
        assert!(!c("home/secret/key", Access::Read));
        assert!(!c("home/secret", Access::Read));
        // A subscription that could receive a denied topic is refused; one beside it is not.
        assert!(!c("home/#", Access::Subscribe));
        assert!(!c("home/+/key", Access::Subscribe));
        assert!(c("home/kitchen/#", Access::Subscribe));
    }

    #[test]
    fn user_deny_beats_pattern_allow_but_user_allow_beats_pattern_deny() {
        let a = acl(
            "user u\ntopic deny x/u\ntopic read y/#\npattern readwrite x/%u\npattern deny y/%c\n",
        );
        assert!(!a.check("c", Some("u"), "x/u", Access::Write));
        assert!(a.check("c", Some("v"), "x/v", Access::Write));
        // u's own read rule decides before the patterns are looked at.
        assert!(a.check("c", Some("u"), "y/c", Access::Read));
        assert!(!a.check("c", Some("v"), "y/c", Access::Read));
    }

    #[test]
    fn subscribe_needs_a_read_rule_covering_the_whole_filter() {
        let a = acl("topic read sensors/+/temp\ntopic read public/#\ntopic write cmd/#\n");
        let s = |f| a.check("c", None, f, Access::Subscribe);
        assert!(s("sensors/+/temp"));
        assert!(s("sensors/kitchen/temp"));
        assert!(!s("sensors/#"));
        assert!(!s("sensors/+/+"));
        assert!(s("public/#"));
        assert!(s("public"));
        assert!(s("public/+/x/#"));
        assert!(!s("#"));
        assert!(!s("+/#"));
        assert!(!s("cmd/#"));
        // Invalid filters and topics are refused.
        assert!(!s("public/#/x"));
        assert!(!a.check("c", None, "public/+", Access::Read));
        assert!(!a.check("c", None, "", Access::Write));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let a = acl("topic readwrite #\ntopic read +/x\n");
        assert!(a.check("c", None, "a/b", Access::Write));
        assert!(!a.check("c", None, "$SYS/x", Access::Read));
        assert!(!a.check("c", None, "$SYS/#", Access::Subscribe));
        assert!(!a.check("c", None, "$share/g/x", Access::Write));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let a = acl(
            "pattern readwrite devices/%u/#\npattern read clients/%c\npattern write u/%u/c/%c\n",
        );
        assert!(a.check("c1", Some("alice"), "devices/alice/temp", Access::Write));
        assert!(a.check("c1", Some("alice"), "devices/alice/#", Access::Subscribe));
        assert!(!a.check("c1", Some("alice"), "devices/bob/temp", Access::Write));
        assert!(!a.check("c1", Some("alice"), "devices/+/temp", Access::Subscribe));
        assert!(a.check("c1", Some("alice"), "clients/c1", Access::Read));
        assert!(!a.check("c1", Some("alice"), "clients/c2", Access::Read));
        assert!(a.check("c1", Some("alice"), "u/alice/c/c1", Access::Write));
        // %u patterns do not apply to clients without a username (nor with an empty one); %c ones do.
        assert!(!a.check("c1", None, "devices/%u/x", Access::Write));
        assert!(!a.check("c1", None, "devices//x", Access::Write));
        assert!(!a.check("c1", Some(""), "devices//x", Access::Write));
        assert!(a.check("c1", None, "clients/c1", Access::Read));
    }

    #[test]
    fn wildcard_identifiers_get_no_pattern_access_at_all() {
        let a = acl("pattern readwrite devices/%u/#\npattern readwrite clients/%c\n");
        // A username of "+" would otherwise turn devices/+/# into everybody's devices.
        assert!(!a.check("c1", Some("+"), "devices/bob/x", Access::Write));
        assert!(!a.check("c1", Some("+"), "devices/+/#", Access::Subscribe));
        assert!(!a.check("c1", Some("#"), "devices/bob", Access::Read));
        // As in mosquitto, a dangerous identifier loses every pattern, not only the ones naming it.
        assert!(!a.check("c1", Some("a+b"), "clients/c1", Access::Read));
        assert!(!a.check("c#", Some("alice"), "devices/alice/x", Access::Write));
    }

    #[test]
    fn slashes_in_identifiers_do_not_span_levels() {
        let a = acl("pattern readwrite devices/%u/#\npattern readwrite clients/%c\n");
        // "bob/x" must not reach into bob's subtree, nor "a/b" into two levels.
        assert!(!a.check("c1", Some("bob/x"), "devices/bob/x/y", Access::Write));
        assert!(!a.check("c1", Some("a/b"), "devices/a/b", Access::Read));
        assert!(!a.check("c/3", Some("zed"), "clients/c/3", Access::Read));
        // The other patterns still apply.
        assert!(a.check("c/3", Some("zed"), "devices/zed/q", Access::Write));
        assert!(a.check("c3", Some("bob/x"), "clients/c3", Access::Read));
    }

    #[test]
    fn user_own_rules_do_not_care_about_dangerous_names() {
        // The check on + and # only guards the patterns; explicit sections name a user literally.
        let a = acl("user we+ird\ntopic read a/b\npattern read x/%u\n");
        assert!(a.check("c", Some("we+ird"), "a/b", Access::Read));
        assert!(!a.check("c", Some("we+ird"), "x/we+ird", Access::Read));
    }

    #[test]
    fn user_sections_merge_and_patterns_ignore_position() {
        let a =
            acl("user a\ntopic one\nuser b\ntopic two\npattern read p/%u\nuser a\ntopic three\n");
        assert!(a.check("c", Some("a"), "one", Access::Write));
        assert!(a.check("c", Some("a"), "three", Access::Write));
        assert!(!a.check("c", Some("a"), "two", Access::Write));
        assert!(a.check("c", Some("b"), "two", Access::Write));
        assert!(a.check("c", Some("a"), "p/a", Access::Read));
        assert!(!a.check("c", None, "one", Access::Write));
    }

    #[test]
    fn topics_and_usernames_may_contain_spaces() {
        let a = acl("user John Smith\ntopic read my  topic/with spaces\ntopic   read    a b  \n");
        assert!(a.check(
            "c",
            Some("John Smith"),
            "my  topic/with spaces",
            Access::Read
        ));
        assert!(a.check("c", Some("John Smith"), "a b", Access::Read));
        assert!(!a.check("c", Some("John Smith"), "a b", Access::Write));
    }

    #[test]
    fn tabs_comments_and_crlf() {
        let a = acl("  # indented comment\r\n\ttopic\tread\ta/b\r\n\r\n");
        assert!(a.check("c", None, "a/b", Access::Read));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            ("topic read a\nfoo bar\n", 2, "unknown keyword"),
            ("topic\n", 1, "without a topic"),
            ("\n\ntopic reed a/b\n", 3, "invalid access type"),
            ("topic read a/#/b\n", 1, "invalid topic filter"),
            ("pattern write a/%u+\n", 1, "invalid topic filter"),
            ("user\n", 1, "without a username"),
            ("user   \n", 1, "without a username"),
        ];
        for (text, line, needle) in cases {
            let e = AclFile::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn one_word_topic_lines_are_readwrite_even_for_keyword_like_topics() {
        let a = acl("topic read\ntopic deny\n");
        // "topic read" is the topic "read" with readwrite access, as in mosquitto.
        assert!(a.check("c", None, "read", Access::Write));
        assert!(a.check("c", None, "deny", Access::Read));
    }

    #[test]
    fn substitution() {
        assert_eq!(
            substitute("a/%c/%u", "cid", Some("usr")).as_deref(),
            Some("a/cid/usr")
        );
        assert_eq!(
            substitute("a/x%cy", "cid", None).as_deref(),
            Some("a/xcidy")
        );
        assert_eq!(
            substitute("a/%%c/%x", "cid", None).as_deref(),
            Some("a/%cid/%x")
        );
        assert_eq!(substitute("a/%u", "cid", None), None);
        assert_eq!(substitute("a/%c", "", None), None);
        assert_eq!(substitute("plain", "", None).as_deref(), Some("plain"));
    }
}
