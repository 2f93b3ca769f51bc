//! A guest that reports what the sandbox lets it see. `transform` reads the topic as an order:
//! `read/<path>` reads a file, `write/<path>` writes one, `env` lists the environment, `args` the
//! arguments, `connect/<addr>` opens a TCP connection. The outcome comes back as the patched payload,
//! `ok:<data>` or `err:<error>`.

wit_bindgen::generate!({ world: "transformer-plugin", path: "../../../../wit" });

use exports::wasp::plugin::{plugin, transformer};
use wasp::plugin::types::{Hooks, Interests, Message, MessagePatch, Session, TransformVerdict};

struct Guest;

impl plugin::Guest for Guest {
    fn init(_config: String) -> Result<Interests, String> {
        eprintln!("fs-probe: init on stderr");
        println!("fs-probe: init on stdout");
        Ok(Interests {
            hooks: Hooks::TRANSFORM,
            publish_filters: Vec::new(),
        })
    }
}

fn probe(order: &str) -> Result<String, String> {
    if let Some(path) = order.strip_prefix("read/") {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    } else if let Some(path) = order.strip_prefix("write/") {
        std::fs::write(path, b"written")
            .map(|()| "written".to_owned())
            .map_err(|e| e.to_string())
    } else if order == "env" {
        Ok(std::env::vars().map(|(k, v)| format!("{k}={v};")).collect())
    } else if order == "args" {
        Ok(std::env::args().collect::<Vec<_>>().join(" "))
    } else if let Some(addr) = order.strip_prefix("connect/") {
        std::net::TcpStream::connect(addr)
            .map(|_| "connected".to_owned())
            .map_err(|e| e.to_string())
    } else {
        Err(format!("unknown order {order}"))
    }
}

impl transformer::Guest for Guest {
    fn transform(_session: Session, message: Message) -> TransformVerdict {
        let outcome = match probe(&message.topic) {
            Ok(data) => format!("ok:{data}"),
            Err(error) => format!("err:{error}"),
        };
        TransformVerdict::Modify(MessagePatch {
            topic: None,
            payload: Some(outcome.into_bytes()),
            qos: None,
            retain: None,
            user_properties: None,
        })
    }
}

export!(Guest);
