//! The transform plugin through its real `.wasm`, loaded by the broker's own plugin host.

use std::time::Duration;

use wasp_plugin_harness::{
    Harness, Hooks, HostError, Message, MessagePatch, Session, Stamp, StampValue, TransformVerdict,
    UserProperty, client, message, plugin_wasm,
};
use wasp_plugin_transform::REUSE_SECONDS;

const RULES: &str = r#"
[[rules]]
filter = "devices/+/raw"
rewrite_topic = "telemetry/{1}"
stamp_time_property = "received-at"
stamp_client_id_property = "client-id"

[[rules]]
filter = "uploads/#"
max_payload_bytes = 16

[[rules]]
filter = "json/#"
require_json = true

[[rules]]
filter = "strict/+"
max_payload_bytes = 4
oversize_reason = 0x80
require_json = true
invalid_json_reason = 0x83
"#;

fn plugin() -> Harness {
    Harness::load(plugin_wasm!())
        .config_toml(RULES)
        .build()
        .unwrap()
}

fn session(client_id: &str) -> Session {
    client(client_id).username("u").session(&[])
}

fn transform(plugin: &Harness, msg: Message) -> TransformVerdict {
    plugin.transform(&session("dev-7"), msg).unwrap()
}

fn property(key: &str, value: &str) -> UserProperty {
    UserProperty {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn init_error(config_toml: &str) -> String {
    match Harness::load(plugin_wasm!())
        .config_toml(config_toml)
        .build()
    {
        Err(HostError::InitRejected { message, .. }) => message,
        Err(other) => panic!("expected init to refuse the configuration, got {other}"),
        Ok(_) => panic!("expected init to refuse the configuration"),
    }
}

#[test]
fn the_interests_are_the_rules_filters() {
    let plugin = plugin();
    assert_eq!(plugin.interests().hooks, Hooks::TRANSFORM);
    assert_eq!(
        plugin.interests().publish_filters,
        ["devices/+/raw", "uploads/#", "json/#", "strict/+"]
    );
}

#[test]
fn topics_are_rewritten_and_stamped_with_the_clock_and_the_client_id() {
    let plugin = plugin();
    plugin.clock().set_millis(1_700_000_123_456);
    let mut msg = message("devices/42/raw", *b"21.5");
    // A forged stamp is replaced; other properties stay, in order.
    msg.user_properties = vec![property("client-id", "forged"), property("unit", "C")];
    let expected = MessagePatch {
        topic: Some("telemetry/42".to_owned()),
        payload: None,
        qos: None,
        retain: None,
        // The time stamp is the broker's (WIT 0.1.4): set after the plugin's patch, so last.
        user_properties: Some(vec![
            property("unit", "C"),
            property("client-id", "dev-7"),
            property("received-at", "1700000123456"),
        ]),
    };
    assert_eq!(
        transform(&plugin, msg.clone()),
        TransformVerdict::Modify(expected.clone())
    );

    plugin.clock().advance(Duration::from_millis(1_544));
    let verdict = plugin.transform(&session("other"), msg).unwrap();
    let TransformVerdict::Modify(patch) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        patch.user_properties.unwrap()[1..],
        [
            property("client-id", "other"),
            property("received-at", "1700000125000"),
        ]
    );
    assert_eq!(plugin.metrics(), [("modified".to_owned(), 2)]);
}

#[test]
fn oversized_payloads_are_dropped_with_quota_exceeded() {
    let plugin = plugin();
    assert_eq!(
        transform(&plugin, message("uploads/a/b", [0u8; 17])),
        TransformVerdict::Drop(0x97)
    );
    assert_eq!(
        transform(&plugin, message("uploads/a/b", [0u8; 16])),
        TransformVerdict::Pass
    );
    assert_eq!(
        transform(&plugin, message("uploads", [0u8; 17])),
        TransformVerdict::Drop(0x97)
    );
    assert_eq!(plugin.metrics(), [("dropped".to_owned(), 2)]);
}

#[test]
fn payloads_that_are_not_json_are_dropped_with_payload_format_invalid() {
    let plugin = plugin();
    for bad in [&b"{\"t\": 1"[..], b"", b"1 2", b"\xff\"x\""] {
        assert_eq!(
            transform(&plugin, message("json/x", bad)),
            TransformVerdict::Drop(0x99),
            "{bad:?}"
        );
    }
    for good in [&b"{\"t\": [1, 2.5, null]}"[..], b" \"text\" ", b"7"] {
        assert_eq!(
            transform(&plugin, message("json/x", good)),
            TransformVerdict::Pass,
            "{good:?}"
        );
    }
}

#[test]
fn configured_drop_reasons_are_used() {
    let plugin = plugin();
    assert_eq!(
        transform(&plugin, message("strict/a", *b"12345")),
        TransformVerdict::Drop(0x80)
    );
    assert_eq!(
        transform(&plugin, message("strict/a", *b"{x}")),
        TransformVerdict::Drop(0x83)
    );
    assert_eq!(
        transform(&plugin, message("strict/a", *b"[1]")),
        TransformVerdict::Pass
    );
}

#[test]
fn other_topics_pass_through_unchanged() {
    let plugin = plugin();
    let mut msg = message(
        "devices/42/cooked",
        *b"not json at all, and longer than sixteen bytes",
    );
    msg.user_properties = vec![property("client-id", "kept")];
    assert_eq!(transform(&plugin, msg), TransformVerdict::Pass);
    assert_eq!(
        transform(&plugin, message("devices/42/raw/x", *b"x")),
        TransformVerdict::Pass
    );
    // A wildcard-first filter would not match `$` topics; these filters do not either.
    assert_eq!(
        transform(&plugin, message("$SYS/uploads", [0u8; 64])),
        TransformVerdict::Pass
    );
    assert!(plugin.metrics().is_empty(), "{:?}", plugin.metrics());
}

#[test]
fn bad_configurations_are_rejected_at_init() {
    let message = init_error("");
    assert!(message.contains("missing field `rules`"), "{message}");
    let message = init_error("rules = []");
    assert!(message.contains("no rule"), "{message}");
    let message = init_error("[[rules]]\nfilter = 'a/+'\nrewrite_topic = 'b/{2}'");
    assert!(
        message.contains("rules[0].rewrite_topic: {2} refers to no wildcard"),
        "{message}"
    );
    let message = init_error("[[rules]]\nfilter = 'a/#/b'\nrequire_json = true");
    assert!(
        message.contains("rules[0].filter: invalid topic filter"),
        "{message}"
    );
    let message = init_error("[[rules]]\nfilter = 'a'\nmax_bytes = 3");
    assert!(message.contains("unknown field `max_bytes`"), "{message}");
    let message = init_error("[[rules]]\nfilter = 'a'");
    assert!(message.contains("the rule does nothing"), "{message}");
}

#[test]
fn verdicts_are_reusable_with_time_stamps_and_size_limits_but_not_json_checks() {
    let plugin = Harness::load(plugin_wasm!())
        .config_toml(
            r#"
[[rules]]
filter = "site/+/in"
rewrite_topic = "in/{1}"
stamp_client_id_property = "client-id"

[[rules]]
filter = "site/+/checked"
rewrite_topic = "checked/{1}"
require_json = true

[[rules]]
filter = "site/+/sized"
max_payload_bytes = 4

[[rules]]
filter = "site/+/timed"
stamp_time_property = "at"
"#,
        )
        .build()
        .unwrap();
    assert!(plugin.exports().sized_transformer);
    let session = session("dev-7");
    let reused = plugin
        .transform_cacheable(&session, message("site/3/in", *b"x"))
        .unwrap();
    assert_eq!(
        reused.verdict,
        TransformVerdict::Modify(MessagePatch {
            topic: Some("in/3".to_owned()),
            payload: None,
            qos: None,
            retain: None,
            user_properties: Some(vec![property("client-id", "dev-7")]),
        })
    );
    assert_eq!(reused.cache_seconds, Some(REUSE_SECONDS));
    // The same verdict through the 0.1.0 `transformer` path, without a lifetime.
    assert_eq!(
        plugin
            .transform(&session, message("site/3/in", *b"x"))
            .unwrap(),
        reused.verdict
    );
    // A JSON check reads the payload: never reusable. A size limit is reusable for the sizes on the
    // same side of the limit (WIT 0.1.5), so not for a 0.1.4 broker.
    for (topic, payload) in [("site/3/checked", &b"{}"[..]), ("site/3/sized", &b"12"[..])] {
        let answer = plugin
            .transform_stamping(&session, message(topic, payload.to_vec()))
            .unwrap();
        assert_eq!(answer.cache_seconds, None, "{topic}: {answer:?}");
    }
    let checked = plugin
        .transform_sized(&session, message("site/3/checked", *b"{}"))
        .unwrap();
    assert_eq!(checked.answer.cache_seconds, None, "{checked:?}");
    for (payload, verdict, sizes) in [
        (&b"1234"[..], TransformVerdict::Pass, (0, 4)),
        (&b"12345"[..], TransformVerdict::Drop(0x97), (5, u32::MAX)),
    ] {
        let sized = plugin
            .transform_sized(&session, message("site/3/sized", payload.to_vec()))
            .unwrap();
        assert_eq!(
            (sized.answer.verdict, sized.answer.cache_seconds),
            (verdict, Some(REUSE_SECONDS))
        );
        let range = sized.payload_sizes.expect("a range");
        assert_eq!((range.min, range.max), sizes);
    }
    // Without a size limit, no range: a 0.1.4 broker reuses it too.
    let rewrite = plugin
        .transform_sized(&session, message("site/3/in", *b"x"))
        .unwrap();
    assert_eq!(rewrite.payload_sizes, None);
    // A time stamp is the broker's to set on each message: the verdict itself is reusable.
    let timed = plugin
        .transform_stamping(&session, message("site/3/timed", *b"x"))
        .unwrap();
    assert_eq!(
        (timed.verdict, timed.cache_seconds),
        (TransformVerdict::Pass, Some(REUSE_SECONDS))
    );
    assert_eq!(
        timed.stamps,
        [Stamp {
            key: "at".to_owned(),
            value: StampValue::ReceiveTimeMillis
        }]
    );
    // As a 0.1.3 answer (the stamp set at the harness's clock), it is not reusable.
    plugin.clock().set_millis(77);
    let answer = plugin
        .transform_cacheable(&session, message("site/3/timed", *b"x"))
        .unwrap();
    assert_eq!(
        (answer.verdict, answer.cache_seconds),
        (
            TransformVerdict::Modify(MessagePatch {
                topic: None,
                payload: None,
                qos: None,
                retain: None,
                user_properties: Some(vec![property("at", "77")]),
            }),
            None
        )
    );
    // A topic no rule matches is never asked by the broker; its pass would be reusable.
    let pass = plugin
        .transform_cacheable(&session, message("elsewhere", *b"x"))
        .unwrap();
    assert_eq!(
        (pass.verdict, pass.cache_seconds),
        (TransformVerdict::Pass, Some(REUSE_SECONDS))
    );
}
