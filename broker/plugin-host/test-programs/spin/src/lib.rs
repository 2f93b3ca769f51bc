//! A faulty guest: it loops forever on the trigger word `spin`, and answers normally otherwise (allow, or pass).

wit_bindgen::generate!({ world: "full-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{authenticator, authorizer, plugin, ticker, transformer};
use wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Decision, Hooks, Interests, Message, Qos, Session,
    SubscribeDecision, SubscribeVerdict, TransformVerdict,
};

const TRIGGER: &str = "spin";

fn fault() -> ! {
    loop {
        std::hint::black_box(());
    }
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(_config: String) -> Result<Interests, String> {
        Ok(Interests {
            hooks: Hooks::all(),
            publish_filters: Vec::new(),
        })
    }
}

impl authenticator::Guest for Guest {
    fn authenticate(request: AuthRequest) -> AuthVerdict {
        if request.client.username.as_deref() == Some(TRIGGER) {
            fault();
        }
        AuthVerdict::Allow(Vec::new())
    }
}

impl authorizer::Guest for Guest {
    fn authorize_publish(
        _session: Session,
        topic: String,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        if topic == TRIGGER {
            fault();
        }
        AuthzVerdict {
            decision: Decision::Allow,
            cache_seconds: None,
        }
    }

    fn authorize_subscribe(_session: Session, filter: String, qos: Qos) -> SubscribeVerdict {
        if filter == TRIGGER {
            fault();
        }
        SubscribeVerdict {
            decision: SubscribeDecision::Allow(qos),
            cache_seconds: None,
        }
    }
}

impl transformer::Guest for Guest {
    fn transform(_session: Session, message: Message) -> TransformVerdict {
        if message.topic == TRIGGER {
            fault();
        }
        TransformVerdict::Pass
    }
}

impl ticker::Guest for Guest {
    fn tick() -> u32 {
        0
    }
}

export!(Guest);
