//! A transformer that has the broker stamp the receive time (world `stamping-transformer-plugin`, WIT
//! 0.1.4). Its config is plain text, `KEY SECONDS`: every verdict is `pass` with the stamp
//! `KEY = receive-time-millis` and `cache-seconds` = SECONDS (`none` for none). KEY `nul` stands for a
//! name with a NUL character, which the host must refuse.

wit_bindgen::generate!({ world: "stamping-transformer-plugin", path: "../../../../wit" });

use std::cell::RefCell;

use exports::wasp::plugin::{plugin, stamping_transformer};
use wasp::plugin::types::{
    Hooks, Interests, Message, Session, Stamp, StampValue, StampingTransformVerdict,
    TransformVerdict,
};

thread_local! {
    static SETTINGS: RefCell<Option<(String, Option<u32>)>> = const { RefCell::new(None) };
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        let mut words = config.split_whitespace();
        let key = match words.next().ok_or("no key")? {
            "nul" => "a\0b".to_owned(),
            key => key.to_owned(),
        };
        let seconds = match words.next().ok_or("no seconds")? {
            "none" => None,
            n => Some(n.parse().map_err(|_| format!("bad seconds {n}"))?),
        };
        SETTINGS.with(|s| *s.borrow_mut() = Some((key, seconds)));
        Ok(Interests {
            hooks: Hooks::TRANSFORM,
            publish_filters: Vec::new(),
        })
    }
}

impl stamping_transformer::Guest for Guest {
    fn transform(_session: Session, _message: Message) -> StampingTransformVerdict {
        SETTINGS.with(|s| {
            let s = s.borrow();
            let (key, seconds) = s.as_ref().expect("init ran");
            StampingTransformVerdict {
                verdict: TransformVerdict::Pass,
                cache_seconds: *seconds,
                stamps: vec![Stamp {
                    key: key.clone(),
                    value: StampValue::ReceiveTimeMillis,
                }],
            }
        })
    }
}

export!(Guest);
