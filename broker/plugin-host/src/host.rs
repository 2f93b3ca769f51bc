//! [`PluginHost`]: the broker's one wasmtime `Engine`, its epoch ticker, the compiled-code cache, the
//! linker with every host import, and loading.
//!
//! Engine settings (see README.md for the measurements behind them): component model without
//! component-model async (`concurrency_support(false)`: calls 1.3-2x cheaper), Cranelift, epoch
//! interruption ticked every 10 ms by a thread, and the pooling allocator (instantiation in tens of
//! microseconds, memory slots reused) with `memory_reservation` = `max_memory_bytes`. If the pooling
//! allocator cannot reserve its address space, the host falls back to on-demand allocation with the same
//! reservation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::bindings::AllExports;
use crate::bindings::exports::wasp::plugin::{
    authenticator, authorizer, cacheable_transformer, plugin, sized_transformer,
    stamping_transformer, storage, ticker, transformer,
};
use crate::config::{HostConfig, PluginSpec};
use crate::error::{CallError, HostError};
use crate::imports::http::{HttpAccess, HttpClient, ReqwestClient};
use crate::imports::{HostServices, PluginCtx};
use crate::instance::{State, Template, wasi_ctx};
use crate::plugin::{Exports, Parts, Plugin};

/// How often the epoch advances: the granularity of call deadlines and of yields to the runtime.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

// Looked up semver-compatibly by wasmtime: a component built against 0.1.0 exports
// `wasp:plugin/plugin@0.1.0`, which these 0.1.5 names find (and its 0.1.0 imports find the 0.1.5
// definitions of the linker).
pub(crate) const INTERFACE_PLUGIN: &str = "wasp:plugin/plugin@0.1.5";
pub(crate) const INTERFACE_AUTHENTICATOR: &str = "wasp:plugin/authenticator@0.1.5";
pub(crate) const INTERFACE_AUTHORIZER: &str = "wasp:plugin/authorizer@0.1.5";
pub(crate) const INTERFACE_TRANSFORMER: &str = "wasp:plugin/transformer@0.1.5";
pub(crate) const INTERFACE_CACHEABLE_TRANSFORMER: &str = "wasp:plugin/cacheable-transformer@0.1.5";
pub(crate) const INTERFACE_STAMPING_TRANSFORMER: &str = "wasp:plugin/stamping-transformer@0.1.5";
pub(crate) const INTERFACE_SIZED_TRANSFORMER: &str = "wasp:plugin/sized-transformer@0.1.5";
pub(crate) const INTERFACE_TICKER: &str = "wasp:plugin/ticker@0.1.5";
pub(crate) const INTERFACE_STORAGE: &str = "wasp:plugin/storage@0.1.5";
/// The `http` import, without its version.
pub(crate) const IMPORT_HTTP_PREFIX: &str = "wasp:plugin/http@";

/// Increments the engine's epoch every [`EPOCH_TICK`] until the last holder is dropped. Held by the
/// host and by every plugin, so plugins that outlive the host keep their deadlines.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasp-plugin-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| HostError::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The pooling allocator's instance slots, shared out among plugins: each plugin reserves its
/// `max_instances` at load, so that calls never fail for want of a slot.
struct SlotBudget {
    total: u32,
    used: parking_lot::Mutex<u32>,
}

/// A plugin's share of the [`SlotBudget`], given back when the plugin is dropped.
struct SlotReservation {
    budget: Arc<SlotBudget>,
    count: u32,
}

impl SlotBudget {
    fn reserve(self: &Arc<Self>, count: u32) -> Result<SlotReservation, u32> {
        let mut used = self.used.lock();
        if used.saturating_add(count) > self.total {
            return Err(*used);
        }
        *used += count;
        Ok(SlotReservation {
            budget: self.clone(),
            count,
        })
    }
}

impl Drop for SlotReservation {
    fn drop(&mut self) {
        *self.budget.used.lock() -= self.count;
    }
}

/// The plugin host of one broker.
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<State>>,
    cache: Option<Cache>,
    config: HostConfig,
    pooling: bool,
    ticker: Arc<EpochTicker>,
    slots: Arc<SlotBudget>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.config)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

fn engine_config(host: &HostConfig, pooling: bool, cache: Option<Cache>) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .memory_reservation(host.max_memory_bytes)
        .cache(cache);
    if pooling {
        let total = host.total_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(total)
            .total_core_instances(total.saturating_mul(16))
            .total_memories(total.saturating_mul(2))
            .total_tables(total.saturating_mul(8))
            .total_stacks(total)
            .max_memory_size(usize::try_from(host.max_memory_bytes).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// `$XDG_CACHE_HOME/wasp`, else `$HOME/.cache/wasp`.
fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |var| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    non_empty("XDG_CACHE_HOME")
        .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
        .map(|d| d.join("wasp"))
}

impl PluginHost {
    /// Creates the engine, starts the epoch ticker and links the host imports.
    pub fn new(config: HostConfig) -> Result<Self, HostError> {
        let cache = match config.cache_dir.clone().or_else(default_cache_dir) {
            Some(dir) => {
                let mut cache_config = CacheConfig::new();
                cache_config.with_directory(&dir);
                match Cache::new(cache_config) {
                    Ok(cache) => Some(cache),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), "plugin cache disabled, plugins compile at every start: {e:#}");
                        None
                    }
                }
            }
            None => None,
        };
        let (engine, pooling) = match Engine::new(&engine_config(&config, true, cache.clone())) {
            Ok(engine) => (engine, true),
            Err(pooling_error) => {
                tracing::warn!(
                    "pooling allocator unavailable, using on-demand allocation: {pooling_error:#}"
                );
                let engine = Engine::new(&engine_config(&config, false, cache.clone()))
                    .map_err(|e| HostError::Engine(format!("{e:#}")))?;
                (engine, false)
            }
        };
        let mut linker = Linker::new(&engine);
        AllExports::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let ticker = Arc::new(EpochTicker::start(engine.clone())?);
        let slots = Arc::new(SlotBudget {
            total: config.total_instances.max(1),
            used: Default::default(),
        });
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache,
            config,
            pooling,
            ticker,
            slots,
        })
    }

    /// Whether the pooling allocator is in use (else on-demand allocation).
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The compiled-code cache directory, if caching is on.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.directory().as_path())
    }

    /// Cache hits and misses since this host was created.
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache
            .as_ref()
            .map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }

    /// Loads a plugin: compiles it (or takes it from the cache), checks its exports, creates a first
    /// instance and calls `init` with the spec's config. An `Err` from `init` is
    /// [`HostError::InitRejected`] with the plugin's message.
    pub async fn load(
        &self,
        spec: PluginSpec,
        services: HostServices,
    ) -> Result<Plugin, HostError> {
        let PluginSpec {
            name,
            wasm,
            config_json,
            limits,
            failure,
            dirs,
            http,
            sockets,
        } = spec;
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(HostError::Limits {
                plugin: name,
                message: format!(
                    "memory limit {} bytes is above the host's maximum of {} bytes",
                    limits.memory_bytes, self.config.max_memory_bytes
                ),
            });
        }
        if limits.max_instances == 0 || limits.call_timeout.is_zero() {
            return Err(HostError::Limits {
                plugin: name,
                message: "max_instances and call_timeout must be above zero".to_owned(),
            });
        }
        let reservation = self.slots.reserve(limits.max_instances).map_err(|used| HostError::Limits {
            plugin: name.clone(),
            message: format!(
                "max_instances {} does not fit: the host has {} instance slots (total_instances) and {used} are \
                 reserved by other plugins",
                limits.max_instances, self.slots.total
            ),
        })?;
        // Reading and compiling (~100 ms of CPU for a small component) happen off the runtime's workers.
        let started = Instant::now();
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let path = wasm.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(Err)?;
            let hits = cache.as_ref().map(Cache::cache_hits);
            let component = Component::new(&engine, &bytes).map_err(Ok)?;
            // Another load may hit the cache at the same moment: then both report a hit.
            let hit = match (hits, cache.as_ref().map(Cache::cache_hits)) {
                (Some(before), Some(after)) => after > before,
                _ => false,
            };
            Ok((component, hit))
        })
        .await;
        let (component, from_cache) = match compiled {
            Ok(Ok(compiled)) => compiled,
            Ok(Err(Err(source))) => {
                return Err(HostError::Read {
                    plugin: name,
                    path: wasm,
                    source,
                });
            }
            Ok(Err(Ok(e))) => {
                return Err(HostError::Compile {
                    plugin: name,
                    path: wasm,
                    message: format!("{e:#}"),
                });
            }
            Err(e) => {
                return Err(HostError::Compile {
                    plugin: name,
                    path: wasm,
                    message: e.to_string(),
                });
            }
        };
        tracing::info!(
            plugin = %name,
            path = %wasm.display(),
            from_cache,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "plugin compiled"
        );

        let link_error = |message: String| HostError::Link {
            plugin: name.clone(),
            path: wasm.clone(),
            message,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(format!("{e:#}")))?;
        let has_export = |interface: &str| component.get_export_index(None, interface).is_some();
        if !has_export(INTERFACE_PLUGIN) {
            return Err(HostError::MissingExport {
                plugin: name,
                path: wasm,
                interface: INTERFACE_PLUGIN,
            });
        }
        let plugin_indices = plugin::GuestIndices::new(&pre)
            .map_err(|e| link_error(format!("export `{INTERFACE_PLUGIN}`: {e:#}")))?;
        // An optional interface: absent is fine, present with other types is an error.
        macro_rules! optional {
            ($interface:expr, $indices:path) => {
                match has_export($interface) {
                    false => None,
                    true => Some(
                        <$indices>::new(&pre)
                            .map_err(|e| link_error(format!("export `{}`: {e:#}", $interface)))?,
                    ),
                }
            };
        }
        let authenticator = optional!(INTERFACE_AUTHENTICATOR, authenticator::GuestIndices);
        let authorizer = optional!(INTERFACE_AUTHORIZER, authorizer::GuestIndices);
        let transformer = optional!(INTERFACE_TRANSFORMER, transformer::GuestIndices);
        let cacheable_transformer = optional!(
            INTERFACE_CACHEABLE_TRANSFORMER,
            cacheable_transformer::GuestIndices
        );
        let stamping_transformer = optional!(
            INTERFACE_STAMPING_TRANSFORMER,
            stamping_transformer::GuestIndices
        );
        let sized_transformer =
            optional!(INTERFACE_SIZED_TRANSFORMER, sized_transformer::GuestIndices);
        let ticker = optional!(INTERFACE_TICKER, ticker::GuestIndices);
        let storage = optional!(INTERFACE_STORAGE, storage::GuestIndices);
        let exports = Exports {
            authenticator: authenticator.is_some(),
            authorizer: authorizer.is_some(),
            transformer: transformer.is_some(),
            cacheable_transformer: cacheable_transformer.is_some(),
            stamping_transformer: stamping_transformer.is_some(),
            sized_transformer: sized_transformer.is_some(),
            ticker: ticker.is_some(),
            storage: storage.is_some(),
        };

        let imports_http = component
            .component_type()
            .imports(&self.engine)
            .any(|(import, _)| import.starts_with(IMPORT_HTTP_PREFIX));
        let http = match (imports_http, http) {
            (false, _) => None,
            (true, None) => {
                return Err(HostError::Http {
                    message: format!(
                        "{} imports wasp:plugin/http but the plugin has no http grant: add \
                         http = {{ hosts = [\"idp.example.com\"] }} (the hosts it may reach) to its \
                         [[plugins]] entry",
                        wasm.display()
                    ),
                    plugin: name,
                });
            }
            (true, Some(grant)) => {
                let client: Arc<dyn HttpClient> = match services.http.clone() {
                    Some(client) => client,
                    None => Arc::new(ReqwestClient::new(grant.ca_file.as_deref()).map_err(
                        |message| HostError::Http {
                            plugin: name.clone(),
                            message: format!("http grant: {message}"),
                        },
                    )?),
                };
                let access =
                    HttpAccess::new(&grant, client, limits.call_timeout).map_err(|message| {
                        HostError::Http {
                            plugin: name.clone(),
                            message: format!("http grant: hosts: {message}"),
                        }
                    })?;
                Some(Arc::new(access))
            }
        };

        let ctx = Arc::new(PluginCtx {
            name: name.as_str().into(),
            services,
            metrics: Default::default(),
            http,
            peak_memory: Default::default(),
        });
        if let Err((index, message)) = wasi_ctx(&ctx, &dirs, &sockets) {
            return Err(HostError::Dir {
                plugin: name,
                host: dirs[index].host.clone(),
                message,
            });
        }
        let template = Template {
            pre,
            ctx,
            limits,
            dirs,
            sockets,
            config_json,
            plugin: plugin_indices,
            authenticator,
            authorizer,
            transformer,
            cacheable_transformer,
            stamping_transformer,
            sized_transformer,
            ticker,
            storage,
        };
        let (first, init) =
            template
                .instantiate()
                .await
                .map_err(|source: CallError| HostError::Start {
                    plugin: name.clone(),
                    path: wasm.clone(),
                    source,
                })?;
        let interests = init.map_err(|message| HostError::InitRejected {
            plugin: name.clone(),
            message,
        })?;
        let keep_alive: Box<dyn Send + Sync> = Box::new((self.ticker.clone(), reservation));
        Ok(Plugin::new(Parts {
            template,
            first,
            interests,
            exports,
            failure,
            path: wasm,
            from_cache,
            keep_alive,
        }))
    }
}
