//! [`RedisStore`]: the four keyspaces of the broker's storage interface in Redis.
//!
//! Each keyspace is two Redis keys: a hash from a record's *member* to its value, and a sorted set of
//! the members (all with score 0), which Redis orders byte-wise and pages with `ZRANGEBYLEX`. A member
//! is the record's name, a NUL byte, then its `seq` as 16 hex digits, so that byte order is the
//! broker's key order (name, then seq) and a name's records are one range. NUL cannot occur in a name:
//! names are MQTT client identifiers and topics, which the spec forbids to contain U+0000.
//!
//! Keys are `{prefix}:<keyspace>` and `{prefix}:<keyspace>:order`; the braces make them one Redis
//! Cluster hash slot, so the scripts below, which touch several keys, stay valid on a cluster.
//!
//! A batch is one Lua script call (`EVALSHA`): Redis runs it without interleaving other clients, and
//! writes its effects to the append-only file as one `MULTI`/`EXEC`, so a crash leaves all of the batch or
//! none of it. With `appendfsync always` Redis syncs that file before it replies, so `write` returning
//! means durable. Applying a batch twice (the broker's retry) is harmless.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;

use wasp_plugin_sdk::storage::{KEYSPACES, Key, Keyspace, Op, key, keyspace_name};

use redis_protocol::resp2::types::OwnedFrame;

use crate::client::{ClientError, Connection, array, bytes};

/// Applies a batch. KEYS: for keyspace k (0..3), `KEYS[2k+1]` its hash and `KEYS[2k+2]` its order.
/// ARGV: the ops, flattened: `p k member value` (put), `d k member` (delete), `a k name` (delete-all).
const WRITE_SCRIPT: &str = r"
local i = 1
while i <= #ARGV do
  local op, k = ARGV[i], tonumber(ARGV[i + 1])
  local values, order = KEYS[2 * k + 1], KEYS[2 * k + 2]
  if op == 'p' then
    redis.call('HSET', values, ARGV[i + 2], ARGV[i + 3])
    redis.call('ZADD', order, 0, ARGV[i + 2])
    i = i + 4
  elseif op == 'd' then
    redis.call('HDEL', values, ARGV[i + 2])
    redis.call('ZREM', order, ARGV[i + 2])
    i = i + 3
  elseif op == 'a' then
    local min, max = '[' .. ARGV[i + 2] .. '\0', '(' .. ARGV[i + 2] .. '\1'
    local members = redis.call('ZRANGEBYLEX', order, min, max)
    for j = 1, #members, 500 do
      redis.call('HDEL', values, unpack(members, j, math.min(j + 499, #members)))
    end
    redis.call('ZREMRANGEBYLEX', order, min, max)
    i = i + 3
  else
    return redis.error_reply('wasp storage: unknown op ' .. tostring(op))
  end
end
return i - 1
";

/// Up to `ARGV[2]` records after `ARGV[1]` (a `ZRANGEBYLEX` bound) of the keyspace whose hash is
/// `KEYS[1]` and order `KEYS[2]`, as a flat array `member, value, member, value, ...`.
const LOAD_SCRIPT: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(members) do
  local value = redis.call('HGET', KEYS[1], m)
  if not value then
    return redis.error_reply('wasp storage: ' .. KEYS[2] .. ' lists a record that ' .. KEYS[1] .. ' lacks')
  end
  out[#out + 1] = m
  out[#out + 1] = value
end
return out
";

/// Where the store is and how to log in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's address.
    pub addr: SocketAddr,
    /// The key prefix (`{prefix}:retained`, ...).
    pub prefix: String,
    /// `AUTH` user name (Redis 6 ACLs); `None` with a password: the default user.
    pub username: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// The database number (`SELECT`).
    pub database: u32,
}

/// A failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

fn failed(doing: &str) -> impl Fn(ClientError) -> StoreError + '_ {
    move |e| StoreError(format!("{doing}: {e}"))
}

/// The two Lua scripts.
#[derive(Clone, Copy)]
enum Script {
    Write,
    Load,
}

/// An open connection with the scripts loaded.
struct Session {
    conn: Connection,
    write_sha: Vec<u8>,
    load_sha: Vec<u8>,
}

impl Session {
    /// Loads both scripts into the server (`SCRIPT LOAD`) and keeps their digests.
    fn load_scripts(&mut self) -> Result<(), ClientError> {
        self.write_sha = bytes(self.conn.command(&["SCRIPT", "LOAD", WRITE_SCRIPT])?)?;
        self.load_sha = bytes(self.conn.command(&["SCRIPT", "LOAD", LOAD_SCRIPT])?)?;
        Ok(())
    }

    /// `EVALSHA` of `script` with `keys` and `args`; when the server has lost the scripts (a restart
    /// without them, `SCRIPT FLUSH`), loads them again and retries once.
    fn eval(
        &mut self,
        script: Script,
        keys: &[String],
        args: &[Cow<'_, [u8]>],
    ) -> Result<OwnedFrame, ClientError> {
        match self.eval_once(script, keys, args) {
            Err(ClientError::Server(message)) if message.starts_with("NOSCRIPT") => {
                self.load_scripts()?;
                self.eval_once(script, keys, args)
            }
            other => other,
        }
    }

    fn eval_once(
        &mut self,
        script: Script,
        keys: &[String],
        args: &[Cow<'_, [u8]>],
    ) -> Result<OwnedFrame, ClientError> {
        let sha = match script {
            Script::Write => &self.write_sha,
            Script::Load => &self.load_sha,
        };
        let count = keys.len().to_string();
        let mut command: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        command.push(b"EVALSHA");
        command.push(sha);
        command.push(count.as_bytes());
        command.extend(keys.iter().map(|k| k.as_bytes()));
        command.extend(args.iter().map(|a| &a[..]));
        self.conn.command(&command)
    }
}

/// The broker's records in Redis. The connection is opened lazily and again after any failure, so a
/// Redis restart costs the calls made while it is down (the broker retries writes), not the plugin.
pub struct RedisStore {
    settings: Settings,
    /// The two keys of each keyspace, in [`KEYSPACES`] order: hash, then order.
    keys: Vec<String>,
    /// `None` until connected and after a connection failure. The broker calls its storage backend one
    /// call at a time on one instance, so a `RefCell` is all the sharing there is.
    session: RefCell<Option<Session>>,
}

impl RedisStore {
    /// Connects, logs in and loads the scripts; fails with the reason when the server is unreachable.
    pub fn open(settings: Settings) -> Result<Self, StoreError> {
        // In the write script's KEYS order: keyspace k's keys at 2k and 2k + 1.
        let keys = KEYSPACES
            .iter()
            .flat_map(|&keyspace| {
                let name = keyspace_name(keyspace);
                [
                    format!("{{{}}}:{name}", settings.prefix),
                    format!("{{{}}}:{name}:order", settings.prefix),
                ]
            })
            .collect();
        let store = Self {
            settings,
            keys,
            session: RefCell::new(None),
        };
        store.with_session(|_| Ok(()))?;
        Ok(store)
    }

    /// The server's `appendonly` and `appendfsync` settings (`CONFIG GET`), to check durability.
    pub fn fsync_settings(&self) -> Result<(String, String), StoreError> {
        self.with_session(|s| {
            let mut get = |name: &str| -> Result<String, ClientError> {
                let reply = array(s.conn.command(&["CONFIG", "GET", name])?)?;
                let value = reply
                    .into_iter()
                    .nth(1)
                    .ok_or_else(|| ClientError::Protocol(format!("CONFIG GET {name}: no value")))?;
                Ok(String::from_utf8_lossy(&bytes(value)?).into_owned())
            };
            Ok((get("appendonly")?, get("appendfsync")?))
        })
        .map_err(|e| StoreError(format!("cannot read the server's durability settings: {e}")))
    }

    /// Applies `batch` atomically; durable when this returns if the server syncs every write.
    pub fn write(&self, batch: &[Op]) -> Result<(), StoreError> {
        let mut args: Vec<Cow<'_, [u8]>> = Vec::with_capacity(batch.len() * 4);
        for op in batch {
            match op {
                Op::Put((key, value)) => {
                    args.push(Cow::Borrowed(b"p"));
                    args.push(digit(key.keyspace));
                    args.push(Cow::Owned(member(key)?));
                    args.push(Cow::Borrowed(value));
                }
                Op::Delete(key) => {
                    args.push(Cow::Borrowed(b"d"));
                    args.push(digit(key.keyspace));
                    args.push(Cow::Owned(member(key)?));
                }
                Op::DeleteAll((keyspace, name)) => {
                    checked(name)?;
                    args.push(Cow::Borrowed(b"a"));
                    args.push(digit(*keyspace));
                    args.push(Cow::Borrowed(name.as_bytes()));
                }
            }
        }
        self.with_session(|s| s.eval(Script::Write, &self.keys, &args))
            .map(drop)
            .map_err(|e| StoreError(format!("write of {} ops: {e}", batch.len())))
    }

    /// Up to `limit` records of `keyspace` after `after`, in key order.
    pub fn load(
        &self,
        keyspace: Keyspace,
        after: Option<&Key>,
        limit: u32,
    ) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        let min = match after {
            Some(key) => [b"(".as_slice(), &member(key)?].concat(),
            None => b"-".to_vec(),
        };
        let i = keyspace as usize;
        let keys = &self.keys[2 * i..2 * i + 2];
        let reply = self
            .with_session(|s| {
                let limit = limit.to_string().into_bytes();
                s.eval(
                    Script::Load,
                    keys,
                    &[Cow::Borrowed(&min[..]), Cow::Owned(limit)],
                )
            })
            .map_err(|e| StoreError(format!("load of {}: {e}", keyspace_name(keyspace))))?;
        let items = array(reply).map_err(failed("load"))?;
        let mut records = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(m), Some(v)) = (items.next(), items.next()) {
            let m = bytes(m).map_err(failed("load"))?;
            let key = parse_member(keyspace, &m).ok_or_else(|| {
                StoreError(format!(
                    "{} holds a malformed entry {:?}",
                    self.keys[2 * i + 1],
                    String::from_utf8_lossy(&m)
                ))
            })?;
            records.push((key, bytes(v).map_err(failed("load"))?));
        }
        Ok(records)
    }

    /// Runs `f` on the open session, connecting first if needed; a connection failure drops the
    /// session so that the next call connects again.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, ClientError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.session.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let session = slot.as_mut().expect("connected above");
        let result = f(session);
        if let Err(e) = &result
            && e.is_fatal()
        {
            *slot = None;
        }
        result.map_err(|e| StoreError(e.to_string()))
    }

    fn connect(&self) -> Result<Session, StoreError> {
        let s = &self.settings;
        let mut conn = Connection::open(s.addr).map_err(failed("connect"))?;
        if let Some(password) = &s.password {
            let reply = match &s.username {
                Some(user) => conn.command(&["AUTH", user, password]),
                None => conn.command(&["AUTH", password]),
            };
            reply.map_err(failed("AUTH"))?;
        }
        if s.database != 0 {
            conn.command(&["SELECT".to_owned(), s.database.to_string()])
                .map_err(failed("SELECT"))?;
        }
        let mut session = Session {
            conn,
            write_sha: Vec::new(),
            load_sha: Vec::new(),
        };
        session.load_scripts().map_err(failed("SCRIPT LOAD"))?;
        Ok(session)
    }
}

/// The keyspace's number in the write script's ARGV.
fn digit(keyspace: Keyspace) -> Cow<'static, [u8]> {
    const DIGITS: [&[u8]; 4] = [b"0", b"1", b"2", b"3"];
    Cow::Borrowed(DIGITS[keyspace as usize])
}

/// A name the member encoding can hold (no NUL).
fn checked(name: &str) -> Result<(), StoreError> {
    if name.contains('\0') {
        return Err(StoreError(format!(
            "record name {name:?} contains NUL, which MQTT names cannot"
        )));
    }
    Ok(())
}

/// The sorted-set member of `key`: name, NUL, seq in 16 hex digits.
fn member(key: &Key) -> Result<Vec<u8>, StoreError> {
    checked(&key.name)?;
    Ok(format!("{}\0{:016x}", key.name, key.seq).into_bytes())
}

/// The key a member encodes.
fn parse_member(keyspace: Keyspace, member: &[u8]) -> Option<Key> {
    let split = member.len().checked_sub(17)?;
    let (name, rest) = member.split_at(split);
    let hex = rest.strip_prefix(b"\0")?;
    let seq = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    Some(key(keyspace, String::from_utf8(name.to_vec()).ok()?, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_plugin_harness::redis::RedisServer;

    fn settings(server: &RedisServer) -> Settings {
        Settings {
            addr: server.addr(),
            prefix: "wasp".into(),
            username: None,
            password: None,
            database: 0,
        }
    }

    #[test]
    fn members_sort_in_key_order_and_parse_back() {
        let keys = [
            key(Keyspace::Messages, "a", 2),
            key(Keyspace::Messages, "a", 10),
            key(Keyspace::Messages, "a", u64::MAX),
            key(Keyspace::Messages, "a/b", 0),
            key(Keyspace::Messages, "ab", 1),
            key(Keyspace::Messages, "é", 1),
        ];
        let members: Vec<Vec<u8>> = keys.iter().map(|k| member(k).unwrap()).collect();
        assert!(members.windows(2).all(|w| w[0] < w[1]), "{members:?}");
        for (k, m) in keys.iter().zip(&members) {
            assert_eq!(parse_member(Keyspace::Messages, m).as_ref(), Some(k));
        }
        assert!(member(&key(Keyspace::Retained, "a\0b", 0)).is_err());
        assert_eq!(parse_member(Keyspace::Retained, b"short"), None);
    }

    #[test]
    fn writes_deletes_and_pages_in_key_order() {
        let server = RedisServer::start().unwrap();
        let store = RedisStore::open(settings(&server)).unwrap();
        let mut batch: Vec<Op> = (0..30u64)
            .rev()
            .map(|i| Op::Put((key(Keyspace::Messages, "c1", i), vec![i as u8])))
            .collect();
        batch.push(Op::Put((key(Keyspace::Messages, "c0", 5), b"c0".to_vec())));
        batch.push(Op::Put((key(Keyspace::Messages, "c2", 1), b"c2".to_vec())));
        batch.push(Op::Put((key(Keyspace::Sessions, "c1", 0), b"s".to_vec())));
        batch.push(Op::Delete(key(Keyspace::Messages, "c1", 3)));
        store.write(&batch).unwrap();
        // Idempotent: the broker retries a batch whose answer it did not get.
        store.write(&batch).unwrap();
        store
            .write(&[Op::DeleteAll((Keyspace::Messages, "c2".into()))])
            .unwrap();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.load(Keyspace::Messages, after.as_ref(), 7).unwrap();
            seen.extend(page.iter().map(|(k, _)| (k.name.clone(), k.seq)));
            if page.len() < 7 {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
        }
        let mut expected = vec![("c0".to_owned(), 5)];
        expected.extend((0..30).filter(|&i| i != 3).map(|i| ("c1".to_owned(), i)));
        assert_eq!(seen, expected);
        let sessions = store.load(Keyspace::Sessions, None, 10).unwrap();
        assert_eq!(
            sessions,
            vec![(key(Keyspace::Sessions, "c1", 0), b"s".to_vec())]
        );
        assert!(store.load(Keyspace::Retained, None, 10).unwrap().is_empty());
    }

    #[test]
    fn reconnects_after_the_server_restarts_and_finds_its_data() {
        let mut server = RedisServer::start().unwrap();
        let store = RedisStore::open(settings(&server)).unwrap();
        let put = Op::Put((key(Keyspace::Retained, "t", 0), b"v".to_vec()));
        store.write(std::slice::from_ref(&put)).unwrap();
        server.kill();
        // The open connection fails first, then connecting does.
        assert!(store.write(std::slice::from_ref(&put)).is_err());
        let down = store.write(std::slice::from_ref(&put)).unwrap_err();
        assert!(down.to_string().contains("connect"), "{down}");
        server.restart().unwrap();
        // Synced before the reply, so the crash kept it; the scripts are loaded again.
        assert_eq!(
            store.load(Keyspace::Retained, None, 10).unwrap(),
            vec![(key(Keyspace::Retained, "t", 0), b"v".to_vec())]
        );
        store.write(&[put]).unwrap();
    }

    #[test]
    fn prefixes_keep_stores_apart() {
        let server = RedisServer::start().unwrap();
        let a = RedisStore::open(settings(&server)).unwrap();
        let b = RedisStore::open(Settings {
            prefix: "other".into(),
            ..settings(&server)
        })
        .unwrap();
        a.write(&[Op::Put((key(Keyspace::Retained, "t", 0), b"a".to_vec()))])
            .unwrap();
        assert!(b.load(Keyspace::Retained, None, 10).unwrap().is_empty());
        assert_eq!(
            server.command(&["EXISTS", "{wasp}:retained"]).unwrap(),
            ":1"
        );
        assert_eq!(
            a.fsync_settings().unwrap(),
            ("yes".to_owned(), "always".to_owned())
        );
    }
}
