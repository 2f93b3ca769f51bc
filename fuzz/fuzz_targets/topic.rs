//! Feeds arbitrary text to the topic rules of `wasp_mqtt::topic`: every line of the input is validated as a
//! topic name, as a topic filter and as a (possibly shared) filter, which must never panic and must agree
//! with each other; the lines that are valid filters go into a `FilterTree`, and for every line that is a
//! valid topic name the tree must find exactly the filters that `matches` (the reference definition) says
//! match it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasp_mqtt::topic::{
    Filter, FilterTree, matches, parse_filter, validate_topic_filter, validate_topic_name,
};

/// Lines looked at per input: the tree check is quadratic in them.
const MAX_LINES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').take(MAX_LINES).collect();

    let mut filters = Vec::new();
    let mut names = Vec::new();
    for &line in &lines {
        let name = validate_topic_name(line);
        let filter = validate_topic_filter(line);
        if name.is_ok() {
            assert_eq!(
                filter,
                Ok(()),
                "{line:?} is a valid name but not a valid filter"
            );
            assert!(
                matches(line, line),
                "the name {line:?} does not match itself"
            );
            names.push(line);
        }
        match parse_filter(line) {
            Ok(Filter::Plain(f)) => {
                assert_eq!(f, line);
                assert_eq!(filter, Ok(()), "parse_filter accepted {line:?}");
            }
            Ok(Filter::Shared {
                group,
                filter: inner,
            }) => {
                assert!(
                    !group.is_empty() && !group.contains(['/', '+', '#']),
                    "group {group:?}"
                );
                assert_eq!(
                    validate_topic_filter(inner),
                    Ok(()),
                    "inner filter of {line:?}"
                );
                assert_eq!(line, format!("$share/{group}/{inner}"));
            }
            // Everything `parse_filter` refuses as a plain filter is refused by `validate_topic_filter` too,
            // except shared-subscription syntax errors.
            Err(_) if !line.starts_with("$share/") => {
                assert!(
                    filter.is_err(),
                    "parse_filter refused the valid filter {line:?}"
                );
            }
            Err(_) => {}
        }
        if filter.is_ok() {
            filters.push(line);
        }
    }

    let mut tree = FilterTree::new();
    for (i, filter) in filters.iter().enumerate() {
        tree.insert(filter, i);
    }
    assert_eq!(tree.len(), filters.len());
    for name in names {
        let mut found = Vec::new();
        tree.for_each_match(name, |&i| found.push(i));
        found.sort_unstable();
        let expected: Vec<usize> = (0..filters.len())
            .filter(|&i| matches(filters[i], name))
            .collect();
        assert_eq!(
            found, expected,
            "FilterTree and matches disagree on {name:?}, filters {filters:?}"
        );
        assert_eq!(tree.any_match(name), !expected.is_empty());
    }
});
