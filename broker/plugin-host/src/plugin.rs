//! A loaded plugin: its pool of warm instances, the hooks as async methods, the validation of what it
//! answers, its statistics and counters.
//!
//! Pool: up to `max_instances` instances per plugin. A call checks one out (an idle one, or a new one
//! while fewer than `max_instances` exist; otherwise it waits for one), calls, and checks it back in.
//! An instance whose call failed (trap, deadline, out of memory, invalid output) is dropped and counted,
//! never reused: its memory may be corrupt. The next call creates a fresh one (~30 us).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::bindings::exports::wasp::plugin::storage::{Key, Keyspace, Op};
use crate::bindings::wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, CacheableTransformVerdict, Decision, Denial, Hooks,
    Interests, Message, MessagePatch, Qos, Session, SizedTransformVerdict, Stamp,
    StampingTransformVerdict, SubscribeDecision, SubscribeVerdict, TransformVerdict,
};
use crate::chain::stamped;
use crate::config::FailurePolicy;
use crate::error::CallError;
use crate::imports::clock::Clock;
use crate::instance::{Request, Response, Template, Warm};

/// A hook, for statistics and the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Authenticate,
    AuthorizePublish,
    AuthorizeSubscribe,
    Transform,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Authenticate,
        Hook::AuthorizePublish,
        Hook::AuthorizeSubscribe,
        Hook::Transform,
    ];

    /// The hook's name in the WIT (`authorize-publish`, ...).
    pub fn wit_name(self) -> &'static str {
        match self {
            Hook::Authenticate => "authenticate",
            Hook::AuthorizePublish => "authorize-publish",
            Hook::AuthorizeSubscribe => "authorize-subscribe",
            Hook::Transform => "transform",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn flag(self) -> Hooks {
        match self {
            Hook::Authenticate => Hooks::AUTHENTICATE,
            Hook::AuthorizePublish => Hooks::AUTHORIZE_PUBLISH,
            Hook::AuthorizeSubscribe => Hooks::AUTHORIZE_SUBSCRIBE,
            Hook::Transform => Hooks::TRANSFORM,
        }
    }
}

/// Which optional interfaces a plugin's component exports (`plugin` is always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exports {
    pub authenticator: bool,
    pub authorizer: bool,
    pub transformer: bool,
    /// `cacheable-transformer` (WIT 0.1.3): transform verdicts the broker may reuse; called instead of
    /// `transformer` when both are exported.
    pub cacheable_transformer: bool,
    /// `stamping-transformer` (WIT 0.1.4): reusable transform verdicts with per-message stamps; called
    /// instead of both others when exported.
    pub stamping_transformer: bool,
    /// `sized-transformer` (WIT 0.1.5): transform verdicts reusable for a range of payload sizes; called
    /// instead of the three others when exported.
    pub sized_transformer: bool,
    /// `ticker` (WIT 0.1.1): [`Plugin::tick`].
    pub ticker: bool,
    /// `storage` (WIT 0.1.2): [`Plugin::storage_write`] and [`Plugin::storage_load`].
    pub storage: bool,
}

impl Exports {
    fn has(self, hook: Hook) -> bool {
        match hook {
            Hook::Authenticate => self.authenticator,
            Hook::AuthorizePublish | Hook::AuthorizeSubscribe => self.authorizer,
            Hook::Transform => {
                self.transformer
                    || self.cacheable_transformer
                    || self.stamping_transformer
                    || self.sized_transformer
            }
        }
    }
}

/// Failed calls by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCounts {
    pub trap: u64,
    pub timeout: u64,
    pub out_of_memory: u64,
    pub invalid_output: u64,
    pub missing_export: u64,
    pub instantiate: u64,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        self.trap
            + self.timeout
            + self.out_of_memory
            + self.invalid_output
            + self.missing_export
            + self.instantiate
    }
}

/// A snapshot of a plugin's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginStats {
    /// Hook calls (not counting `init`), per hook in [`Hook::ALL`] order.
    pub calls: [u64; 4],
    /// Failed hook calls per hook.
    pub failed_calls: [u64; 4],
    pub failures: FailureCounts,
    /// Instances created (including the first one, at load) and dropped after a failure.
    pub instances_created: u64,
    pub instances_recycled: u64,
    /// Instances idle in the pool now.
    pub idle_instances: usize,
    /// [`Plugin::tick`] calls, and those that failed (also counted in `failures` by cause).
    pub ticks: u64,
    pub failed_ticks: u64,
    /// Requests through the `http` import, and those that got an error (refused by the grant
    /// included).
    pub http_requests: u64,
    pub http_failures: u64,
    /// The most linear memory any instance of the plugin has had, in bytes (all its memories
    /// together, as `SandboxLimits::memory_bytes` counts them): how close the plugin came to its limit.
    pub peak_memory_bytes: u64,
    /// How long hook calls took, per hook, failed ones included.
    pub durations: [CallDurations; 4],
}

/// Upper bounds, in microseconds, of the buckets of [`CallDurations`]; one more bucket holds the rest.
pub const CALL_DURATION_BOUNDS_US: [u64; 12] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 10_000, 100_000];

/// A histogram of call durations: `buckets[i]` counts the calls that took more than bound `i - 1` and
/// at most bound `i` of [`CALL_DURATION_BOUNDS_US`] (not cumulative); the last bucket counts the calls
/// above every bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallDurations {
    pub buckets: [u64; CALL_DURATION_BOUNDS_US.len() + 1],
    /// The sum of all durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl CallDurations {
    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The atomic counters behind [`CallDurations`]: one relaxed add per bucket and one for the sum per call.
#[derive(Default)]
struct DurationCounters {
    buckets: [AtomicU64; CALL_DURATION_BOUNDS_US.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationCounters {
    fn record(&self, took: Duration) {
        let micros = took.as_micros();
        let i = CALL_DURATION_BOUNDS_US
            .iter()
            .position(|&bound| micros <= u128::from(bound))
            .unwrap_or(CALL_DURATION_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CallDurations {
        CallDurations {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

impl PluginStats {
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    pub fn calls_of(&self, hook: Hook) -> u64 {
        self.calls[hook.index()]
    }

    pub fn failed_calls_of(&self, hook: Hook) -> u64 {
        self.failed_calls[hook.index()]
    }
}

#[derive(Default)]
struct Counters {
    calls: [AtomicU64; 4],
    durations: [DurationCounters; 4],
    failed_calls: [AtomicU64; 4],
    trap: AtomicU64,
    timeout: AtomicU64,
    out_of_memory: AtomicU64,
    invalid_output: AtomicU64,
    missing_export: AtomicU64,
    instantiate: AtomicU64,
    instances_created: AtomicU64,
    instances_recycled: AtomicU64,
    ticks: AtomicU64,
    failed_ticks: AtomicU64,
}

/// What [`Plugin::tick`] logs a failure as (`hook = Tick`, next to the hooks' names).
#[derive(Debug)]
struct Tick;

/// The shortest deadline of a `storage` call: the hooks' deadline, but at least this. A backend's write
/// syncs to disk or waits for a database server, which a loaded machine stretches well past a hook's
/// 100 ms; a call beyond it fails and the broker retries the batch.
pub const STORAGE_TIMEOUT_FLOOR: Duration = Duration::from_secs(5);

/// What the `storage` calls log a failure as.
#[derive(Debug)]
struct StorageCall;

/// At most one warning per plugin per second about failed calls; the others are counted and reported
/// with the next warning.
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

const WARN_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub template: Template,
    pub interests: Interests,
    pub exports: Exports,
    pub failure: FailurePolicy,
    pub from_cache: bool,
    idle: Mutex<Vec<Warm>>,
    slots: Semaphore,
    counters: Counters,
    warn: Mutex<WarnLimiter>,
    /// Keeps the epoch ticker running while any plugin is alive, and the plugin's instance slots.
    _keep_alive: Box<dyn Send + Sync>,
}

/// A loaded plugin. Cheap to clone (an `Arc`); all clones share one pool of instances.
#[derive(Clone)]
pub struct Plugin(Arc<Inner>);

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.0.name)
            .field("exports", &self.0.exports)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Parts {
    pub template: Template,
    pub first: Warm,
    pub interests: Interests,
    pub exports: Exports,
    pub failure: FailurePolicy,
    pub path: PathBuf,
    pub from_cache: bool,
    pub keep_alive: Box<dyn Send + Sync>,
}

impl Plugin {
    pub(crate) fn new(parts: Parts) -> Self {
        let max = parts.template.limits.max_instances.max(1) as usize;
        let counters = Counters::default();
        counters.instances_created.store(1, Ordering::Relaxed);
        Plugin(Arc::new(Inner {
            name: parts.template.ctx.name.clone(),
            path: parts.path,
            interests: parts.interests,
            exports: parts.exports,
            failure: parts.failure,
            from_cache: parts.from_cache,
            idle: Mutex::new(vec![parts.first]),
            slots: Semaphore::new(max),
            counters,
            warn: Mutex::new(WarnLimiter {
                last: None,
                suppressed: 0,
            }),
            _keep_alive: parts.keep_alive,
            template: parts.template,
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn wasm_path(&self) -> &Path {
        &self.0.path
    }

    /// What the first instance's `init` declared.
    pub fn interests(&self) -> &Interests {
        &self.0.interests
    }

    pub fn exports(&self) -> Exports {
        self.0.exports
    }

    pub fn failure_policy(&self) -> FailurePolicy {
        self.0.failure
    }

    /// Whether the compiled code came from the on-disk cache instead of a compilation.
    pub fn loaded_from_cache(&self) -> bool {
        self.0.from_cache
    }

    /// The plugin exports the hook's interface and declared the hook at init.
    pub fn implements(&self, hook: Hook) -> bool {
        self.0.exports.has(hook) && self.0.interests.hooks.contains(hook.flag())
    }

    /// For publish-time hooks: whether the plugin's `publish-filters` match `topic` (no filters: all).
    pub fn wants_topic(&self, topic: &str) -> bool {
        let filters = &self.0.interests.publish_filters;
        filters.is_empty()
            || filters
                .iter()
                .any(|filter| wasp_mqtt::topic::matches(filter, topic))
    }

    pub fn stats(&self) -> PluginStats {
        let c = &self.0.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PluginStats {
            calls: std::array::from_fn(|i| load(&c.calls[i])),
            failed_calls: std::array::from_fn(|i| load(&c.failed_calls[i])),
            failures: FailureCounts {
                trap: load(&c.trap),
                timeout: load(&c.timeout),
                out_of_memory: load(&c.out_of_memory),
                invalid_output: load(&c.invalid_output),
                missing_export: load(&c.missing_export),
                instantiate: load(&c.instantiate),
            },
            instances_created: load(&c.instances_created),
            instances_recycled: load(&c.instances_recycled),
            idle_instances: self.0.idle.lock().len(),
            ticks: load(&c.ticks),
            failed_ticks: load(&c.failed_ticks),
            http_requests: self
                .0
                .template
                .ctx
                .http
                .as_ref()
                .map_or(0, |h| load(&h.requests)),
            http_failures: self
                .0
                .template
                .ctx
                .http
                .as_ref()
                .map_or(0, |h| load(&h.failures)),
            durations: std::array::from_fn(|i| c.durations[i].snapshot()),
            peak_memory_bytes: load(&self.0.template.ctx.peak_memory),
        }
    }

    /// The plugin's counters (`metrics.counter-add`), sorted by name.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.0.template.ctx.metrics.snapshot()
    }

    pub async fn authenticate(&self, request: &AuthRequest) -> Result<AuthVerdict, CallError> {
        self.call(
            Hook::Authenticate,
            Request::Authenticate(request),
            |r| match r {
                Response::Authenticate(v) => validate_auth(&v).map(|()| v),
                _ => Err(CallError::InvalidOutput(
                    "answer to another hook".to_owned(),
                )),
            },
        )
        .await
    }

    pub async fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        qos: Qos,
        retain: bool,
    ) -> Result<AuthzVerdict, CallError> {
        let request = Request::AuthorizePublish {
            session,
            topic,
            qos,
            retain,
        };
        self.call(Hook::AuthorizePublish, request, |r| match r {
            Response::AuthorizePublish(v) => validate_decision(&v.decision).map(|()| v),
            _ => Err(CallError::InvalidOutput(
                "answer to another hook".to_owned(),
            )),
        })
        .await
    }

    pub async fn authorize_subscribe(
        &self,
        session: &Session,
        filter: &str,
        qos: Qos,
    ) -> Result<SubscribeVerdict, CallError> {
        let request = Request::AuthorizeSubscribe {
            session,
            filter,
            qos,
        };
        self.call(Hook::AuthorizeSubscribe, request, |r| match r {
            Response::AuthorizeSubscribe(v) => validate_subscribe(&v.decision, qos).map(|()| v),
            _ => Err(CallError::InvalidOutput(
                "answer to another hook".to_owned(),
            )),
        })
        .await
    }

    /// The verdict on one message: its stamps (WIT 0.1.4), if any, are set at the plugin's clock's
    /// time, as the broker would set them on this message.
    pub async fn transform(
        &self,
        session: &Session,
        message: &Message,
    ) -> Result<TransformVerdict, CallError> {
        self.transform_cacheable(session, message)
            .await
            .map(|answer| answer.verdict)
    }

    /// [`Plugin::transform`] with how long the verdict may be reused (WIT 0.1.3). Its stamps, if any,
    /// are set in the verdict at the plugin's clock's time, and a verdict with stamps is then not
    /// reusable (a reuse would repeat that time): a 0.1.3 answer. [`Plugin::transform_stamping`] keeps
    /// the stamps apart.
    pub async fn transform_cacheable(
        &self,
        session: &Session,
        message: &Message,
    ) -> Result<CacheableTransformVerdict, CallError> {
        let answer = self.transform_stamping(session, message).await?;
        Ok(CacheableTransformVerdict {
            cache_seconds: answer.cache_seconds.filter(|_| answer.stamps.is_empty()),
            verdict: stamped(answer.verdict, &answer.stamps, message, self.clock_millis()),
        })
    }

    /// [`Plugin::transform_sized`] as a 0.1.4 answer: a verdict that holds for a range of payload sizes
    /// is not reusable (a 0.1.4 reuse would give it to a message of any size).
    pub async fn transform_stamping(
        &self,
        session: &Session,
        message: &Message,
    ) -> Result<StampingTransformVerdict, CallError> {
        let sized = self.transform_sized(session, message).await?;
        let mut answer = sized.answer;
        if sized.payload_sizes.is_some() {
            answer.cache_seconds = None;
        }
        Ok(answer)
    }

    /// The plugin's answer as it gave it (WIT 0.1.5): through `sized-transformer` when the plugin
    /// exports it, else through `stamping-transformer` (no payload sizes), else through
    /// `cacheable-transformer` (no stamps either), else through `transformer` (never reusable).
    pub async fn transform_sized(
        &self,
        session: &Session,
        message: &Message,
    ) -> Result<SizedTransformVerdict, CallError> {
        let request = Request::Transform { session, message };
        self.call(Hook::Transform, request, |r| match r {
            Response::Transform(v) => {
                validate_transform(&v.answer.verdict, &v.answer.stamps).map(|()| v)
            }
            _ => Err(CallError::InvalidOutput(
                "answer to another hook".to_owned(),
            )),
        })
        .await
    }

    /// Milliseconds since the Unix epoch by the plugin's clock (`clock.now-millis`): the time stamps
    /// get.
    pub fn clock_millis(&self) -> u64 {
        self.clock().now_millis()
    }

    /// The plugin's clock (one per host: the system's in the broker, a test's in the harness).
    pub fn clock(&self) -> &dyn Clock {
        &*self.0.template.ctx.services.clock
    }

    /// Calls the optional `ticker` export (WIT 0.1.1): the seconds until the next call, 0 for none.
    /// The call has the hooks' deadline (`call_timeout`), which also bounds the `http` requests it
    /// makes. A failure is counted (`failed_ticks`, and by cause) and logged like a hook's; without the
    /// export it is [`CallError::MissingExport`].
    pub async fn tick(&self) -> Result<u32, CallError> {
        let counters = &self.0.counters;
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        let result = if self.0.exports.ticker {
            self.pooled_call(
                Request::Tick,
                self.0.template.limits.call_timeout,
                |r| match r {
                    Response::Tick(seconds) => Ok(seconds),
                    _ => Err(CallError::InvalidOutput(
                        "answer to another hook".to_owned(),
                    )),
                },
            )
            .await
        } else {
            Err(CallError::MissingExport("ticker"))
        };
        if let Err(error) = &result {
            counters.failed_ticks.fetch_add(1, Ordering::Relaxed);
            self.count_failure(error);
            self.warn(Tick, error);
        }
        result
    }

    /// Calls the optional `storage` export's `write` (WIT 0.1.2) with one batch: `Ok(Err(message))`
    /// is the backend's own refusal (its database is unreachable, say), `Err` a failed call (trap,
    /// deadline, out of memory; counted and logged like a hook's), without the export
    /// [`CallError::MissingExport`].
    pub async fn storage_write(&self, batch: &[Op]) -> Result<Result<(), String>, CallError> {
        self.storage_call(Request::StorageWrite(batch), |r| match r {
            Response::StorageWrite(result) => Ok(result),
            _ => Err(CallError::InvalidOutput(
                "answer to another hook".to_owned(),
            )),
        })
        .await
    }

    /// Calls the optional `storage` export's `load` (WIT 0.1.2): up to `limit` records of `keyspace`
    /// after `after`, in key order. Errors as [`storage_write`](Plugin::storage_write); records out of
    /// order or beyond `limit` are [`CallError::InvalidOutput`].
    pub async fn storage_load(
        &self,
        keyspace: Keyspace,
        after: Option<&Key>,
        limit: u32,
    ) -> Result<Result<Vec<(Key, Vec<u8>)>, String>, CallError> {
        let request = Request::StorageLoad {
            keyspace,
            after,
            limit,
        };
        self.storage_call(request, |r| match r {
            Response::StorageLoad(Ok(records)) => {
                validate_records(&records, keyspace, after, limit).map(|()| Ok(records))
            }
            Response::StorageLoad(Err(message)) => Ok(Err(message)),
            _ => Err(CallError::InvalidOutput(
                "answer to another hook".to_owned(),
            )),
        })
        .await
    }

    async fn storage_call<T>(
        &self,
        request: Request<'_>,
        validate: impl FnOnce(Response) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let result = if self.0.exports.storage {
            let timeout = self
                .0
                .template
                .limits
                .call_timeout
                .max(STORAGE_TIMEOUT_FLOOR);
            self.pooled_call(request, timeout, validate).await
        } else {
            Err(CallError::MissingExport("storage"))
        };
        if let Err(error) = &result {
            self.count_failure(error);
            self.warn(StorageCall, error);
        }
        result
    }

    async fn call<T>(
        &self,
        hook: Hook,
        request: Request<'_>,
        validate: impl FnOnce(Response) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let counters = &self.0.counters;
        counters.calls[hook.index()].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.checked_call(hook, request, validate).await;
        counters.durations[hook.index()].record(started.elapsed());
        if let Err(error) = &result {
            counters.failed_calls[hook.index()].fetch_add(1, Ordering::Relaxed);
            self.count_failure(error);
            self.warn(hook, error);
        }
        result
    }

    fn count_failure(&self, error: &CallError) {
        let counters = &self.0.counters;
        let cause = match error {
            CallError::Trap(_) => &counters.trap,
            CallError::Timeout => &counters.timeout,
            CallError::OutOfMemory => &counters.out_of_memory,
            CallError::InvalidOutput(_) => &counters.invalid_output,
            CallError::MissingExport(_) => &counters.missing_export,
            CallError::Instantiate(_) => &counters.instantiate,
        };
        cause.fetch_add(1, Ordering::Relaxed);
    }

    async fn checked_call<T>(
        &self,
        hook: Hook,
        request: Request<'_>,
        validate: impl FnOnce(Response) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        if !self.0.exports.has(hook) {
            return Err(CallError::MissingExport(match hook {
                Hook::Authenticate => "authenticator",
                Hook::AuthorizePublish | Hook::AuthorizeSubscribe => "authorizer",
                Hook::Transform => "transformer",
            }));
        }
        self.pooled_call(request, self.0.template.limits.call_timeout, validate)
            .await
    }

    /// Checks an instance out of the pool (or creates one), calls, and checks it back in unless the
    /// call failed.
    async fn pooled_call<T>(
        &self,
        request: Request<'_>,
        timeout: Duration,
        validate: impl FnOnce(Response) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        // The semaphore is never closed.
        let _slot = self
            .0
            .slots
            .acquire()
            .await
            .map_err(|e| CallError::Instantiate(e.to_string()))?;
        let idle = self.0.idle.lock().pop();
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        // If this future is dropped mid-call, `warm` is dropped with it and never returns to the pool.
        let result = warm.call(request, timeout).await.and_then(validate);
        match &result {
            Ok(_) => self.0.idle.lock().push(warm),
            Err(_) => {
                self.0
                    .counters
                    .instances_recycled
                    .fetch_add(1, Ordering::Relaxed);
                drop(warm);
            }
        }
        result
    }

    async fn instantiate(&self) -> Result<Warm, CallError> {
        let (warm, init) = self.0.template.instantiate().await?;
        self.0
            .counters
            .instances_created
            .fetch_add(1, Ordering::Relaxed);
        init.map_err(|message| {
            CallError::Instantiate(format!("init refused the configuration: {message}"))
        })?;
        Ok(warm)
    }

    fn warn(&self, hook: impl std::fmt::Debug, error: &CallError) {
        let mut limiter = self.0.warn.lock();
        let now = Instant::now();
        if limiter
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            limiter.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut limiter.suppressed);
        limiter.last = Some(now);
        drop(limiter);
        tracing::warn!(
            plugin = &*self.0.name,
            hook = ?hook,
            suppressed,
            "plugin call failed, instance recycled: {error}"
        );
    }
}

/// A `load` answer must be in the keyspace asked for, in strictly increasing key order after `after`,
/// and at most `limit` long: the broker pages on the last key.
fn validate_records(
    records: &[(Key, Vec<u8>)],
    keyspace: Keyspace,
    after: Option<&Key>,
    limit: u32,
) -> Result<(), CallError> {
    if records.len() > limit as usize {
        return Err(CallError::InvalidOutput(format!(
            "load returned {} records, more than the limit {limit}",
            records.len()
        )));
    }
    let mut previous = after.map(|k| (k.name.as_str(), k.seq));
    for (key, _) in records {
        if key.keyspace != keyspace {
            return Err(CallError::InvalidOutput(format!(
                "load of {keyspace:?} returned a record of {:?}",
                key.keyspace
            )));
        }
        let this = (key.name.as_str(), key.seq);
        if previous.is_some_and(|p| p >= this) {
            return Err(CallError::InvalidOutput(format!(
                "load returned {:?}/{} out of key order",
                key.name, key.seq
            )));
        }
        previous = Some(this);
    }
    Ok(())
}

fn validate_denial(denial: &Denial) -> Result<(), CallError> {
    if denial.reason_code < 0x80 {
        return Err(CallError::InvalidOutput(format!(
            "deny with reason code {:#04x}, which is not an error code (>= 0x80)",
            denial.reason_code
        )));
    }
    match &denial.reason {
        Some(reason) => mqtt_string("the denial's reason string", reason),
        None => Ok(()),
    }
}

/// Whether `text` can go in an MQTT UTF-8 string ([MQTT-1.5.4-2]: no U+0000; at most 65,535 bytes): the
/// broker would otherwise send a packet its clients must treat as malformed, or fail to encode it.
fn mqtt_string(what: &str, text: &str) -> Result<(), CallError> {
    if text.contains('\0') {
        // The start only: the log line names the field, it does not repeat a plugin's whole string.
        let start: String = text.chars().take(40).collect();
        return Err(CallError::InvalidOutput(format!(
            "{what} {start:?} has a NUL character"
        )));
    }
    if text.len() > usize::from(u16::MAX) {
        return Err(CallError::InvalidOutput(format!(
            "{what} is {} bytes long, over MQTT's 65,535",
            text.len()
        )));
    }
    Ok(())
}

fn validate_auth(verdict: &AuthVerdict) -> Result<(), CallError> {
    match verdict {
        AuthVerdict::Deny(denial) => validate_denial(denial),
        AuthVerdict::Continue(data) if data.len() > usize::from(u16::MAX) => {
            Err(CallError::InvalidOutput(format!(
                "continue with {} bytes of authentication data, over MQTT's 65,535",
                data.len()
            )))
        }
        AuthVerdict::Allow(_) | AuthVerdict::Defer | AuthVerdict::Continue(_) => Ok(()),
    }
}

fn validate_decision(decision: &Decision) -> Result<(), CallError> {
    match decision {
        Decision::Deny(denial) => validate_denial(denial),
        Decision::Allow | Decision::Defer => Ok(()),
    }
}

pub(crate) fn qos_level(qos: Qos) -> u8 {
    match qos {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    }
}

fn validate_subscribe(decision: &SubscribeDecision, requested: Qos) -> Result<(), CallError> {
    match decision {
        SubscribeDecision::Deny(denial) => validate_denial(denial),
        SubscribeDecision::Allow(granted) if qos_level(*granted) > qos_level(requested) => {
            Err(CallError::InvalidOutput(format!(
                "granted {granted:?} above the requested {requested:?}"
            )))
        }
        SubscribeDecision::Allow(_) | SubscribeDecision::Defer => Ok(()),
    }
}

fn validate_transform(verdict: &TransformVerdict, stamps: &[Stamp]) -> Result<(), CallError> {
    for stamp in stamps {
        mqtt_string("the stamp name", &stamp.key)?;
    }
    if let TransformVerdict::Modify(MessagePatch {
        user_properties: Some(properties),
        ..
    }) = verdict
    {
        for property in properties {
            mqtt_string("the user property name", &property.key)?;
            mqtt_string("the user property value", &property.value)?;
        }
    }
    match verdict {
        TransformVerdict::Drop(code) if *code < 0x80 => Err(CallError::InvalidOutput(format!(
            "drop with reason code {code:#04x}, which is not an error code (>= 0x80)"
        ))),
        TransformVerdict::Modify(patch) => match &patch.topic {
            Some(topic) => wasp_mqtt::topic::validate_topic_name(topic).map_err(|e| {
                CallError::InvalidOutput(format!(
                    "patched topic {topic:?} is not a topic name: {e}"
                ))
            }),
            None => Ok(()),
        },
        TransformVerdict::Drop(_) | TransformVerdict::Pass => Ok(()),
    }
}

impl Plugin {
    /// Whether both handles are the same loaded plugin.
    pub fn same(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
