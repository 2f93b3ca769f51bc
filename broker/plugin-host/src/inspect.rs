//! [`inspect_component`]: what a `.wasm` component exports and imports, read without instantiating it
//! (so without calling `init`). For tools such as `wasp plugin inspect`, which also want the exports of a
//! plugin whose `init` rejects its configuration.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::error::HostError;
use crate::plugin::Exports;

use crate::host::{
    IMPORT_HTTP_PREFIX, INTERFACE_AUTHENTICATOR, INTERFACE_AUTHORIZER,
    INTERFACE_CACHEABLE_TRANSFORMER, INTERFACE_PLUGIN, INTERFACE_SIZED_TRANSFORMER,
    INTERFACE_STAMPING_TRANSFORMER, INTERFACE_STORAGE, INTERFACE_TICKER, INTERFACE_TRANSFORMER,
};

/// What a component declares: the Wasp roles it exports and every export and import by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Whether `wasp:plugin/plugin` (init) is exported; a component without it cannot be loaded.
    pub plugin: bool,
    /// The version of `wasp:plugin` its `plugin` export was built against, e.g. `0.1.0` or `0.1.1`.
    pub version: Option<String>,
    /// The optional role interfaces it exports.
    pub exports: Exports,
    /// Whether it imports `wasp:plugin/http` (loading it then needs an http grant).
    pub imports_http: bool,
    /// Every export name, e.g. `wasp:plugin/authenticator@0.1.5`, sorted.
    pub export_names: Vec<String>,
    /// Every import name (the `wasp:plugin` host imports and WASI), sorted.
    pub import_names: Vec<String>,
}

impl ComponentInfo {
    /// The predefined WIT world of `wasp:plugin` whose exports are exactly this component's: `base`,
    /// `authenticator-plugin`, `authorizer-plugin`, `transformer-plugin`, `http-authenticator-plugin`
    /// (authenticator and ticker), `storage-plugin`, `cacheable-transformer-plugin`, `full-plugin`
    /// (every role, with or without ticker, as 0.1.0's `full-plugin` had none), `all-roles` (and
    /// storage), `every-role` (and cacheable-transformer), `stamping-transformer-plugin`, `all-hooks`
    /// (and stamping-transformer), `sized-transformer-plugin` or `all-exports` (and sized-transformer).
    /// `None` when `plugin` is missing or the
    /// roles are a combination no predefined world has (e.g. authenticator and authorizer without
    /// transformer: a world of the plugin's own that includes both).
    pub fn world(&self) -> Option<&'static str> {
        if !self.plugin {
            return None;
        }
        let Exports {
            authenticator,
            authorizer,
            transformer,
            cacheable_transformer,
            stamping_transformer,
            sized_transformer,
            ticker,
            storage,
        } = self.exports;
        let roles = (authenticator, authorizer, transformer, ticker, storage);
        // The transform interfaces added since 0.1.3, oldest first.
        let newer = (
            cacheable_transformer,
            stamping_transformer,
            sized_transformer,
        );
        const NONE: (bool, bool, bool, bool, bool) = (false, false, false, false, false);
        const EVERY: (bool, bool, bool, bool, bool) = (true, true, true, true, true);
        match (roles, newer) {
            (NONE, (false, false, false)) => Some("base"),
            ((true, false, false, false, false), (false, false, false)) => {
                Some("authenticator-plugin")
            }
            ((false, true, false, false, false), (false, false, false)) => {
                Some("authorizer-plugin")
            }
            ((false, false, true, false, false), (false, false, false)) => {
                Some("transformer-plugin")
            }
            (NONE, (true, false, false)) => Some("cacheable-transformer-plugin"),
            (NONE, (false, true, false)) => Some("stamping-transformer-plugin"),
            (NONE, (false, false, true)) => Some("sized-transformer-plugin"),
            ((true, false, false, true, false), (false, false, false)) => {
                Some("http-authenticator-plugin")
            }
            ((false, false, false, false, true), (false, false, false)) => Some("storage-plugin"),
            ((true, true, true, _, false), (false, false, false)) => Some("full-plugin"),
            (EVERY, (false, false, false)) => Some("all-roles"),
            (EVERY, (true, false, false)) => Some("every-role"),
            (EVERY, (true, true, false)) => Some("all-hooks"),
            (EVERY, (true, true, true)) => Some("all-exports"),
            _ => None,
        }
    }

    /// The roles exported, by WIT interface name (`authenticator`, `authorizer`, `transformer`,
    /// `cacheable-transformer`, `stamping-transformer`, `sized-transformer`, `ticker`, `storage`).
    pub fn roles(&self) -> Vec<&'static str> {
        [
            (self.exports.authenticator, "authenticator"),
            (self.exports.authorizer, "authorizer"),
            (self.exports.transformer, "transformer"),
            (self.exports.cacheable_transformer, "cacheable-transformer"),
            (self.exports.stamping_transformer, "stamping-transformer"),
            (self.exports.sized_transformer, "sized-transformer"),
            (self.exports.ticker, "ticker"),
            (self.exports.storage, "storage"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

/// Reads and compiles the component at `wasm` with an engine of its own (no instance is created, no
/// plugin code runs) and lists what it exports and imports. `name` names the plugin in errors.
///
/// Only names are read (semver-compatibly, as the host does: a 0.1.0 component's roles are found):
/// whether the exports have the types the host expects is checked by
/// [`PluginHost::load`](crate::PluginHost::load).
pub fn inspect_component(name: &str, wasm: &Path) -> Result<ComponentInfo, HostError> {
    let bytes = std::fs::read(wasm).map_err(|source| HostError::Read {
        plugin: name.to_owned(),
        path: wasm.to_owned(),
        source,
    })?;
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
    let component = Component::new(&engine, &bytes).map_err(|e| HostError::Compile {
        plugin: name.to_owned(),
        path: wasm.to_owned(),
        message: format!("{e:#}"),
    })?;
    let ty = component.component_type();
    let mut export_names: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_owned()).collect();
    let mut import_names: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_owned()).collect();
    export_names.sort();
    import_names.sort();
    let has = |interface: &str| component.get_export_index(None, interface).is_some();
    let version = export_names
        .iter()
        .find_map(|n| n.strip_prefix("wasp:plugin/plugin@"))
        .map(str::to_owned);
    Ok(ComponentInfo {
        plugin: has(INTERFACE_PLUGIN),
        version,
        exports: Exports {
            authenticator: has(INTERFACE_AUTHENTICATOR),
            authorizer: has(INTERFACE_AUTHORIZER),
            transformer: has(INTERFACE_TRANSFORMER),
            cacheable_transformer: has(INTERFACE_CACHEABLE_TRANSFORMER),
            stamping_transformer: has(INTERFACE_STAMPING_TRANSFORMER),
            sized_transformer: has(INTERFACE_SIZED_TRANSFORMER),
            ticker: has(INTERFACE_TICKER),
            storage: has(INTERFACE_STORAGE),
        },
        imports_http: import_names
            .iter()
            .any(|n| n.starts_with(IMPORT_HTTP_PREFIX)),
        export_names,
        import_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_programs::{
        ALLOW_DENY, AUTH_ONLY, GARBAGE, HTTP_PROBE, REUSE, SIZED, STAMP, V010_AUTHORIZER,
    };

    #[test]
    fn full_plugin_exports_every_role() {
        let info = inspect_component("full", Path::new(ALLOW_DENY)).unwrap();
        assert!(info.plugin);
        assert_eq!(
            info.exports,
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
        assert_eq!(info.world(), Some("full-plugin"));
        assert_eq!(info.version.as_deref(), Some("0.1.5"));
        assert_eq!(
            info.roles(),
            ["authenticator", "authorizer", "transformer", "ticker"]
        );
        assert!(
            info.import_names
                .iter()
                .any(|n| n == "wasp:plugin/kv@0.1.5"),
            "{:?}",
            info.import_names
        );
        // It never calls `http.send`, so the import is not in the component.
        assert!(!info.imports_http, "{:?}", info.import_names);
    }

    #[test]
    fn http_authenticator_world_and_import() {
        let info = inspect_component("probe", Path::new(HTTP_PROBE)).unwrap();
        assert_eq!(info.world(), Some("http-authenticator-plugin"));
        assert_eq!(info.roles(), ["authenticator", "ticker"]);
        assert!(info.imports_http, "{:?}", info.import_names);
    }

    #[test]
    fn a_0_1_0_component_is_read_semver_compatibly() {
        let info = inspect_component("old", Path::new(V010_AUTHORIZER)).unwrap();
        assert!(info.plugin);
        assert_eq!(info.version.as_deref(), Some("0.1.0"));
        assert_eq!(info.world(), Some("authorizer-plugin"));
        assert_eq!(
            info.export_names,
            ["wasp:plugin/authorizer@0.1.0", "wasp:plugin/plugin@0.1.0"]
        );
    }

    #[test]
    fn narrow_world_is_named() {
        let info = inspect_component("auth", Path::new(AUTH_ONLY)).unwrap();
        assert_eq!(info.world(), Some("authenticator-plugin"));
        assert_eq!(info.roles(), ["authenticator"]);
        assert_eq!(
            info.export_names,
            [INTERFACE_AUTHENTICATOR, INTERFACE_PLUGIN]
        );
        let info = inspect_component("reuse", Path::new(REUSE)).unwrap();
        assert_eq!(info.world(), Some("cacheable-transformer-plugin"));
        assert_eq!(info.roles(), ["cacheable-transformer"]);
        let info = inspect_component("stamp", Path::new(STAMP)).unwrap();
        assert_eq!(info.world(), Some("stamping-transformer-plugin"));
        assert_eq!(info.roles(), ["stamping-transformer"]);
        let info = inspect_component("sized", Path::new(SIZED)).unwrap();
        assert_eq!(info.world(), Some("sized-transformer-plugin"));
        assert_eq!(info.roles(), ["sized-transformer"]);
    }

    #[test]
    fn combinations_without_a_world_and_missing_plugin() {
        let mut info = inspect_component("auth", Path::new(AUTH_ONLY)).unwrap();
        info.exports.authorizer = true;
        assert_eq!(info.world(), None);
        info.exports = Exports::default();
        assert_eq!(info.world(), Some("base"));
        info.plugin = false;
        assert_eq!(info.world(), None);
    }

    #[test]
    fn unreadable_and_invalid_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.wasm");
        assert!(matches!(
            inspect_component("p", &missing),
            Err(HostError::Read { .. })
        ));
        let junk = dir.path().join("junk.wasm");
        std::fs::write(&junk, b"not wasm").unwrap();
        assert!(matches!(
            inspect_component("p", &junk),
            Err(HostError::Compile { .. })
        ));
        // A guest that is a valid component: whatever GARBAGE answers at run time, it inspects.
        assert!(inspect_component("g", Path::new(GARBAGE)).unwrap().plugin);
    }
}
