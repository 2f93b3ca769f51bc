//! The well-behaved guest: allows users listed in its config, uses every host import, and exercises each
//! verdict kind. Config (JSON):
//! `{"users": ["alice"], "filters": ["a/#"], "tag": "A", "expires_at": 123, "tick_secs": 30}`, every key
//! optional.

use std::cell::RefCell;

wit_bindgen::generate!({ world: "full-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{authenticator, authorizer, plugin, ticker, transformer};
use wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Decision, Denial, Hooks, Interests, Message,
    MessagePatch, Qos, Session, SubscribeDecision, SubscribeVerdict, TransformVerdict,
    UserProperty,
};
use wasp::plugin::{clock, kv, log, metrics};

#[derive(Default)]
struct Config {
    users: Vec<String>,
    filters: Vec<String>,
    tag: Option<String>,
    expires_at: Option<u64>,
    tick_secs: Option<u64>,
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

/// The value following `"key":` in a flat JSON object, as raw text.
fn raw_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = json[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn strings(json: &str, key: &str) -> Vec<String> {
    let Some(raw) = raw_value(json, key) else {
        return Vec::new();
    };
    let Some(end) = raw.find(']') else {
        return Vec::new();
    };
    raw[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn string(json: &str, key: &str) -> Option<String> {
    raw_value(json, key)?.split('"').nth(1).map(str::to_owned)
}

fn number(json: &str, key: &str) -> Option<u64> {
    let raw = raw_value(json, key)?;
    let digits: String = raw.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn deny(code: u8, reason: &str) -> Denial {
    Denial {
        reason_code: code,
        reason: Some(reason.to_owned()),
    }
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        if !config.trim_start().starts_with('{') {
            return Err("config must be a JSON object".to_owned());
        }
        let parsed = Config {
            users: strings(&config, "users"),
            filters: strings(&config, "filters"),
            tag: string(&config, "tag"),
            expires_at: number(&config, "expires_at"),
            tick_secs: number(&config, "tick_secs"),
        };
        let filters = parsed.filters.clone();
        CONFIG.with(|c| *c.borrow_mut() = parsed);
        log::log(
            log::Level::Info,
            "initialised",
            &[("filters".to_owned(), filters.join(","))],
        );
        Ok(Interests {
            hooks: Hooks::all(),
            publish_filters: filters,
        })
    }
}

impl authenticator::Guest for Guest {
    fn authenticate(request: AuthRequest) -> AuthVerdict {
        metrics::counter_add("authenticate", 1);
        let seen =
            kv::get("seen").map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        kv::set("seen", &(seen + 1).to_le_bytes());
        log::log(
            log::Level::Debug,
            "authenticate",
            &[("client_id".to_owned(), request.client.client_id.clone())],
        );
        if let Some(method) = request.auth_method.as_deref() {
            return match (method, request.auth_data.as_deref()) {
                ("challenge", None) => AuthVerdict::Continue(b"question".to_vec()),
                ("challenge", Some(b"answer")) => {
                    AuthVerdict::Allow(vec![("method".to_owned(), "challenge".to_owned())])
                }
                ("challenge", Some(_)) => AuthVerdict::Deny(deny(0x87, "wrong answer")),
                _ => AuthVerdict::Defer,
            };
        }
        let expired = CONFIG.with(|c| {
            c.borrow()
                .expires_at
                .is_some_and(|t| clock::now_millis() >= t)
        });
        if expired {
            return AuthVerdict::Deny(deny(0x86, "expired"));
        }
        match request.client.username {
            Some(user) if CONFIG.with(|c| c.borrow().users.contains(&user)) => {
                AuthVerdict::Allow(vec![("user".to_owned(), user)])
            }
            Some(user) if user == "nobody-knows" => AuthVerdict::Defer,
            _ => AuthVerdict::Deny(deny(0x86, "unknown user")),
        }
    }
}

impl authorizer::Guest for Guest {
    fn authorize_publish(
        _session: Session,
        topic: String,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        let decision = if topic.starts_with("deny/") {
            Decision::Deny(deny(0x87, "publish denied"))
        } else if topic.starts_with("allow/") {
            Decision::Allow
        } else {
            Decision::Defer
        };
        AuthzVerdict {
            decision,
            cache_seconds: Some(30),
        }
    }

    fn authorize_subscribe(_session: Session, filter: String, qos: Qos) -> SubscribeVerdict {
        let decision = if filter.starts_with("deny/") {
            SubscribeDecision::Deny(deny(0x87, "subscribe denied"))
        } else if filter.starts_with("allow/") {
            SubscribeDecision::Allow(qos)
        } else {
            SubscribeDecision::Defer
        };
        SubscribeVerdict {
            decision,
            cache_seconds: None,
        }
    }
}

impl transformer::Guest for Guest {
    fn transform(_session: Session, message: Message) -> TransformVerdict {
        if message.topic.ends_with("/drop") {
            return TransformVerdict::Drop(0x99);
        }
        if message.topic.ends_with("/pass") {
            return TransformVerdict::Pass;
        }
        let tag = CONFIG
            .with(|c| c.borrow().tag.clone())
            .unwrap_or_else(|| "-".to_owned());
        let mut properties = message.user_properties;
        properties.push(UserProperty {
            key: "tag".to_owned(),
            value: tag,
        });
        let topic = message
            .topic
            .strip_prefix("rename/")
            .map(|rest| format!("renamed/{rest}"));
        TransformVerdict::Modify(MessagePatch {
            topic,
            payload: Some(message.payload.to_ascii_uppercase()),
            qos: None,
            retain: None,
            user_properties: Some(properties),
        })
    }
}

impl ticker::Guest for Guest {
    /// Counts its calls in kv `ticks` and asks to be called again after `tick_secs` (default 60).
    fn tick() -> u32 {
        let ticks =
            kv::get("ticks").map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        kv::set("ticks", &(ticks + 1).to_le_bytes());
        CONFIG.with(|c| c.borrow().tick_secs.unwrap_or(60)) as u32
    }
}

export!(Guest);
