//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`AclFile::check`].
//!
//! The ACL file is read with `std::fs` from the directory the broker grants to the plugin (for example
//! host `acl/` at guest `/etc/wasp`, with `file = "/etc/wasp/acl"`). Each instance of the component
//! keeps its own parsed file and checks the file's modification time at most every
//! [`RELOAD_CHECK_SECS`], by the host's clock; verdicts are cached by the broker for [`CACHE_SECS`].
//! A change of the file therefore applies within about ten seconds.

use std::cell::RefCell;
use std::time::SystemTime;

use wasp_plugin_sdk::{
    AuthzVerdict, Hooks, Interests, Plugin, Qos, Session, SubscribeVerdict, clock, log, reason,
};

use crate::{Access, AclFile, Config};

/// Seconds between two checks of the file's modification time.
pub const RELOAD_CHECK_SECS: u64 = 5;
/// Seconds the broker may reuse a verdict (allow or deny) for the same session and topic or filter.
pub const CACHE_SECS: u32 = 5;

/// The reason string of every refusal.
const REFUSED: &str = "not authorized";

/// The file in use and what is known about it.
struct Loaded {
    acl: AclFile,
    mtime: SystemTime,
    last_check_secs: u64,
}

/// Authorizes publishes and subscriptions with a Mosquitto `acl_file`.
pub struct AclFilePlugin {
    file: String,
    loaded: RefCell<Loaded>,
}

fn modified(path: &str) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

impl AclFilePlugin {
    /// The current file: parsed again first if the check is due and its modification time changed. A
    /// file that cannot be read or parsed is logged and the previous one stays in use; a file that does
    /// not parse is not parsed again until it changes once more.
    fn with_acl<R>(&self, f: impl FnOnce(&AclFile) -> R) -> R {
        let mut loaded = self.loaded.borrow_mut();
        let now = clock::now_seconds();
        if now >= loaded.last_check_secs.saturating_add(RELOAD_CHECK_SECS) {
            loaded.last_check_secs = now;
            self.reload(&mut loaded);
        }
        f(&loaded.acl)
    }

    fn reload(&self, loaded: &mut Loaded) {
        let path = self.file.as_str();
        let mtime = match modified(path) {
            Ok(mtime) => mtime,
            Err(e) => {
                log::warn(&format!("cannot stat the ACL file: {e}"), &[("file", path)]);
                return;
            }
        };
        if mtime == loaded.mtime {
            return;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                // The modification time is not recorded: the read is tried again at the next check.
                log::warn(&format!("cannot read the ACL file: {e}"), &[("file", path)]);
                return;
            }
        };
        loaded.mtime = mtime;
        match AclFile::parse(&text) {
            Ok(acl) => {
                loaded.acl = acl;
                log::info("ACL file reloaded", &[("file", path)]);
            }
            Err(e) => log::warn(
                &format!("ACL file not reloaded, keeping the previous one: {e}"),
                &[("file", path)],
            ),
        }
    }

    fn allowed(&self, session: &Session, topic_or_filter: &str, access: Access) -> bool {
        let client = &session.client;
        self.with_acl(|acl| {
            acl.check(
                &client.client_id,
                client.username.as_deref(),
                topic_or_filter,
                access,
            )
        })
    }
}

impl Plugin for AclFilePlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let Config { file } = config.parse()?;
        // Modification time first: a change between the two calls is seen at the next check.
        let mtime = modified(&file).map_err(|e| {
            format!(
                "cannot read the ACL file {file}: {e} (is its directory granted to the plugin?)"
            )
        })?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read the ACL file {file}: {e}"))?;
        let acl = AclFile::parse(&text).map_err(|e| format!("ACL file {file}: {e}"))?;
        log::info("ACL file loaded", &[("file", &file)]);
        Ok(Self {
            file,
            loaded: RefCell::new(Loaded {
                acl,
                mtime,
                last_check_secs: clock::now_seconds(),
            }),
        })
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::AUTHORIZE_PUBLISH | Hooks::AUTHORIZE_SUBSCRIBE)
    }

    fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        _qos: Qos,
        _retain: bool,
    ) -> AuthzVerdict {
        let verdict = if self.allowed(session, topic, Access::Write) {
            AuthzVerdict::allow()
        } else {
            AuthzVerdict::deny(reason::NOT_AUTHORIZED, REFUSED)
        };
        verdict.cache_for(CACHE_SECS)
    }

    fn authorize_subscribe(&self, session: &Session, filter: &str, qos: Qos) -> SubscribeVerdict {
        let verdict = if self.allowed(session, filter, Access::Subscribe) {
            SubscribeVerdict::allow(qos)
        } else {
            SubscribeVerdict::deny(reason::NOT_AUTHORIZED, REFUSED)
        };
        verdict.cache_for(CACHE_SECS)
    }
}
