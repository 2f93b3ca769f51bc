//! A guest that answers with values the host must reject: a patched topic with a wildcard, denials with
//! reason code 0x00, a drop with a success code, a subscription granted above the requested QoS, and
//! fields MQTT cannot carry: a NUL in a reason string (user name `nul`) or in a user property (topic
//! `*/nul`), a user property or authentication data over 65,535 bytes (topic `*/long`, user name `long`).

wit_bindgen::generate!({ world: "full-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{authenticator, authorizer, plugin, ticker, transformer};
use wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Decision, Denial, Hooks, Interests, Message,
    MessagePatch, Qos, Session, SubscribeDecision, SubscribeVerdict, TransformVerdict, UserProperty,
};

struct Guest;

fn bad_denial() -> Denial {
    Denial {
        reason_code: 0x00,
        reason: Some("success is not a refusal".to_owned()),
    }
}

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
        if request.client.username.as_deref() == Some("nul") {
            return AuthVerdict::Deny(Denial {
                reason_code: 0x87,
                reason: Some("not\0allowed".to_owned()),
            });
        }
        if request.client.username.as_deref() == Some("long") {
            return AuthVerdict::Continue(vec![0; 65_536]);
        }
        AuthVerdict::Deny(bad_denial())
    }
}

impl authorizer::Guest for Guest {
    fn authorize_publish(
        _session: Session,
        _topic: String,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        AuthzVerdict {
            decision: Decision::Deny(bad_denial()),
            cache_seconds: None,
        }
    }

    fn authorize_subscribe(_session: Session, _filter: String, _qos: Qos) -> SubscribeVerdict {
        SubscribeVerdict {
            decision: SubscribeDecision::Allow(Qos::ExactlyOnce),
            cache_seconds: None,
        }
    }
}

impl transformer::Guest for Guest {
    fn transform(_session: Session, message: Message) -> TransformVerdict {
        if message.topic.ends_with("/drop") {
            return TransformVerdict::Drop(0x10);
        }
        let property = |value: String| {
            TransformVerdict::Modify(MessagePatch {
                topic: None,
                payload: None,
                qos: None,
                retain: None,
                user_properties: Some(vec![UserProperty {
                    key: "k".to_owned(),
                    value,
                }]),
            })
        };
        if message.topic.ends_with("/nul") {
            return property("a\0b".to_owned());
        }
        if message.topic.ends_with("/long") {
            return property("x".repeat(65_536));
        }
        TransformVerdict::Modify(MessagePatch {
            topic: Some("a/+/b".to_owned()),
            payload: None,
            qos: None,
            retain: None,
            user_properties: None,
        })
    }
}

impl ticker::Guest for Guest {
    fn tick() -> u32 {
        // Any number is a valid answer.
        u32::MAX
    }
}

export!(Guest);
