//! Host-side tests, one or more per guest test program (`test-programs/`): faults are contained (the
//! call returns `Err`, is counted, the instance is recycled, the next call works), failure policies
//! hold, and the sandbox grants nothing but what the spec grants.

mod common;

use common::{FixedClock, host};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasp_plugin_host::test_programs as guests;
use wasp_plugin_host::types::*;
use wasp_plugin_host::*;

/// A log sink that keeps the records.
#[derive(Default)]
struct Captured(Mutex<Vec<LogRecord>>);

impl LogSink for Captured {
    fn log(&self, record: LogRecord) {
        self.0.lock().push(record);
    }
}

async fn load(host: &PluginHost, name: &str, wasm: &str, config: &str) -> Plugin {
    let mut spec = PluginSpec::new(name, wasm);
    spec.config_json = config.to_owned();
    host.load(spec, HostServices::default()).await.unwrap()
}

fn client(id: &str, username: Option<&str>) -> ClientInfo {
    ClientInfo {
        client_id: id.to_owned(),
        username: username.map(str::to_owned),
        listener: "default".to_owned(),
        peer_address: "127.0.0.1:50000".to_owned(),
        protocol: ProtocolVersion::V5,
        tls_identity: None,
    }
}

fn auth(username: &str) -> AuthRequest {
    AuthRequest {
        client: client("c1", Some(username)),
        password: Some(b"pw".to_vec()),
        auth_method: None,
        auth_data: None,
        reauthentication: false,
    }
}

fn session() -> Session {
    Session {
        client: client("c1", Some("alice")),
        attributes: vec![("user".to_owned(), "alice".to_owned())],
    }
}

fn message(topic: &str) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: b"hello".to_vec(),
        qos: Qos::AtLeastOnce,
        retain: false,
        user_properties: Vec::new(),
        content_type: None,
    }
}

#[tokio::test]
async fn allow_deny_answers_every_hook_and_uses_the_host_imports() {
    let host = host();
    let logs = Arc::new(Captured::default());
    let kv = Arc::new(MemoryKv::default());
    let services = HostServices {
        clock: Arc::new(FixedClock(1_000)),
        kv: kv.clone(),
        log: logs.clone(),
        http: None,
    };
    let mut spec = PluginSpec::new("users", guests::ALLOW_DENY);
    spec.config_json =
        r#"{"users": ["alice", "bob"], "filters": ["a/#", "rename/#"], "expires_at": 5000}"#
            .to_owned();
    let plugin = host.load(spec, services).await.unwrap();

    assert_eq!(
        plugin.exports(),
        Exports {
            authenticator: true,
            authorizer: true,
            transformer: true,
            cacheable_transformer: false,
            stamping_transformer: false,
            sized_transformer: false,
            ticker: true,
            storage: false,
        }
    );
    assert_eq!(
        plugin.interests().publish_filters,
        vec!["a/#".to_owned(), "rename/#".to_owned()]
    );
    assert!(plugin.interests().hooks.contains(Hooks::TRANSFORM));

    let verdict = plugin.authenticate(&auth("alice")).await.unwrap();
    assert_eq!(
        verdict,
        AuthVerdict::Allow(vec![("user".to_owned(), "alice".to_owned())])
    );
    let verdict = plugin.authenticate(&auth("mallory")).await.unwrap();
    assert!(matches!(
        verdict,
        AuthVerdict::Deny(Denial {
            reason_code: 0x86,
            ..
        })
    ));

    let publish = plugin
        .authorize_publish(&session(), "deny/x", Qos::AtMostOnce, false)
        .await
        .unwrap();
    assert!(matches!(
        publish.decision,
        Decision::Deny(Denial {
            reason_code: 0x87,
            ..
        })
    ));
    assert_eq!(publish.cache_seconds, Some(30));
    let subscribe = plugin
        .authorize_subscribe(&session(), "allow/#", Qos::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        subscribe.decision,
        SubscribeDecision::Allow(Qos::AtLeastOnce)
    );

    match plugin.transform(&session(), &message("a/b")).await.unwrap() {
        TransformVerdict::Modify(patch) => {
            assert_eq!(patch.payload.as_deref(), Some(&b"HELLO"[..]))
        }
        other => panic!("expected a patch, got {other:?}"),
    }

    // kv (the guest counts its authentications), metrics, log (with the plugin's name), stdio.
    assert_eq!(kv.get("seen"), Some(2u64.to_le_bytes().to_vec()));
    assert_eq!(plugin.metrics(), vec![("authenticate".to_owned(), 2)]);
    let records = logs.0.lock().clone();
    assert!(
        records
            .iter()
            .any(|r| r.message == "initialised" && &*r.plugin == "users"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.message == "authenticate" && r.level == LogLevel::Debug)
    );

    let stats = plugin.stats();
    assert_eq!(stats.total_calls(), 5);
    assert_eq!(stats.failures.total(), 0);
    assert_eq!(
        stats.instances_created, 1,
        "warm instance reused: {stats:?}"
    );
}

#[tokio::test]
async fn the_clock_import_is_the_plugins_clock() {
    let host = host();
    let config = r#"{"users": ["alice"], "expires_at": 5000}"#;
    for (now, expired) in [(4_999, false), (5_000, true)] {
        let services = HostServices {
            clock: Arc::new(FixedClock(now)),
            ..HostServices::default()
        };
        let mut spec = PluginSpec::new("clocked", guests::ALLOW_DENY);
        spec.config_json = config.to_owned();
        let plugin = host.load(spec, services).await.unwrap();
        let verdict = plugin.authenticate(&auth("alice")).await.unwrap();
        assert_eq!(
            matches!(verdict, AuthVerdict::Deny(_)),
            expired,
            "at {now}: {verdict:?}"
        );
    }
}

#[tokio::test]
async fn second_load_hits_the_compiled_code_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = || HostConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..HostConfig::default()
    };
    let first = PluginHost::new(config()).unwrap();
    let plugin = first
        .load(
            PluginSpec::new("a", guests::AUTH_ONLY),
            HostServices::default(),
        )
        .await
        .unwrap();
    assert!(!plugin.loaded_from_cache());
    assert_eq!(first.cache_stats(), (0, 1));
    drop((plugin, first));

    // A new host, as after a broker restart.
    let second = PluginHost::new(config()).unwrap();
    let started = Instant::now();
    let plugin = second
        .load(
            PluginSpec::new("a", guests::AUTH_ONLY),
            HostServices::default(),
        )
        .await
        .unwrap();
    assert!(plugin.loaded_from_cache(), "second load compiled again");
    assert_eq!(second.cache_stats(), (1, 0));
    tracing::info!(elapsed = ?started.elapsed(), "cached load");
}

#[tokio::test]
async fn a_component_of_world_authenticator_plugin_loads_with_only_its_exports() {
    let host = host();
    let plugin = load(&host, "auth-only", guests::AUTH_ONLY, "{}").await;
    assert_eq!(
        plugin.exports(),
        Exports {
            authenticator: true,
            authorizer: false,
            transformer: false,
            cacheable_transformer: false,
            stamping_transformer: false,
            sized_transformer: false,
            ticker: false,
            storage: false,
        }
    );
    assert!(plugin.implements(Hook::Authenticate));
    assert!(!plugin.implements(Hook::Transform));
    let verdict = plugin.authenticate(&auth("anyone")).await.unwrap();
    assert!(
        matches!(verdict, AuthVerdict::Allow(attributes) if attributes[0] == ("role".to_owned(), "guest".to_owned()))
    );
    let missing = plugin
        .authorize_publish(&session(), "t", Qos::AtMostOnce, false)
        .await;
    assert_eq!(missing, Err(CallError::MissingExport("authorizer")));
    let missing = plugin.transform(&session(), &message("t")).await;
    assert_eq!(missing, Err(CallError::MissingExport("transformer")));
}

#[tokio::test]
async fn init_rejecting_its_config_fails_the_load_with_the_plugins_message() {
    let host = host();
    let error = host
        .load(
            PluginSpec::new("picky", guests::INIT_REJECT),
            HostServices::default(),
        )
        .await
        .unwrap_err();
    match &error {
        HostError::InitRejected { plugin, message } => {
            assert_eq!(plugin, "picky");
            assert_eq!(message, "config key `token` is required");
        }
        other => panic!("expected InitRejected, got {other:?}"),
    }
    assert!(error.to_string().contains("picky"));
    let plugin = load(&host, "picky", guests::INIT_REJECT, r#"{"token": "t"}"#).await;
    assert_eq!(
        plugin.authenticate(&auth("x")).await,
        Ok(AuthVerdict::Defer)
    );
}

#[tokio::test]
async fn load_errors_name_the_plugin_and_the_path() {
    let host = host();
    let error = host
        .load(
            PluginSpec::new("ghost", "/nonexistent/p.wasm"),
            HostServices::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, HostError::Read { .. }));
    assert!(
        error.to_string().contains("ghost") && error.to_string().contains("/nonexistent/p.wasm")
    );

    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), b"not wasm").unwrap();
    let error = host
        .load(
            PluginSpec::new("junk", not_wasm.path()),
            HostServices::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, HostError::Compile { .. }), "{error:?}");

    let mut spec = PluginSpec::new("greedy", guests::AUTH_ONLY);
    spec.limits.memory_bytes = 1 << 40;
    assert!(matches!(
        host.load(spec, HostServices::default()).await,
        Err(HostError::Limits { .. })
    ));
}

/// Asserts that after a failed call the plugin recycled the instance and answers the next call.
async fn assert_contained(plugin: &Plugin, failures: u64) {
    let stats = plugin.stats();
    assert_eq!(stats.failures.total(), failures, "{stats:?}");
    assert_eq!(stats.instances_recycled, failures, "{stats:?}");
    assert!(
        matches!(
            plugin.authenticate(&auth("fine")).await,
            Ok(AuthVerdict::Allow(_))
        ),
        "next call works"
    );
}

#[tokio::test]
async fn a_trap_is_contained() {
    let host = host();
    let logs = Arc::new(Captured::default());
    let services = HostServices {
        log: logs.clone(),
        ..HostServices::default()
    };
    let plugin = host
        .load(PluginSpec::new("trap", guests::TRAP), services)
        .await
        .unwrap();
    let result = plugin.authenticate(&auth("boom")).await;
    assert!(matches!(&result, Err(CallError::Trap(_))), "{result:?}");
    assert_eq!(plugin.stats().failures.trap, 1);
    assert_contained(&plugin, 1).await;
    // The guest's panic message went to its stderr, routed to the log at warn.
    let records = logs.0.lock().clone();
    assert!(
        records
            .iter()
            .any(|r| r.level == LogLevel::Warn && r.message.contains("guest panics on purpose")),
        "{records:?}"
    );
    let result = plugin.transform(&session(), &message("boom")).await;
    assert!(matches!(result, Err(CallError::Trap(_))));
    assert_contained(&plugin, 2).await;
}

#[tokio::test]
async fn an_endless_loop_hits_the_deadline_and_other_calls_go_on() {
    let host = host();
    let mut spec = PluginSpec::new("spin", guests::SPIN);
    spec.limits.call_timeout = Duration::from_millis(100);
    let plugin = host.load(spec, HostServices::default()).await.unwrap();
    let other = load(&host, "other", guests::ALLOW_DENY, r#"{"users": ["fine"]}"#).await;

    let started = Instant::now();
    let spinning = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.authenticate(&auth("spin")).await }
    });
    // While one call spins, the runtime (current-thread here) keeps serving: the spinning call yields
    // at every epoch tick.
    for _ in 0..5 {
        assert!(matches!(
            other.authenticate(&auth("fine")).await,
            Ok(AuthVerdict::Allow(_))
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = spinning.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(result, Err(CallError::Timeout));
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(plugin.stats().failures.timeout, 1);
    assert_contained(&plugin, 1).await;
}

#[tokio::test]
async fn unbounded_allocation_is_out_of_memory() {
    let host = host();
    let mut spec = PluginSpec::new("hog", guests::HOG);
    spec.limits.memory_bytes = 16 << 20;
    let plugin = host.load(spec, HostServices::default()).await.unwrap();
    assert_eq!(
        plugin.authenticate(&auth("hog")).await,
        Err(CallError::OutOfMemory)
    );
    assert_eq!(plugin.stats().failures.out_of_memory, 1);
    assert_contained(&plugin, 1).await;
}

#[tokio::test]
async fn invalid_answers_are_failures() {
    let host = host();
    let plugin = load(&host, "garbage", guests::GARBAGE, "{}").await;
    fn invalid<T>(result: &Result<T, CallError>) -> bool {
        matches!(result, Err(CallError::InvalidOutput(_)))
    }
    assert!(invalid(&plugin.authenticate(&auth("x")).await));
    assert!(invalid(
        &plugin
            .authorize_publish(&session(), "t", Qos::AtMostOnce, false)
            .await
    ));
    assert!(invalid(
        &plugin
            .authorize_subscribe(&session(), "t", Qos::AtMostOnce)
            .await
    ));
    assert!(invalid(&plugin.transform(&session(), &message("t")).await));
    assert!(invalid(
        &plugin.transform(&session(), &message("t/drop")).await
    ));
    // Strings MQTT cannot carry: the broker would send a malformed packet.
    assert!(invalid(&plugin.authenticate(&auth("nul")).await));
    assert!(invalid(&plugin.authenticate(&auth("long")).await));
    assert!(invalid(
        &plugin.transform(&session(), &message("t/nul")).await
    ));
    assert!(invalid(
        &plugin.transform(&session(), &message("t/long")).await
    ));
    let stats = plugin.stats();
    assert_eq!(stats.failures.invalid_output, 9);
    assert_eq!(stats.instances_recycled, 9);
    // A subscription granted at (not above) the requested QoS is fine.
    let verdict = plugin
        .authorize_subscribe(&session(), "t", Qos::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(verdict.decision, SubscribeDecision::Allow(Qos::ExactlyOnce));
}

#[tokio::test]
async fn concurrent_calls_share_a_bounded_pool() {
    let host = host();
    let mut spec = PluginSpec::new("pool", guests::ALLOW_DENY);
    spec.config_json = r#"{"users": ["alice"]}"#.to_owned();
    spec.limits.max_instances = 2;
    let plugin = host.load(spec, HostServices::default()).await.unwrap();
    let calls = (0..50).map(|_| {
        let plugin = plugin.clone();
        tokio::spawn(async move { plugin.authenticate(&auth("alice")).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert!(matches!(call.await.unwrap(), Ok(AuthVerdict::Allow(_))));
    }
    let stats = plugin.stats();
    assert_eq!(stats.total_calls(), 50);
    assert!(stats.instances_created <= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_grants_nothing_but_the_configured_directories() {
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("inside.txt"), "inside").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("outside.txt"), "outside").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // The host process has environment variables; the guest must see none.
    assert!(std::env::vars().next().is_some());

    let host = host();
    let logs = Arc::new(Captured::default());
    let mut spec = PluginSpec::new("probe", guests::FS_PROBE);
    spec.dirs = vec![DirGrant {
        host: granted.path().to_owned(),
        guest: "/data".to_owned(),
        writable: false,
    }];
    let plugin = host
        .load(
            spec,
            HostServices {
                log: logs.clone(),
                ..HostServices::default()
            },
        )
        .await
        .unwrap();
    let probe = |order: String| {
        let plugin = plugin.clone();
        async move {
            match plugin
                .transform(&session(), &message(&order))
                .await
                .unwrap()
            {
                TransformVerdict::Modify(patch) => {
                    String::from_utf8(patch.payload.unwrap()).unwrap()
                }
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(probe("read//data/inside.txt".to_owned()).await, "ok:inside");
    let outside_path = outside.path().join("outside.txt");
    assert!(
        probe(format!("read/{}", outside_path.display()))
            .await
            .starts_with("err:")
    );
    assert!(
        probe("read//data/../etc/passwd".to_owned())
            .await
            .starts_with("err:")
    );
    assert!(
        probe("write//data/new.txt".to_owned())
            .await
            .starts_with("err:"),
        "read-only grant"
    );
    assert!(!granted.path().join("new.txt").exists());
    assert_eq!(probe("env".to_owned()).await, "ok:");
    assert_eq!(probe("args".to_owned()).await, "ok:");
    assert!(
        probe(format!("connect/{address}"))
            .await
            .starts_with("err:")
    );
    // stdout went to the log at info, stderr at warn.
    let records = logs.0.lock().clone();
    assert!(
        records
            .iter()
            .any(|r| r.level == LogLevel::Info && r.message == "fs-probe: init on stdout")
    );
    assert!(
        records
            .iter()
            .any(|r| r.level == LogLevel::Warn && r.message == "fs-probe: init on stderr")
    );

    // A sockets grant lets it connect to the addresses listed, and to nothing else.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut spec = PluginSpec::new("probe-net", guests::FS_PROBE);
    spec.sockets = vec![address];
    let plugin = host.load(spec, HostServices::default()).await.unwrap();
    let connect = |to: std::net::SocketAddr| {
        let plugin = plugin.clone();
        async move {
            match plugin
                .transform(&session(), &message(&format!("connect/{to}")))
                .await
                .unwrap()
            {
                TransformVerdict::Modify(patch) => {
                    String::from_utf8(patch.payload.unwrap()).unwrap()
                }
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(connect(address).await, "ok:connected");
    let refused = connect(other.local_addr().unwrap()).await;
    assert!(refused.starts_with("err:"), "{refused}");

    // A writable grant lets it write.
    let mut spec = PluginSpec::new("probe-rw", guests::FS_PROBE);
    spec.dirs = vec![DirGrant {
        host: granted.path().to_owned(),
        guest: "/data".to_owned(),
        writable: true,
    }];
    let plugin = host.load(spec, HostServices::default()).await.unwrap();
    match plugin
        .transform(&session(), &message("write//data/new.txt"))
        .await
        .unwrap()
    {
        TransformVerdict::Modify(patch) => {
            assert_eq!(patch.payload.as_deref(), Some(&b"ok:written"[..]))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(granted.path().join("new.txt")).unwrap(),
        "written"
    );
}

#[tokio::test]
async fn plugins_reserve_instance_slots_and_give_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostConfig {
        cache_dir: Some(dir.path().to_owned()),
        total_instances: 6,
        ..HostConfig::default()
    })
    .unwrap();
    let spec = |name: &str| PluginSpec::new(name, guests::AUTH_ONLY); // 4 instances by default
    let first = host
        .load(spec("first"), HostServices::default())
        .await
        .unwrap();
    let error = host
        .load(spec("second"), HostServices::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, HostError::Limits { plugin, .. } if plugin == "second"),
        "{error:?}"
    );
    drop(first);
    host.load(spec("second"), HostServices::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn tick_returns_the_delay_and_failures_are_counted() {
    let host = host();
    let kv = Arc::new(MemoryKv::default());
    let services = HostServices {
        kv: kv.clone(),
        ..HostServices::default()
    };
    let mut spec = PluginSpec::new("ticking", guests::ALLOW_DENY);
    spec.config_json = r#"{"tick_secs": 7}"#.to_owned();
    let plugin = host.load(spec, services).await.unwrap();
    assert!(plugin.exports().ticker);
    assert_eq!(plugin.tick().await, Ok(7));
    assert_eq!(plugin.tick().await, Ok(7));
    assert_eq!(kv.get("ticks"), Some(2u64.to_le_bytes().to_vec()));
    let stats = plugin.stats();
    assert_eq!((stats.ticks, stats.failed_ticks), (2, 0));
    assert_eq!(stats.total_calls(), 0, "ticks are not hook calls");

    // A tick that traps: counted, the instance recycled, the next hook call works.
    let trap = load(&host, "trap", guests::TRAP, "{}").await;
    assert!(matches!(trap.tick().await, Err(CallError::Trap(_))));
    let stats = trap.stats();
    assert_eq!((stats.ticks, stats.failed_ticks), (1, 1));
    assert_eq!(stats.failures.trap, 1);
    assert_eq!(stats.instances_recycled, 1);
    assert!(trap.authenticate(&auth("ok")).await.is_ok());

    // No ticker export.
    let auth_only = load(&host, "auth", guests::AUTH_ONLY, "{}").await;
    assert!(!auth_only.exports().ticker);
    assert_eq!(
        auth_only.tick().await,
        Err(CallError::MissingExport("ticker"))
    );
    assert_eq!(auth_only.stats().failures.missing_export, 1);
}

/// wasmtime matches `wasp:plugin/...@0.1.0` names with the host's 0.1.3 ones (same major.minor): a
/// component built against the frozen 0.1.0 WIT loads, its 0.1.0 imports (kv) link, its hooks are found
/// and called.
#[tokio::test]
async fn a_component_built_against_wit_0_1_0_loads_and_answers() {
    let host = host();
    let kv = Arc::new(MemoryKv::default());
    let services = HostServices {
        kv: kv.clone(),
        ..HostServices::default()
    };
    let info = inspect_component("old", std::path::Path::new(guests::V010_AUTHORIZER)).unwrap();
    assert!(
        info.export_names
            .iter()
            .all(|name| name.ends_with("@0.1.0")),
        "{:?}",
        info.export_names
    );
    assert!(
        info.import_names
            .iter()
            .any(|name| name == "wasp:plugin/kv@0.1.0"),
        "{:?}",
        info.import_names
    );
    let plugin = host
        .load(PluginSpec::new("old", guests::V010_AUTHORIZER), services)
        .await
        .unwrap();
    assert_eq!(
        plugin.exports(),
        Exports {
            authorizer: true,
            ..Exports::default()
        }
    );
    assert!(plugin.implements(Hook::AuthorizePublish));
    let verdict = plugin
        .authorize_publish(&session(), "any/topic", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(verdict.decision, Decision::Allow);
    let verdict = plugin
        .authorize_subscribe(&session(), "any/#", Qos::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(verdict.decision, SubscribeDecision::Allow(Qos::ExactlyOnce));
    assert_eq!(kv.get("calls"), Some(2u64.to_le_bytes().to_vec()));
    assert_eq!(plugin.tick().await, Err(CallError::MissingExport("ticker")));
}
