//! Prints what a plugin call costs, to choose between synchronous and asynchronous wasmtime calls:
//!
//! ```text
//! cargo run --release -p wasp-plugin-host --example call_cost
//! ```
//!
//! 1. Raw wasmtime, same engine settings as the host: `TypedFunc::call` (sync) against
//!    `TypedFunc::call_async` with `epoch_deadline_async_yield_and_update`, on `authorize-publish` of the
//!    `allow-deny` guest (short strings, no host imports).
//! 2. The host's API (`Plugin::authorize_publish`: pool check-out, fiber, validation, check-in), and the
//!    per-call cost of every other hook through the same path: `authenticate` (the guest uses the kv, log,
//!    metrics and clock imports), `authorize_subscribe`, and `transform` with a 16-byte and a 4 KiB payload
//!    (the guest upper-cases the payload and appends a user property: the whole message crosses the
//!    boundary both ways).
//! 3. Loading: compile (cache miss) against a cache hit, and creating an instance.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasp_plugin_host::test_programs as guests;
use wasp_plugin_host::types::*;
use wasp_plugin_host::{HostConfig, HostServices, PluginHost, PluginSpec, SandboxLimits};

const ITERATIONS: u32 = 200_000;
/// Calls per hook in the host-path measurements of the other hooks (each also warms up with a tenth).
const HOOK_ITERATIONS: u32 = 100_000;

type AuthorizePublish = TypedFunc<(Session, String, Qos, bool), (AuthzVerdict,)>;

fn session() -> Session {
    Session {
        client: ClientInfo {
            client_id: "client-1".to_owned(),
            username: Some("alice".to_owned()),
            listener: "default".to_owned(),
            peer_address: "127.0.0.1:50000".to_owned(),
            protocol: ProtocolVersion::V5,
            tls_identity: None,
        },
        attributes: vec![("role".to_owned(), "admin".to_owned())],
    }
}

fn report(label: &str, elapsed: Duration, iterations: u32) {
    let per_call = elapsed.as_secs_f64() * 1e9 / f64::from(iterations);
    tracing::info!("{label:<58} {per_call:>9.0} ns/call");
}

fn engine() -> Engine {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(16)
        .max_memory_size(256 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .memory_reservation(256 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).expect("engine")
}

async fn lookup(
    store: &mut Store<()>,
    linker: &Linker<()>,
    component: &Component,
    asynchronous: bool,
) -> AuthorizePublish {
    let instance = if asynchronous {
        linker.instantiate_async(&mut *store, component).await
    } else {
        linker.instantiate(&mut *store, component)
    }
    .expect("instantiate");
    let interface = instance
        .get_export_index(&mut *store, None, "wasp:plugin/authorizer@0.1.3")
        .expect("authorizer");
    let func = instance
        .get_export_index(&mut *store, Some(&interface), "authorize-publish")
        .expect("function");
    instance
        .get_typed_func(&mut *store, func)
        .expect("typed function")
}

async fn raw(session: &Session) {
    let engine = engine();
    let component = Component::from_file(&engine, guests::ALLOW_DENY).expect("compile");
    let mut linker = Linker::new(&engine);
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("imports");

    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let func = lookup(&mut store, &linker, &component, false).await;
    let args = || {
        (
            session.clone(),
            "sensors/1".to_owned(),
            Qos::AtLeastOnce,
            false,
        )
    };
    let mut async_store = Store::new(&engine, ());
    async_store.epoch_deadline_async_yield_and_update(1);
    let async_func = lookup(&mut async_store, &linker, &component, true).await;
    for _ in 0..10_000 {
        func.call(&mut store, args()).expect("call");
        async_func
            .call_async(&mut async_store, args())
            .await
            .expect("call");
    }
    // Alternating rounds, so that load from other processes hits both alike.
    for round in 1..=3 {
        let started = Instant::now();
        for _ in 0..ITERATIONS {
            func.call(&mut store, args()).expect("call");
        }
        report(
            &format!("raw wasmtime, sync call (round {round})"),
            started.elapsed(),
            ITERATIONS,
        );
        let started = Instant::now();
        for _ in 0..ITERATIONS {
            async_func
                .call_async(&mut async_store, args())
                .await
                .expect("call");
        }
        report(
            &format!("raw wasmtime, call_async + yield on epoch (round {round})"),
            started.elapsed(),
            ITERATIONS,
        );
    }

    let started = Instant::now();
    for _ in 0..ITERATIONS {
        let _ = args();
    }
    report(
        "(building the arguments alone)",
        started.elapsed(),
        ITERATIONS,
    );

    let started = Instant::now();
    let instances = 200;
    for _ in 0..instances {
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        linker
            .instantiate(&mut store, &component)
            .expect("instantiate");
    }
    report(
        "instantiate (pooling allocator), per instance",
        started.elapsed(),
        instances,
    );
}

async fn through_the_host(session: &Session) {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = || HostConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..HostConfig::default()
    };
    let spec = || {
        let mut spec = PluginSpec::new("allow-deny", guests::ALLOW_DENY);
        spec.config_json = r#"{"users": ["alice"], "tag": "T"}"#.to_owned();
        spec.limits = SandboxLimits::default();
        spec
    };
    let host = PluginHost::new(config()).expect("host");
    let started = Instant::now();
    let plugin = host
        .load(spec(), HostServices::default())
        .await
        .expect("load");
    tracing::info!(
        "{:<58} {:>9.1} ms",
        "load, cache miss (compile + instantiate + init)",
        started.elapsed().as_secs_f64() * 1e3
    );
    drop((plugin, host));
    let host = PluginHost::new(config()).expect("host");
    let started = Instant::now();
    let plugin = host
        .load(spec(), HostServices::default())
        .await
        .expect("load");
    tracing::info!(
        "{:<58} {:>9.1} ms",
        "load, cache hit",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(plugin.loaded_from_cache());

    for _ in 0..10_000 {
        plugin
            .authorize_publish(session, "sensors/1", Qos::AtLeastOnce, false)
            .await
            .expect("call");
    }
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        plugin
            .authorize_publish(session, "sensors/1", Qos::AtLeastOnce, false)
            .await
            .expect("call");
    }
    report(
        "Plugin::authorize_publish (pool, async, validation)",
        started.elapsed(),
        ITERATIONS,
    );

    let request = AuthRequest {
        client: session.client.clone(),
        password: Some(b"alice-pw".to_vec()),
        auth_method: None,
        auth_data: None,
        reauthentication: false,
    };
    measure(
        "Plugin::authenticate (allow; kv get+set, log, metrics)",
        || async {
            let verdict = plugin.authenticate(&request).await.expect("call");
            assert!(matches!(verdict, AuthVerdict::Allow(_)));
        },
    )
    .await;
    measure("Plugin::authorize_subscribe (allow)", || async {
        plugin
            .authorize_subscribe(session, "allow/sensors/#", Qos::AtLeastOnce)
            .await
            .expect("call");
    })
    .await;
    for (label, size) in [
        ("Plugin::transform, 16 B payload (modify)", 16),
        ("Plugin::transform, 4 KiB payload (modify)", 4096),
    ] {
        let message = Message {
            topic: "sensors/1".to_owned(),
            payload: vec![b'a'; size],
            qos: Qos::AtLeastOnce,
            retain: false,
            user_properties: Vec::new(),
            content_type: None,
        };
        measure(label, || async {
            let verdict = plugin.transform(session, &message).await.expect("call");
            assert!(matches!(verdict, TransformVerdict::Modify(_)));
        })
        .await;
    }
}

/// Warms up, then times [`HOOK_ITERATIONS`] calls of `call` and reports the mean per call.
async fn measure<F, Fut>(label: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..HOOK_ITERATIONS / 10 {
        call().await;
    }
    let started = Instant::now();
    for _ in 0..HOOK_ITERATIONS {
        call().await;
    }
    report(label, started.elapsed(), HOOK_ITERATIONS);
}

fn main() {
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let session = session();
    runtime.block_on(raw(&session));
    runtime.block_on(through_the_host(&session));
}
