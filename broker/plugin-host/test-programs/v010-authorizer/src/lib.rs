//! A guest built against the frozen 0.1.0 WIT (`../wit-0.1.0`): an authorizer that allows every publish
//! and subscription and counts its calls in kv `calls`. Its exports and imports are all named
//! `wasp:plugin/...@0.1.0`; the host (0.1.1) must still load it and call it.

wit_bindgen::generate!({ world: "authorizer-plugin", path: "../wit-0.1.0" });

use exports::wasp::plugin::{authorizer, plugin};
use wasp::plugin::kv;
use wasp::plugin::types::{
    AuthzVerdict, Decision, Hooks, Interests, Qos, Session, SubscribeDecision, SubscribeVerdict,
};

fn count() {
    let calls = kv::get("calls").map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
    kv::set("calls", &(calls + 1).to_le_bytes());
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(_config: String) -> Result<Interests, String> {
        Ok(Interests {
            hooks: Hooks::AUTHORIZE_PUBLISH | Hooks::AUTHORIZE_SUBSCRIBE,
            publish_filters: Vec::new(),
        })
    }
}

impl authorizer::Guest for Guest {
    fn authorize_publish(
        _session: Session,
        _topic: String,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        count();
        AuthzVerdict {
            decision: Decision::Allow,
            cache_seconds: None,
        }
    }

    fn authorize_subscribe(_session: Session, _filter: String, qos: Qos) -> SubscribeVerdict {
        count();
        SubscribeVerdict {
            decision: SubscribeDecision::Allow(qos),
            cache_seconds: None,
        }
    }
}

export!(Guest);
