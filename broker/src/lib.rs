//! Wasp: an MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! The map of the crate (ARCHITECTURE.md tells the same story with the path of a PUBLISH):
//!
//! - [`config`]: the TOML file's shape and its validation into the domain types everything else reads.
//! - [`server`]: binds the listeners, accepts sockets, spawns one task per connection and drives a graceful
//!   shutdown. Owns nothing protocol-related.
//! - [`transport`]: what carries MQTT on a listener (TCP, TLS, WebSocket, WebSocket over TLS): the
//!   handshakes, client-certificate identities, TLS reload. Hands `connection` a byte stream.
//! - `connection`: one task per client. Owns the socket, its read/write buffers and the protocol state machine
//!   of that connection (CONNECT, keep alive, inbound QoS 2 state, topic aliases). It decodes with
//!   [`wasp_mqtt`], the pure codec, and talks to the rest through [`broker::Broker`].
//! - [`broker`]: the shared state: the session registry, the subscription tree, the retained store and the
//!   counters. Routing a message (matching it and queueing it into every subscriber's session) happens here,
//!   on the publisher's task, so fan-out work is spread over the cores.
//! - `session`: a session's state that outlives connections: subscriptions, the queue of messages waiting to
//!   be sent, and outbound in-flight QoS 1/2 messages.
//! - `access`: the plugin hooks as a connection uses them (authorization with a verdict cache,
//!   transformation), on top of `wasp_plugin_host::Chain`.
//! - [`router`] and [`retained`]: the two tries (subscriptions by filter, retained messages by topic).
//! - `sys`: publishes the `$SYS/broker/...` topics.
//! - `metrics`: the table of figures `$SYS` publishes, and the Prometheus endpoint serving the same
//!   figures plus the plugins' calls, failures and call durations.
//! - `rate`: the token bucket behind the connection, publish and bandwidth rate limits.

mod access;
pub mod broker;
pub mod config;
mod connection;
mod metrics;
mod rate;
pub mod retained;
pub mod router;
pub mod server;
mod session;
pub mod store;
mod sys;
#[cfg(test)]
mod topic_strategies;
pub mod transport;

/// The global allocator of the `wasp` binary, which the benchmarks that run the broker in their own process
/// declare too, to measure the same broker: mimalloc, built without transparent huge pages (why: the
/// `mimalloc` entry in this crate's Cargo.toml, and bench/README.md "Allocator").
pub use mimalloc::MiMalloc as Allocator;
