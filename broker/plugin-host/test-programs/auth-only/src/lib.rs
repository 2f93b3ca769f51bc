//! A guest targeting world `authenticator-plugin`: it exports `plugin` and `authenticator` only.

wit_bindgen::generate!({ world: "authenticator-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{authenticator, plugin};
use wasp::plugin::types::{AuthRequest, AuthVerdict, Hooks, Interests};

struct Guest;

impl plugin::Guest for Guest {
    fn init(_config: String) -> Result<Interests, String> {
        Ok(Interests {
            hooks: Hooks::AUTHENTICATE,
            publish_filters: Vec::new(),
        })
    }
}

impl authenticator::Guest for Guest {
    fn authenticate(request: AuthRequest) -> AuthVerdict {
        AuthVerdict::Allow(vec![
            ("role".to_owned(), "guest".to_owned()),
            ("client".to_owned(), request.client.client_id),
        ])
    }
}

export!(Guest);
