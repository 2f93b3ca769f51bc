//! A guest of world `http-authenticator-plugin` that calls the `http` import.
//!
//! `authenticate` sends a request to the URL in the password: `GET`, or the method in the user name
//! when there is one (`POST` sends the body `hello` with `content-type: text/plain`), with the header
//! `x-probe: 1` and the timeout of config `timeout_ms` (a bare number in the JSON, else none). Status
//! 200 allows, with attributes `status`, `content-type` and `body`; another status denies with 0x87
//! and the status as reason; an `http.error` denies with 0x80 and the error as reason, written as its
//! WIT case: `not-allowed: <message>`, `invalid-request: <message>`, `timeout`, `transport: <message>`,
//! `too-large`.
//!
//! `tick` GETs config `tick_url` (if any), stores the body in kv `tick-body` (or the error in
//! `tick-error`) and asks to be called again in 30 s.

wit_bindgen::generate!({ world: "http-authenticator-plugin", path: "../../../../wit" });

use std::cell::RefCell;

use exports::wasp::plugin::{authenticator, plugin, ticker};
use wasp::plugin::http::{self, Request};
use wasp::plugin::kv;
use wasp::plugin::types::{AuthRequest, AuthVerdict, Denial, Hooks, Interests};

#[derive(Default)]
struct Config {
    timeout_ms: Option<u32>,
    tick_url: Option<String>,
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

/// The raw text after `"key":` in a flat JSON object.
fn raw_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = json[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

/// The error as its WIT case name, with its message.
fn describe(error: &http::Error) -> String {
    match error {
        http::Error::NotAllowed(m) => format!("not-allowed: {m}"),
        http::Error::InvalidRequest(m) => format!("invalid-request: {m}"),
        http::Error::Timeout => "timeout".to_owned(),
        http::Error::Transport(m) => format!("transport: {m}"),
        http::Error::TooLarge => "too-large".to_owned(),
    }
}

fn deny(code: u8, reason: String) -> AuthVerdict {
    AuthVerdict::Deny(Denial {
        reason_code: code,
        reason: Some(reason),
    })
}

struct Guest;

impl plugin::Guest for Guest {
    fn init(config: String) -> Result<Interests, String> {
        let timeout_ms = raw_value(&config, "timeout_ms").and_then(|raw| {
            raw.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        });
        let tick_url = raw_value(&config, "tick_url")
            .and_then(|raw| raw.split('"').nth(1))
            .map(str::to_owned);
        CONFIG.with(|c| {
            *c.borrow_mut() = Config {
                timeout_ms,
                tick_url,
            }
        });
        Ok(Interests {
            hooks: Hooks::AUTHENTICATE,
            publish_filters: Vec::new(),
        })
    }
}

impl authenticator::Guest for Guest {
    fn authenticate(request: AuthRequest) -> AuthVerdict {
        let Some(url) = request.password.and_then(|p| String::from_utf8(p).ok()) else {
            return deny(0x86, "no URL in the password".to_owned());
        };
        let method = request.client.username.unwrap_or_else(|| "GET".to_owned());
        let (headers, body) = if method == "POST" {
            (
                vec![
                    ("x-probe".to_owned(), "1".to_owned()),
                    ("content-type".to_owned(), "text/plain".to_owned()),
                ],
                b"hello".to_vec(),
            )
        } else {
            (vec![("x-probe".to_owned(), "1".to_owned())], Vec::new())
        };
        let sent = http::send(&Request {
            method,
            url,
            headers,
            body,
            timeout_ms: CONFIG.with(|c| c.borrow().timeout_ms),
        });
        match sent {
            Ok(response) if response.status == 200 => {
                let content_type = response
                    .headers
                    .iter()
                    .find(|(name, _)| name == "content-type")
                    .map_or_else(String::new, |(_, value)| value.clone());
                AuthVerdict::Allow(vec![
                    ("status".to_owned(), response.status.to_string()),
                    ("content-type".to_owned(), content_type),
                    (
                        "body".to_owned(),
                        String::from_utf8_lossy(&response.body).into_owned(),
                    ),
                ])
            }
            Ok(response) => deny(0x87, format!("status {}", response.status)),
            Err(error) => deny(0x80, describe(&error)),
        }
    }
}

impl ticker::Guest for Guest {
    fn tick() -> u32 {
        if let Some(url) = CONFIG.with(|c| c.borrow().tick_url.clone()) {
            let sent = http::send(&Request {
                method: "GET".to_owned(),
                url,
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: None,
            });
            match sent {
                Ok(response) => kv::set("tick-body", &response.body),
                Err(error) => kv::set("tick-error", describe(&error).as_bytes()),
            }
        }
        30
    }
}

export!(Guest);
