//! One sandboxed instance of a plugin: its `Store` (memory limiter, WASI context with nothing granted
//! but the configured directories, epoch deadline) and the handles of the interfaces it exports.
//!
//! A call arms the deadline and runs the export with `call_async` on a wasmtime fiber. At every epoch
//! tick (10 ms) the epoch callback either yields to the tokio runtime (so a long call never holds a
//! worker thread for more than one tick) or, past the deadline, ends the call with [`DeadlineExceeded`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::exports::wasp::plugin::{
    authenticator, authorizer, cacheable_transformer, plugin, sized_transformer,
    stamping_transformer, storage, ticker, transformer,
};
use crate::bindings::wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Interests, Message, Qos, Session,
    SizedTransformVerdict, StampingTransformVerdict, SubscribeVerdict,
};
use crate::config::{DirGrant, SandboxLimits};
use crate::error::CallError;
use crate::imports::PluginCtx;
use crate::imports::clock::WasiWallClock;
use crate::imports::stdio::GuestOutput;

/// Core instances, tables and memories one component instance may create (interpreter guests such as
/// componentize-py have about 14 core instances).
const MAX_CORE_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The store data of one instance.
pub(crate) struct State {
    pub ctx: Arc<PluginCtx>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    deadline: Instant,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::wasp::plugin::types::Host for State {}

impl State {
    /// When the current call's deadline passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Memory and table limits of one instance. Memory is limited for all the instance's memories together;
/// a refused growth is remembered so that the trap that follows is reported as out-of-memory.
struct Limiter {
    memory_limit: usize,
    memory_used: usize,
    memory_refused: bool,
    /// Where the plugin's peak is kept (`PluginStats::peak_memory_bytes`).
    ctx: Arc<PluginCtx>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if grown > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_used = grown;
        self.ctx
            .peak_memory
            .fetch_max(grown as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The error the epoch callback ends a call with when its deadline has passed.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("call deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// What is needed to create instances of one plugin; immutable after load.
pub(crate) struct Template {
    pub pre: InstancePre<State>,
    pub ctx: Arc<PluginCtx>,
    pub limits: SandboxLimits,
    pub dirs: Vec<DirGrant>,
    pub sockets: Vec<SocketAddr>,
    pub config_json: String,
    pub plugin: plugin::GuestIndices,
    pub authenticator: Option<authenticator::GuestIndices>,
    pub authorizer: Option<authorizer::GuestIndices>,
    pub transformer: Option<transformer::GuestIndices>,
    /// `cacheable-transformer` (0.1.3): called instead of `transformer` when present.
    pub cacheable_transformer: Option<cacheable_transformer::GuestIndices>,
    /// `stamping-transformer` (0.1.4): called instead of both others when present.
    pub stamping_transformer: Option<stamping_transformer::GuestIndices>,
    /// `sized-transformer` (0.1.5): called instead of the three others when present.
    pub sized_transformer: Option<sized_transformer::GuestIndices>,
    pub ticker: Option<ticker::GuestIndices>,
    pub storage: Option<storage::GuestIndices>,
}

/// A live instance with its store.
pub(crate) struct Warm {
    store: Store<State>,
    authenticator: Option<authenticator::Guest>,
    authorizer: Option<authorizer::Guest>,
    transformer: Option<transformer::Guest>,
    cacheable_transformer: Option<cacheable_transformer::Guest>,
    stamping_transformer: Option<stamping_transformer::Guest>,
    sized_transformer: Option<sized_transformer::Guest>,
    ticker: Option<ticker::Guest>,
    storage: Option<storage::Guest>,
}

/// One hook call and its arguments.
pub(crate) enum Request<'a> {
    Authenticate(&'a AuthRequest),
    AuthorizePublish {
        session: &'a Session,
        topic: &'a str,
        qos: Qos,
        retain: bool,
    },
    AuthorizeSubscribe {
        session: &'a Session,
        filter: &'a str,
        qos: Qos,
    },
    Transform {
        session: &'a Session,
        message: &'a Message,
    },
    Tick,
    StorageWrite(&'a [storage::Op]),
    StorageLoad {
        keyspace: storage::Keyspace,
        after: Option<&'a storage::Key>,
        limit: u32,
    },
}

/// The answer to a [`Request`], unvalidated.
pub(crate) enum Response {
    Authenticate(AuthVerdict),
    AuthorizePublish(AuthzVerdict),
    AuthorizeSubscribe(SubscribeVerdict),
    /// From `transformer` (never reusable), `cacheable-transformer` (no stamps),
    /// `stamping-transformer` (no payload sizes) or `sized-transformer`.
    Transform(SizedTransformVerdict),
    Tick(u32),
    StorageWrite(Result<(), String>),
    StorageLoad(Result<Vec<(storage::Key, Vec<u8>)>, String>),
}

/// The WASI context of an instance: no environment, arguments, stdin, network or name lookup; stdout
/// and stderr into the plugin's log; the wall clock from the plugin's clock; the granted directories;
/// and, when `sockets` lists addresses, TCP connections to those only (an implicit bind to an
/// ephemeral port is allowed for them; listening, accepting and UDP are not).
pub(crate) fn wasi_ctx(
    ctx: &PluginCtx,
    dirs: &[DirGrant],
    sockets: &[SocketAddr],
) -> Result<WasiCtx, (usize, String)> {
    let mut builder = WasiCtxBuilder::new();
    let output = |stderr| GuestOutput {
        plugin: ctx.name.clone(),
        sink: ctx.services.log.clone(),
        stderr,
    };
    builder
        .stdout(output(false))
        .stderr(output(true))
        .wall_clock(WasiWallClock(ctx.services.clock.clone()))
        .allow_tcp(!sockets.is_empty())
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if !sockets.is_empty() {
        let allowed: Arc<[SocketAddr]> = sockets.into();
        builder.socket_addr_check(move |addr, use_| {
            let ok = match use_ {
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                // The bind `connect` makes on its own: the wildcard address, port 0.
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { ok })
        });
    }
    for (index, dir) in dirs.iter().enumerate() {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| (index, format!("{e:#}")))?;
    }
    Ok(builder.build())
}

impl Template {
    /// The deadline of instantiation and `init` together: the hooks' deadline, but at least
    /// [`STARTUP_TIMEOUT_FLOOR`]. They run once per instance, and interpreter guests (Python, JavaScript)
    /// start their runtime there, which a loaded machine can stretch past a 100 ms hook deadline; a
    /// runaway `init` still ends.
    fn startup_timeout(&self) -> Duration {
        self.limits.call_timeout.max(STARTUP_TIMEOUT_FLOOR)
    }

    /// A new instance with `init` called on it: `Ok(Err(message))` when `init` refused the config.
    pub async fn instantiate(&self) -> Result<(Warm, Result<Interests, String>), CallError> {
        let wasi = wasi_ctx(&self.ctx, &self.dirs, &self.sockets)
            .map_err(|(_, e)| CallError::Instantiate(e))?;
        let state = State {
            ctx: self.ctx.clone(),
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit: usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX),
                memory_used: 0,
                memory_refused: false,
                ctx: self.ctx.clone(),
            },
            deadline: Instant::now() + self.startup_timeout(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        arm(&mut store, self.startup_timeout());
        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(classify(&e, &store)),
        };
        let instantiate_error = |e: wasmtime::Error| CallError::Instantiate(format!("{e:#}"));
        let plugin = self
            .plugin
            .load(&mut store, &instance)
            .map_err(instantiate_error)?;
        // Each optional export's instance handle, when the component has it.
        macro_rules! load {
            ($export:ident) => {
                self.$export
                    .as_ref()
                    .map(|i| i.load(&mut store, &instance))
                    .transpose()
                    .map_err(instantiate_error)?
            };
        }
        let authenticator = load!(authenticator);
        let authorizer = load!(authorizer);
        let transformer = load!(transformer);
        let cacheable_transformer = load!(cacheable_transformer);
        let stamping_transformer = load!(stamping_transformer);
        let sized_transformer = load!(sized_transformer);
        let ticker = load!(ticker);
        let storage = load!(storage);
        let interests = match plugin.call_init(&mut store, &self.config_json).await {
            Ok(result) => result,
            Err(e) => return Err(classify(&e, &store)),
        };
        Ok((
            Warm {
                store,
                authenticator,
                authorizer,
                transformer,
                cacheable_transformer,
                stamping_transformer,
                sized_transformer,
                ticker,
                storage,
            },
            interests,
        ))
    }
}

/// Sets the deadline of the next call and asks for the epoch callback at the next tick.
/// The shortest deadline instantiation and `init` get (see `Template::startup_timeout`).
pub(crate) const STARTUP_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);

fn arm(store: &mut Store<State>, timeout: Duration) {
    let state = store.data_mut();
    state.deadline = Instant::now() + timeout;
    state.limiter.memory_refused = false;
    store.set_epoch_deadline(1);
}

/// Tells a deadline, an out-of-memory and a trap apart.
fn classify(error: &wasmtime::Error, store: &Store<State>) -> CallError {
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        CallError::Timeout
    } else if store.data().limiter.memory_refused {
        CallError::OutOfMemory
    } else {
        CallError::Trap(format!("{error:#}"))
    }
}

impl Warm {
    /// Runs one hook. On `Err` the instance must not be used again.
    pub async fn call(
        &mut self,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        arm(&mut self.store, timeout);
        let store = &mut self.store;
        let result = match request {
            Request::Authenticate(req) => {
                let guest = self
                    .authenticator
                    .as_ref()
                    .ok_or(CallError::MissingExport("authenticator"))?;
                guest
                    .call_authenticate(&mut *store, req)
                    .await
                    .map(Response::Authenticate)
            }
            Request::AuthorizePublish {
                session,
                topic,
                qos,
                retain,
            } => {
                let guest = self
                    .authorizer
                    .as_ref()
                    .ok_or(CallError::MissingExport("authorizer"))?;
                guest
                    .call_authorize_publish(&mut *store, session, topic, qos, retain)
                    .await
                    .map(Response::AuthorizePublish)
            }
            Request::AuthorizeSubscribe {
                session,
                filter,
                qos,
            } => {
                let guest = self
                    .authorizer
                    .as_ref()
                    .ok_or(CallError::MissingExport("authorizer"))?;
                guest
                    .call_authorize_subscribe(&mut *store, session, filter, qos)
                    .await
                    .map(Response::AuthorizeSubscribe)
            }
            Request::Transform { session, message } => {
                // The newest transform interface the plugin exports; older answers have no stamps
                // (before 0.1.4), no lifetime (0.1.0) and no payload sizes (before 0.1.5).
                let sized = |answer| SizedTransformVerdict {
                    answer,
                    payload_sizes: None,
                };
                let reusable = |verdict, cache_seconds| {
                    sized(StampingTransformVerdict {
                        verdict,
                        cache_seconds,
                        stamps: Vec::new(),
                    })
                };
                if let Some(guest) = &self.sized_transformer {
                    guest
                        .call_transform(&mut *store, session, message)
                        .await
                        .map(Response::Transform)
                } else if let Some(guest) = &self.stamping_transformer {
                    guest
                        .call_transform(&mut *store, session, message)
                        .await
                        .map(|answer| Response::Transform(sized(answer)))
                } else if let Some(guest) = &self.cacheable_transformer {
                    guest
                        .call_transform(&mut *store, session, message)
                        .await
                        .map(|v| Response::Transform(reusable(v.verdict, v.cache_seconds)))
                } else if let Some(guest) = &self.transformer {
                    guest
                        .call_transform(&mut *store, session, message)
                        .await
                        .map(|verdict| Response::Transform(reusable(verdict, None)))
                } else {
                    return Err(CallError::MissingExport("transformer"));
                }
            }
            Request::Tick => {
                let guest = self
                    .ticker
                    .as_ref()
                    .ok_or(CallError::MissingExport("ticker"))?;
                guest.call_tick(&mut *store).await.map(Response::Tick)
            }
            Request::StorageWrite(batch) => {
                let guest = self
                    .storage
                    .as_ref()
                    .ok_or(CallError::MissingExport("storage"))?;
                guest
                    .call_write(&mut *store, batch)
                    .await
                    .map(Response::StorageWrite)
            }
            Request::StorageLoad {
                keyspace,
                after,
                limit,
            } => {
                let guest = self
                    .storage
                    .as_ref()
                    .ok_or(CallError::MissingExport("storage"))?;
                guest
                    .call_load(&mut *store, keyspace, after, limit)
                    .await
                    .map(Response::StorageLoad)
            }
        };
        result.map_err(|e| classify(&e, store))
    }
}
