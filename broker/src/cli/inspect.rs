//! `wasp plugin inspect`: what a plugin component exports (its roles and WIT world) and what its `init`
//! declares (hooks and publish filters) for a given configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use wasp_plugin_host::types::{Hooks, Interests};
use wasp_plugin_host::{
    ComponentInfo, HostConfig, HostError, HostServices, HttpGrant, PluginHost, PluginSpec,
    inspect_component,
};

/// Arguments of `wasp plugin inspect`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show a plugin's exports, and the hooks and publish filters its init declares",
    long_about = "Show a plugin component's exports (which of authenticator, authorizer and transformer \
                  it plays, and its WIT world), then call its init with --config and show the hooks and \
                  publish filters it declares.\n\n\
                  Exit status: 0 when init accepts the configuration, 1 when it rejects it or the plugin \
                  cannot be loaded, 2 for a usage error."
)]
pub struct Args {
    /// The plugin's .wasm component.
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,

    /// The plugin's configuration as JSON (what the broker passes from the `[plugins.config]` table).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
}

/// How `wasp plugin inspect` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exports read and init accepted the configuration.
    Accepted,
    /// The report was printed but the plugin cannot be used as configured (init rejected the
    /// configuration, the component is no Wasp plugin, or loading failed).
    Refused,
}

/// Usage errors (exit status 2) and failures before anything could be printed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("--config is not JSON: {0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl InspectError {
    pub fn exit_code(&self) -> u8 {
        match self {
            InspectError::Usage(_) => 2,
            InspectError::Failed(_) | InspectError::Output(_) => 1,
        }
    }
}

/// The plugin's name in messages: the file's stem.
fn plugin_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "plugin".to_owned())
}

/// Runs `wasp plugin inspect`, writing the report to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Outcome, InspectError> {
    serde_json::from_str::<serde_json::Value>(&args.config)
        .map_err(|e| InspectError::Usage(e.to_string()))?;
    let name = plugin_name(&args.file);
    let info =
        inspect_component(&name, &args.file).map_err(|e| InspectError::Failed(e.to_string()))?;
    write_exports(out, &args.file, &info)?;
    if !info.plugin {
        writeln!(
            out,
            "init: not called: the component does not export wasp:plugin/plugin@0.1.x, so it is not a \
             Wasp plugin"
        )?;
        return Ok(Outcome::Refused);
    }
    let loaded = load(&name, &args.file, &args.config, info.imports_http)?;
    match loaded {
        Ok(interests) => {
            writeln!(out, "init: accepted the configuration {}", args.config)?;
            write_interests(out, &interests)?;
            Ok(Outcome::Accepted)
        }
        Err(HostError::InitRejected { message, .. }) => {
            writeln!(out, "init: rejected the configuration: {message}")?;
            Ok(Outcome::Refused)
        }
        Err(error) => {
            writeln!(out, "init: the plugin could not be loaded: {error}")?;
            Ok(Outcome::Refused)
        }
    }
}

/// Loads the plugin as the broker would (one instance), which calls `init`. A plugin importing `http`
/// gets a grant of no hosts: it loads, and any request its `init` makes is refused.
fn load(
    name: &str,
    file: &Path,
    config: &str,
    imports_http: bool,
) -> Result<Result<Interests, HostError>, InspectError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InspectError::Failed(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(async {
        let host = match PluginHost::new(HostConfig {
            total_instances: 1,
            ..HostConfig::default()
        }) {
            Ok(host) => host,
            Err(e) => return Ok(Err(e)),
        };
        let mut spec = PluginSpec::new(name, file);
        spec.config_json = config.to_owned();
        spec.limits.max_instances = 1;
        spec.http = imports_http.then(HttpGrant::default);
        Ok(host
            .load(spec, HostServices::default())
            .await
            .map(|plugin| plugin.interests().clone()))
    })
}

fn write_exports(out: &mut dyn Write, file: &Path, info: &ComponentInfo) -> std::io::Result<()> {
    writeln!(out, "file: {}", file.display())?;
    let roles = info.roles();
    let roles = if roles.is_empty() {
        "none".to_owned()
    } else {
        roles.join(", ")
    };
    match info.world() {
        Some(world) => writeln!(
            out,
            "world: wasp:plugin/{world}@{}",
            info.version.as_deref().unwrap_or("0.1.5")
        )?,
        None if !info.plugin => writeln!(out, "world: none (no wasp:plugin/plugin export)")?,
        None => writeln!(
            out,
            "world: a world of its own (no predefined wasp:plugin world exports exactly these roles)"
        )?,
    }
    writeln!(out, "roles: {roles}")?;
    if info.imports_http {
        writeln!(
            out,
            "http: imports wasp:plugin/http (the broker needs http = {{ hosts = [...] }} for it; here \
             init runs with no host granted)"
        )?;
    }
    writeln!(out, "exports:")?;
    for name in &info.export_names {
        writeln!(out, "  {name}")?;
    }
    writeln!(out, "imports:")?;
    for name in &info.import_names {
        writeln!(out, "  {name}")?;
    }
    Ok(())
}

fn write_interests(out: &mut dyn Write, interests: &Interests) -> std::io::Result<()> {
    let hooks: Vec<&str> = [
        (Hooks::AUTHENTICATE, "authenticate"),
        (Hooks::AUTHORIZE_PUBLISH, "authorize-publish"),
        (Hooks::AUTHORIZE_SUBSCRIBE, "authorize-subscribe"),
        (Hooks::TRANSFORM, "transform"),
    ]
    .into_iter()
    .filter_map(|(flag, name)| interests.hooks.contains(flag).then_some(name))
    .collect();
    if hooks.is_empty() {
        writeln!(out, "hooks: none")?;
    } else {
        writeln!(out, "hooks: {}", hooks.join(", "))?;
    }
    if interests.publish_filters.is_empty() {
        writeln!(out, "publish-filters: none (every topic)")
    } else {
        writeln!(out, "publish-filters:")?;
        for filter in &interests.publish_filters {
            writeln!(out, "  {filter}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_plugin_host::test_programs::{
        ALLOW_DENY, AUTH_ONLY, HTTP_PROBE, INIT_REJECT, V010_AUTHORIZER,
    };

    fn inspect(file: &str, config: &str) -> (Result<Outcome, InspectError>, String) {
        let args = Args {
            file: file.into(),
            config: config.to_owned(),
        };
        let mut out = Vec::new();
        let outcome = run(&args, &mut out);
        (outcome, String::from_utf8(out).unwrap())
    }

    #[test]
    fn full_plugin_with_filters() {
        let (outcome, text) = inspect(ALLOW_DENY, r#"{"filters": ["a/#", "b/+"]}"#);
        assert_eq!(outcome.unwrap(), Outcome::Accepted, "{text}");
        assert!(
            text.contains("world: wasp:plugin/full-plugin@0.1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("roles: authenticator, authorizer, transformer, ticker\n"),
            "{text}"
        );
        assert!(text.contains("  wasp:plugin/transformer@0.1.5\n"), "{text}");
        assert!(text.contains("  wasp:plugin/ticker@0.1.5\n"), "{text}");
        assert!(text.contains("  wasp:plugin/log@0.1.5\n"), "{text}");
        assert!(!text.contains("http:"), "{text}");
        assert!(
            text.contains(
                "hooks: authenticate, authorize-publish, authorize-subscribe, transform\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("publish-filters:\n  a/#\n  b/+\n"), "{text}");
    }

    #[test]
    fn authenticator_only_with_every_topic() {
        let (outcome, text) = inspect(AUTH_ONLY, "{}");
        assert_eq!(outcome.unwrap(), Outcome::Accepted, "{text}");
        assert!(
            text.contains("world: wasp:plugin/authenticator-plugin@0.1.5\nroles: authenticator\n"),
            "{text}"
        );
        assert!(!text.contains("authorizer@"), "{text}");
        assert!(
            text.ends_with("hooks: authenticate\npublish-filters: none (every topic)\n"),
            "{text}"
        );
    }

    #[test]
    fn http_importer_shows_the_ticker_role_and_loads_without_hosts() {
        let (outcome, text) = inspect(HTTP_PROBE, "{}");
        assert_eq!(outcome.unwrap(), Outcome::Accepted, "{text}");
        assert!(
            text.contains(
                "world: wasp:plugin/http-authenticator-plugin@0.1.5\nroles: authenticator, ticker\n\
                 http: imports wasp:plugin/http"
            ),
            "{text}"
        );
        assert!(text.contains("  wasp:plugin/http@0.1.5\n"), "{text}");
    }

    #[test]
    fn a_0_1_0_component_shows_its_version() {
        let (outcome, text) = inspect(V010_AUTHORIZER, "{}");
        assert_eq!(outcome.unwrap(), Outcome::Accepted, "{text}");
        assert!(
            text.contains("world: wasp:plugin/authorizer-plugin@0.1.0\nroles: authorizer\n"),
            "{text}"
        );
        assert!(
            text.ends_with("hooks: authorize-publish, authorize-subscribe\npublish-filters: none (every topic)\n"),
            "{text}"
        );
    }

    #[test]
    fn rejected_config_still_shows_the_exports() {
        let (outcome, text) = inspect(INIT_REJECT, "{}");
        assert_eq!(outcome.unwrap(), Outcome::Refused, "{text}");
        assert!(text.contains("roles: authenticator\n"), "{text}");
        assert!(
            text.ends_with("init: rejected the configuration: config key `token` is required\n"),
            "{text}"
        );
        let (outcome, text) = inspect(INIT_REJECT, r#"{"token": "t"}"#);
        assert_eq!(outcome.unwrap(), Outcome::Accepted, "{text}");
    }

    #[test]
    fn bad_json_and_missing_files_are_errors() {
        let (outcome, text) = inspect(AUTH_ONLY, "{token}");
        let err = outcome.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(text.is_empty());
        let (outcome, _) = inspect("/nonexistent/plugin.wasm", "{}");
        let err = outcome.unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string().contains("/nonexistent/plugin.wasm"),
            "{err}"
        );
    }
}
