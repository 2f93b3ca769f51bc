//! A guest whose init refuses any config without a `"token"` key.

wit_bindgen::generate!({ world: "authenticator-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{authenticator, plugin};
use wasp::plugin::types::{AuthRequest, AuthVerdict, Hooks, Interests};

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        if config.contains("\"token\"") {
            Ok(Interests {
                hooks: Hooks::AUTHENTICATE,
                publish_filters: Vec::new(),
            })
        } else {
            Err("config key `token` is required".to_owned())
        }
    }
}

impl authenticator::Guest for Guest {
    fn authenticate(_request: AuthRequest) -> AuthVerdict {
        AuthVerdict::Defer
    }
}

export!(Guest);
