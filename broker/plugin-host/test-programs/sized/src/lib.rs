//! A transformer whose verdicts hold for a range of payload sizes (world `sized-transformer-plugin`, WIT
//! 0.1.5). Its config is plain text, `MIN MAX SECONDS`: every verdict is `pass` with `cache-seconds` =
//! SECONDS and `payload-sizes` = MIN..=MAX.

wit_bindgen::generate!({ world: "sized-transformer-plugin", path: "../../../../wit" });

use std::cell::Cell;

use exports::wasp::plugin::{plugin, sized_transformer};
use wasp::plugin::types::{
    Hooks, Interests, Message, PayloadSizes, Session, SizedTransformVerdict,
    StampingTransformVerdict, TransformVerdict,
};

thread_local! {
    static SETTINGS: Cell<(u32, u32, u32)> = const { Cell::new((0, 0, 0)) };
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        let numbers = config
            .split_whitespace()
            .map(|n| n.parse().map_err(|_| format!("bad number {n}")))
            .collect::<Result<Vec<u32>, _>>()?;
        let [min, max, seconds] = numbers[..] else {
            return Err("expected MIN MAX SECONDS".to_owned());
        };
        SETTINGS.set((min, max, seconds));
        Ok(Interests {
            hooks: Hooks::TRANSFORM,
            publish_filters: Vec::new(),
        })
    }
}

impl sized_transformer::Guest for Guest {
    fn transform(_session: Session, _message: Message) -> SizedTransformVerdict {
        let (min, max, seconds) = SETTINGS.get();
        SizedTransformVerdict {
            answer: StampingTransformVerdict {
                verdict: TransformVerdict::Pass,
                cache_seconds: Some(seconds),
                stamps: Vec::new(),
            },
            payload_sizes: Some(PayloadSizes { min, max }),
        }
    }
}

export!(Guest);
