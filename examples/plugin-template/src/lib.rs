//! A Wasp plugin that lets in the client whose username is configured and defers every other one.

use wasp_plugin_sdk::{AuthRequest, AuthVerdict, Config, Hooks, Interests, Plugin};

/// The plugin's state, built from its `[plugins.config]` table: `username = "..."`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    username: String,
}

impl Plugin for Template {
    fn init(config: Config) -> Result<Self, String> {
        config.parse()
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::AUTHENTICATE)
    }

    fn authenticate(&self, request: &AuthRequest) -> AuthVerdict {
        match request.client.username.as_deref() {
            Some(name) if name == self.username => AuthVerdict::allow(),
            _ => AuthVerdict::Defer,
        }
    }
}

wasp_plugin_sdk::export_plugin!(Template);
