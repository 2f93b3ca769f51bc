//! The host's two error types: [`HostError`] when setting up (the broker refuses to start) and
//! [`CallError`] when one call fails (the plugin's failure policy applies).

use std::path::PathBuf;

/// Setting up the host or loading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("plugin host: cannot create the wasmtime engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}`: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: {} is not a valid WebAssembly component: {message}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin `{plugin}` ({}): {message}", path.display())]
    Link {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin `{plugin}` ({}) does not export `{interface}`", path.display())]
    MissingExport {
        plugin: String,
        path: PathBuf,
        interface: &'static str,
    },
    #[error("plugin `{plugin}`: cannot grant directory {}: {message}", host.display())]
    Dir {
        plugin: String,
        host: PathBuf,
        message: String,
    },
    #[error("plugin `{plugin}`: {message}")]
    Limits { plugin: String, message: String },
    /// The component imports `wasp:plugin/http` without a grant, or the grant is unusable (a host
    /// entry, the CA file).
    #[error("plugin `{plugin}`: {message}")]
    Http { plugin: String, message: String },
    #[error("plugin `{plugin}` ({}) failed to start: {source}", path.display())]
    Start {
        plugin: String,
        path: PathBuf,
        #[source]
        source: CallError,
    },
    #[error("plugin `{plugin}` rejected its configuration: {message}")]
    InitRejected { plugin: String, message: String },
}

/// One call into a plugin failed. The instance that failed is dropped; the next call gets a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its call deadline")]
    Timeout,
    #[error("plugin ran out of memory")]
    OutOfMemory,
    #[error("plugin returned an invalid answer: {0}")]
    InvalidOutput(String),
    #[error("plugin does not export `{0}`")]
    MissingExport(&'static str),
    /// A new instance could not be created, or its `init` refused the configuration it accepted at load.
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
}
