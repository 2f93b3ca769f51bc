//! The chain: order, defer, topic filters, failure policies, transformer composition.

mod common;

use common::{FixedClock, host};
use std::sync::Arc;
use std::time::Duration;

use wasp_plugin_host::test_programs as guests;
use wasp_plugin_host::types::*;
use wasp_plugin_host::*;

async fn load(
    host: &PluginHost,
    name: &str,
    wasm: &str,
    config: &str,
    failure: FailurePolicy,
) -> Plugin {
    let mut spec = PluginSpec::new(name, wasm);
    spec.config_json = config.to_owned();
    spec.failure = failure;
    spec.limits.call_timeout = Duration::from_millis(100);
    host.load(spec, HostServices::default()).await.unwrap()
}

fn client(username: &str) -> ClientInfo {
    ClientInfo {
        client_id: "c1".to_owned(),
        username: Some(username.to_owned()),
        listener: "default".to_owned(),
        peer_address: "127.0.0.1:50000".to_owned(),
        protocol: ProtocolVersion::V5,
        tls_identity: None,
    }
}

fn auth(username: &str) -> AuthRequest {
    AuthRequest {
        client: client(username),
        password: None,
        auth_method: None,
        auth_data: None,
        reauthentication: false,
    }
}

fn session() -> Session {
    Session {
        client: client("alice"),
        attributes: Vec::new(),
    }
}

fn message(topic: &str) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: b"hi".to_vec(),
        qos: Qos::AtMostOnce,
        retain: false,
        user_properties: Vec::new(),
        content_type: None,
    }
}

fn policy(access: OnAccessFailure, transform: OnTransformFailure) -> FailurePolicy {
    FailurePolicy {
        authenticate: access,
        authorize: access,
        transform,
    }
}

fn decided_by(source: &Source) -> Option<&str> {
    source.plugin().map(Plugin::name)
}

#[tokio::test]
async fn first_non_defer_answer_wins_in_order() {
    let host = host();
    let d = FailurePolicy::default();
    let a = load(&host, "a", guests::ALLOW_DENY, r#"{"users": ["alice"]}"#, d).await;
    let b = load(&host, "b", guests::AUTH_ONLY, "{}", d).await;
    let chain = Chain::new(vec![a, b]);

    let decided = chain.authenticate(&auth("alice")).await;
    assert!(matches!(decided.verdict, AuthVerdict::Allow(_)));
    assert_eq!(decided_by(&decided.source), Some("a"));
    // "a" denies unknown users: "b" is never asked.
    let decided = chain.authenticate(&auth("mallory")).await;
    assert!(matches!(decided.verdict, AuthVerdict::Deny(_)));
    assert_eq!(decided_by(&decided.source), Some("a"));
    // "a" defers this one: "b" allows.
    let decided = chain.authenticate(&auth("nobody-knows")).await;
    assert!(matches!(decided.verdict, AuthVerdict::Allow(_)));
    assert_eq!(decided_by(&decided.source), Some("b"));
    assert_eq!(chain.plugins()[1].stats().total_calls(), 1);
}

#[tokio::test]
async fn all_defer_is_the_listener_default() {
    let host = host();
    let a = load(
        &host,
        "a",
        guests::ALLOW_DENY,
        "{}",
        FailurePolicy::default(),
    )
    .await;
    let chain = Chain::new(vec![a]);
    let decided = chain
        .authorize_publish(&session(), "other/topic", Qos::AtMostOnce, false)
        .await;
    assert_eq!(decided.verdict.decision, Decision::Defer);
    assert!(matches!(decided.source, Source::Default));
    let decided = chain
        .authorize_subscribe(&session(), "other/#", Qos::AtMostOnce)
        .await;
    assert_eq!(decided.verdict.decision, SubscribeDecision::Defer);
    let empty = Chain::default();
    assert!(matches!(
        empty.authenticate(&auth("x")).await.source,
        Source::Default
    ));
}

#[tokio::test]
async fn enhanced_auth_continues_with_the_plugin_that_asked() {
    let host = host();
    let d = FailurePolicy::default();
    let first = load(&host, "first", guests::AUTH_ONLY, "{}", d).await;
    let challenger = load(&host, "challenger", guests::ALLOW_DENY, "{}", d).await;
    // "first" allows everyone, so the challenger goes first here.
    let chain = Chain::new(vec![challenger, first]);
    let mut request = auth("alice");
    request.auth_method = Some("challenge".to_owned());
    let decided = chain.authenticate(&request).await;
    assert_eq!(decided.verdict, AuthVerdict::Continue(b"question".to_vec()));
    let asker = decided.source.plugin().unwrap().clone();
    assert_eq!(asker.name(), "challenger");
    request.auth_data = Some(b"answer".to_vec());
    let decided = chain.resume_authenticate(&asker, &request).await;
    assert_eq!(
        decided.verdict,
        AuthVerdict::Allow(vec![("method".to_owned(), "challenge".to_owned())])
    );
}

#[tokio::test]
async fn publish_hooks_only_reach_plugins_whose_filters_match() {
    let host = host();
    let d = FailurePolicy::default();
    let scoped = load(
        &host,
        "scoped",
        guests::ALLOW_DENY,
        r#"{"filters": ["deny/a/#"]}"#,
        d,
    )
    .await;
    let chain = Chain::new(vec![scoped.clone()]);
    let decided = chain
        .authorize_publish(&session(), "deny/a/1", Qos::AtMostOnce, false)
        .await;
    assert!(matches!(decided.verdict.decision, Decision::Deny(_)));
    let decided = chain
        .authorize_publish(&session(), "deny/b/1", Qos::AtMostOnce, false)
        .await;
    assert_eq!(
        decided.verdict.decision,
        Decision::Defer,
        "filter does not match: not asked"
    );
    assert_eq!(scoped.stats().calls_of(Hook::AuthorizePublish), 1);
    assert!(chain.wants(Hook::AuthorizePublish, Some("deny/a/x")));
    assert!(!chain.wants(Hook::AuthorizePublish, Some("deny/b/x")));
}

#[tokio::test]
async fn a_renamed_topic_is_matched_again_for_the_transformers_after() {
    let host = host();
    let d = FailurePolicy::default();
    let config =
        |filter: &str, tag: &str| format!(r#"{{"filters": ["{filter}"], "tag": "{tag}"}}"#);
    // "rename/x" becomes "renamed/x" at the first plugin; the second only wants the new topic, the
    // third only the old one.
    let renamer = load(
        &host,
        "renamer",
        guests::ALLOW_DENY,
        &config("rename/#", "R"),
        d,
    )
    .await;
    let after = load(
        &host,
        "after",
        guests::ALLOW_DENY,
        &config("renamed/#", "A"),
        d,
    )
    .await;
    let old = load(
        &host,
        "old",
        guests::ALLOW_DENY,
        &config("rename/#", "O"),
        d,
    )
    .await;
    let chain = Chain::new(vec![renamer, after.clone(), old.clone()]);
    let interest = chain.publish_interest("rename/x");
    assert!(interest.transforms() && interest.authorizes());
    assert!(chain.publish_interest("other").is_empty());
    match chain.transform(&session(), &message("rename/x")).await {
        Transformed::Modified(m) => {
            assert_eq!(m.topic, "renamed/x");
            let tags: Vec<&str> = m.user_properties.iter().map(|p| &*p.value).collect();
            assert_eq!(tags, ["R", "A"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(after.stats().calls_of(Hook::Transform), 1);
    assert_eq!(old.stats().calls_of(Hook::Transform), 0);
}

#[tokio::test]
async fn chains_longer_than_the_interest_mask_ask_every_plugin_in_order() {
    let host = host();
    let d = FailurePolicy::default();
    let config = |filter: &str| format!(r#"{{"filters": ["{filter}"], "tag": "T"}}"#);
    let a = load(&host, "a", guests::ALLOW_DENY, &config("a/+"), d).await;
    let b = load(&host, "b", guests::ALLOW_DENY, &config("b/#"), d).await;
    // 70 plugins: `a` at even indexes, `b` at odd ones, past the 64 bits of the interest mask.
    let plugins: Vec<Plugin> = (0..70)
        .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
        .collect();
    let chain = Chain::new(plugins);
    for (topic, wanted) in [
        ("a/1", true),
        ("b", true),
        ("b/1/2", true),
        ("a", false),
        ("c/1", false),
    ] {
        assert_eq!(chain.wants(Hook::Transform, Some(topic)), wanted, "{topic}");
        assert_eq!(chain.publish_interest(topic).is_empty(), !wanted, "{topic}");
    }
    match chain.transform(&session(), &message("b/x")).await {
        Transformed::Modified(m) => assert_eq!(m.user_properties.len(), 35, "every b asked once"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().calls_of(Hook::Transform), 35);
    assert_eq!(a.stats().calls_of(Hook::Transform), 0);
}

#[tokio::test]
async fn access_failure_policies_deny_defer_allow() {
    let host = host();
    let fallback = load(
        &host,
        "fallback",
        guests::AUTH_ONLY,
        "{}",
        FailurePolicy::default(),
    )
    .await;
    for (access, expect_allow, expect_by) in [
        (OnAccessFailure::Deny, false, "trap"),
        (OnAccessFailure::Defer, true, "fallback"),
        (OnAccessFailure::Allow, true, "trap"),
    ] {
        let trap = load(
            &host,
            "trap",
            guests::TRAP,
            "{}",
            policy(access, OnTransformFailure::Pass),
        )
        .await;
        let chain = Chain::new(vec![trap, fallback.clone()]);
        let decided = chain.authenticate(&auth("boom")).await;
        assert_eq!(
            matches!(decided.verdict, AuthVerdict::Allow(_)),
            expect_allow,
            "{access:?}"
        );
        assert_eq!(decided_by(&decided.source), Some(expect_by), "{access:?}");
        if access == OnAccessFailure::Deny {
            assert!(matches!(
                decided.verdict,
                AuthVerdict::Deny(Denial {
                    reason_code: FAILURE_REASON_CODE,
                    ..
                })
            ));
            assert!(matches!(
                decided.source,
                Source::Failure(_, CallError::Trap(_))
            ));
        }
        let decided = chain
            .authorize_publish(&session(), "boom", Qos::AtMostOnce, false)
            .await;
        let expected = match access {
            OnAccessFailure::Deny => matches!(decided.verdict.decision, Decision::Deny(_)),
            // "fallback" has no authorizer: everyone deferred.
            OnAccessFailure::Defer => decided.verdict.decision == Decision::Defer,
            OnAccessFailure::Allow => decided.verdict.decision == Decision::Allow,
        };
        assert!(expected, "{access:?}: {decided:?}");
        let decided = chain
            .authorize_subscribe(&session(), "boom", Qos::AtLeastOnce)
            .await;
        if access == OnAccessFailure::Allow {
            assert_eq!(
                decided.verdict.decision,
                SubscribeDecision::Allow(Qos::AtLeastOnce)
            );
        }
    }
}

#[tokio::test]
async fn a_timeout_follows_the_policy_too() {
    let host = host();
    let spin = load(
        &host,
        "spin",
        guests::SPIN,
        "{}",
        policy(OnAccessFailure::Deny, OnTransformFailure::Drop),
    )
    .await;
    let chain = Chain::new(vec![spin]);
    let decided = chain.authenticate(&auth("spin")).await;
    assert!(matches!(
        decided.source,
        Source::Failure(_, CallError::Timeout)
    ));
    assert!(matches!(decided.verdict, AuthVerdict::Deny(_)));
    let transformed = chain.transform(&session(), &message("spin")).await;
    assert_eq!(
        transformed,
        Transformed::Dropped {
            reason_code: FAILURE_REASON_CODE,
            plugin: "spin".to_owned()
        }
    );
}

#[tokio::test]
async fn transformers_compose_in_order_and_fail_per_policy() {
    let host = host();
    let d = FailurePolicy::default();
    let first = load(
        &host,
        "first",
        guests::ALLOW_DENY,
        r#"{"tag": "A", "filters": ["rename/#"]}"#,
        d,
    )
    .await;
    // Sees the topic as renamed by "first".
    let second = load(
        &host,
        "second",
        guests::ALLOW_DENY,
        r#"{"tag": "B", "filters": ["renamed/#"]}"#,
        d,
    )
    .await;
    let garbage_pass = load(&host, "garbage", guests::GARBAGE, "{}", d).await;
    let chain = Chain::new(vec![first, garbage_pass, second]);
    match chain.transform(&session(), &message("rename/x")).await {
        Transformed::Modified(m) => {
            assert_eq!(m.topic, "renamed/x");
            assert_eq!(m.payload, b"HI");
            let tags: Vec<_> = m.user_properties.iter().map(|p| p.value.as_str()).collect();
            assert_eq!(
                tags,
                ["A", "B"],
                "patches applied in order; garbage's invalid patch ignored (pass)"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        chain
            .transform(&session(), &message("elsewhere/pass"))
            .await,
        Transformed::Unchanged
    );

    let garbage_drop = load(
        &host,
        "garbage-drop",
        guests::GARBAGE,
        "{}",
        policy(OnAccessFailure::Deny, OnTransformFailure::Drop),
    )
    .await;
    let chain = Chain::new(vec![garbage_drop]);
    assert_eq!(
        chain.transform(&session(), &message("t")).await,
        Transformed::Dropped {
            reason_code: FAILURE_REASON_CODE,
            plugin: "garbage-drop".to_owned()
        }
    );

    let dropper = load(&host, "dropper", guests::ALLOW_DENY, "{}", d).await;
    let chain = Chain::new(vec![dropper]);
    assert_eq!(
        chain.transform(&session(), &message("x/drop")).await,
        Transformed::Dropped {
            reason_code: 0x99,
            plugin: "dropper".to_owned()
        }
    );
}

/// WIT 0.1.3: the chain's outcome may be reused for the least lifetime its transformers gave, and not at
/// all once one of them gave none, patched the payload, or answered through the 0.1.0 `transformer`.
#[tokio::test]
async fn reusable_outcomes_take_the_least_lifetime_of_the_chain() {
    let host = host();
    let d = FailurePolicy::default();
    let a30 = load(&host, "a30", guests::REUSE, "A 30", d).await;
    let b10 = load(&host, "b10", guests::REUSE, "B 10", d).await;
    let single_use = load(&host, "single-use", guests::REUSE, "C none", d).await;
    let zero = load(&host, "zero", guests::REUSE, "Z 0", d).await;
    let payload = load(&host, "payload", guests::REUSE, "P 30 payload", d).await;
    // allow-deny exports only `transformer`; it passes `*/pass` unchanged.
    let old = load(&host, "old", guests::ALLOW_DENY, "{}", d).await;
    assert!(a30.exports().cacheable_transformer && !a30.exports().transformer);
    assert!(old.exports().transformer && !old.exports().cacheable_transformer);

    let run = |plugins: Vec<Plugin>| async move {
        let chain = Chain::new(plugins);
        let interest = chain.publish_interest("t/pass");
        chain
            .transform_owned(interest, &session(), message("t/pass"))
            .await
    };
    let both = run(vec![a30.clone(), b10.clone()]).await;
    assert_eq!(both.cache_seconds, Some(10));
    let Transformed::Modified(m) = both.outcome else {
        panic!("expected both patches: {:?}", both.outcome)
    };
    let keys: Vec<&str> = m.user_properties.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["A", "B"]);
    assert_eq!(m.payload, b"hi");

    assert_eq!(run(vec![a30.clone()]).await.cache_seconds, Some(30));
    for spoiler in [single_use, zero, payload, old] {
        let name = spoiler.name().to_owned();
        let first = run(vec![spoiler.clone(), a30.clone()]).await;
        let last = run(vec![a30.clone(), b10.clone(), spoiler]).await;
        assert_eq!(first.cache_seconds, None, "{name} first");
        assert_eq!(last.cache_seconds, None, "{name} last");
    }
}

/// WIT 0.1.4: stamps are set after every transformer of the chain (none sees them), in chain order, at
/// the plugins' clock; the chain returns them for whoever reuses its outcome; a drop has none.
#[tokio::test]
async fn stamps_are_set_after_the_chain_and_kept_for_reuse() {
    let host = host();
    let services = || HostServices {
        clock: Arc::new(FixedClock(1_234)),
        ..HostServices::default()
    };
    let load = |name: &'static str, wasm: &'static str, config: &'static str| {
        let mut spec = PluginSpec::new(name, wasm);
        spec.config_json = config.to_owned();
        host.load(spec, services())
    };
    let stamper = load("stamper", guests::STAMP, "at 60").await.unwrap();
    let tagger = load("tagger", guests::REUSE, "A 30").await.unwrap();
    let dropper = load("dropper", guests::ALLOW_DENY, "{}").await.unwrap();
    assert!(stamper.exports().stamping_transformer && !stamper.exports().transformer);

    let mut forged = message("t/pass");
    forged.user_properties.push(UserProperty {
        key: "at".to_owned(),
        value: "forged".to_owned(),
    });
    let chain = Chain::new(vec![stamper.clone(), tagger.clone()]);
    let result = chain
        .transform_owned(chain.publish_interest("t/pass"), &session(), forged)
        .await;
    assert_eq!(result.cache_seconds, Some(30));
    let stamp = Stamp {
        key: "at".to_owned(),
        value: StampValue::ReceiveTimeMillis,
    };
    assert_eq!(result.stamps, std::slice::from_ref(&stamp));
    let Transformed::Modified(m) = result.outcome else {
        panic!("expected the stamp: {:?}", result.outcome)
    };
    // The tagger saw the forged property (not the stamp) and appended its own; the stamp replaced it.
    let pairs: Vec<(&str, &str)> = m
        .user_properties
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(pairs, [("A", "1"), ("at", "1234")]);

    let chain = Chain::new(vec![stamper.clone(), dropper]);
    let dropped = chain
        .transform_owned(
            chain.publish_interest("x/drop"),
            &session(),
            message("x/drop"),
        )
        .await;
    assert!(matches!(
        dropped.outcome,
        Transformed::Dropped {
            reason_code: 0x99,
            ..
        }
    ));
    assert_eq!(dropped.stamps, []);

    // One plugin's verdict on one message has its stamps set in it.
    match stamper.transform(&session(), &message("t")).await.unwrap() {
        TransformVerdict::Modify(patch) => assert_eq!(
            patch.user_properties,
            Some(vec![UserProperty {
                key: "at".to_owned(),
                value: "1234".to_owned()
            }])
        ),
        other => panic!("expected a stamped patch: {other:?}"),
    }
    let raw = stamper
        .transform_stamping(&session(), &message("t"))
        .await
        .unwrap();
    assert_eq!(
        (raw.verdict, raw.stamps),
        (TransformVerdict::Pass, vec![stamp])
    );

    let nul = load("nul", guests::STAMP, "nul 60").await.unwrap();
    assert!(matches!(
        nul.transform_stamping(&session(), &message("t")).await,
        Err(CallError::InvalidOutput(_))
    ));
}

/// WIT 0.1.5: a verdict for a range of payload sizes makes the chain's outcome reusable for the sizes
/// every answer holds for, and only if they hold the message's; a 0.1.4 caller gets no lifetime.
#[tokio::test]
async fn payload_sizes_narrow_reuse_to_the_sizes_every_answer_holds_for() {
    let host = host();
    let policy = FailurePolicy::default();
    let low = load(&host, "low", guests::SIZED, "0 100 60", policy).await;
    let middle = load(&host, "middle", guests::SIZED, "50 200 30", policy).await;
    let any = load(&host, "any", guests::REUSE, "A 20", policy).await;
    assert!(low.exports().sized_transformer && !low.exports().stamping_transformer);

    let run = |plugins: Vec<Plugin>, size: usize| async move {
        let chain = Chain::new(plugins);
        let mut m = message("t");
        m.payload = vec![b'x'; size];
        let result = chain
            .transform_owned(chain.publish_interest("t"), &session(), m)
            .await;
        (result.cache_seconds, result.payload_sizes)
    };
    assert_eq!(run(vec![low.clone()], 7).await, (Some(60), 0..=100));
    assert_eq!(
        run(vec![low.clone(), middle.clone()], 75).await,
        (Some(30), 50..=100)
    );
    assert_eq!(
        run(vec![any.clone(), middle.clone()], 200).await,
        (Some(20), 50..=200)
    );
    // No transformer named a range: any size.
    assert_eq!(run(vec![any.clone()], 7).await, (Some(20), 0..=u32::MAX));
    // A range without the message's size: not reusable, whichever plugin named it.
    assert_eq!(run(vec![middle.clone(), any.clone()], 7).await.0, None);
    assert_eq!(run(vec![low.clone(), middle.clone()], 150).await.0, None);
    assert_eq!(run(vec![low.clone()], 101).await.0, None);

    // The answer as given, and as a 0.1.4 answer (not reusable: a 0.1.4 reuse ignores the size).
    let raw = low
        .transform_sized(&session(), &message("t"))
        .await
        .unwrap();
    assert_eq!(raw.answer.cache_seconds, Some(60));
    assert_eq!(raw.payload_sizes, Some(PayloadSizes { min: 0, max: 100 }));
    let old = low
        .transform_stamping(&session(), &message("t"))
        .await
        .unwrap();
    assert_eq!(
        (old.verdict, old.cache_seconds),
        (TransformVerdict::Pass, None)
    );
}
