//! A transformer whose verdicts the broker may reuse (world `cacheable-transformer-plugin`, WIT 0.1.3).
//! Its config is plain text, `TAG SECONDS [payload]`: every message gets the user property `TAG=1`
//! (and, with `payload`, the payload `patched`), with `cache-seconds` = SECONDS (`none` for none).

wit_bindgen::generate!({ world: "cacheable-transformer-plugin", path: "../../../../wit" });

use std::cell::RefCell;

use exports::wasp::plugin::{cacheable_transformer, plugin};
use wasp::plugin::types::{
    CacheableTransformVerdict, Hooks, Interests, Message, MessagePatch, Session, TransformVerdict,
    UserProperty,
};

struct Settings {
    tag: String,
    seconds: Option<u32>,
    payload: bool,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        let mut words = config.split_whitespace();
        let tag = words.next().ok_or("no tag")?.to_owned();
        let seconds = match words.next().ok_or("no seconds")? {
            "none" => None,
            n => Some(n.parse().map_err(|_| format!("bad seconds {n}"))?),
        };
        let payload = words.next() == Some("payload");
        SETTINGS.with(|s| {
            *s.borrow_mut() = Some(Settings {
                tag,
                seconds,
                payload,
            })
        });
        Ok(Interests {
            hooks: Hooks::TRANSFORM,
            publish_filters: Vec::new(),
        })
    }
}

impl cacheable_transformer::Guest for Guest {
    fn transform(_session: Session, message: Message) -> CacheableTransformVerdict {
        SETTINGS.with(|s| {
            let s = s.borrow();
            let s = s.as_ref().expect("init ran");
            let mut user_properties = message.user_properties;
            user_properties.push(UserProperty {
                key: s.tag.clone(),
                value: "1".to_owned(),
            });
            CacheableTransformVerdict {
                verdict: TransformVerdict::Modify(MessagePatch {
                    topic: None,
                    payload: s.payload.then(|| b"patched".to_vec()),
                    qos: None,
                    retain: None,
                    user_properties: Some(user_properties),
                }),
                cache_seconds: s.seconds,
            }
        })
    }
}

export!(Guest);
