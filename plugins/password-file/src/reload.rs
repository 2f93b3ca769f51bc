//! Re-reading the password file when it changes, without doing I/O itself.

use std::fmt::Display;

use crate::file::PasswordFile;

/// What one [`Reloader::poll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The reload interval has not passed since the last check; nothing was looked at.
    NotDue,
    /// The modification time is the one already loaded.
    Unchanged,
    /// The file changed and the new table is in use.
    Reloaded { users: usize },
    /// The file could not be read or parsed; the previous table stays in use. The message is for the log.
    /// A file that failed to parse is not parsed again until its modification time changes once more.
    Failed(String),
}

/// Holds the current [`PasswordFile`] and replaces it when the file's modification time changes.
///
/// `M` is whatever the host reports as the modification time (a `SystemTime`, nanoseconds, a
/// generation counter): only equality is used.
#[derive(Debug)]
pub struct Reloader<M> {
    table: PasswordFile,
    mtime: M,
    interval_secs: u64,
    last_check_secs: u64,
}

impl<M: PartialEq> Reloader<M> {
    /// Parses the initial content; an initial file that does not parse is an error (there is no old table).
    pub fn new(
        interval_secs: u64,
        now_secs: u64,
        mtime: M,
        content: &str,
    ) -> Result<Self, crate::ParseError> {
        Ok(Reloader {
            table: PasswordFile::parse(content)?,
            mtime,
            interval_secs,
            last_check_secs: now_secs,
        })
    }

    /// The table in use.
    pub fn table(&self) -> &PasswordFile {
        &self.table
    }

    /// Checks the file if `interval_secs` have passed since the last check (every call when the
    /// interval is 0): `stat` gives its modification time and, only when that changed, `read` its content.
    pub fn poll<E: Display>(
        &mut self,
        now_secs: u64,
        stat: impl FnOnce() -> Result<M, E>,
        read: impl FnOnce() -> Result<String, E>,
    ) -> ReloadOutcome {
        if now_secs < self.last_check_secs.saturating_add(self.interval_secs) {
            return ReloadOutcome::NotDue;
        }
        self.last_check_secs = now_secs;
        let mtime = match stat() {
            Ok(m) => m,
            Err(e) => return ReloadOutcome::Failed(format!("cannot stat the password file: {e}")),
        };
        if mtime == self.mtime {
            return ReloadOutcome::Unchanged;
        }
        let content = match read() {
            Ok(c) => c,
            // The modification time is not recorded, so the read is tried again at the next check.
            Err(e) => return ReloadOutcome::Failed(format!("cannot read the password file: {e}")),
        };
        self.mtime = mtime;
        match PasswordFile::parse(&content) {
            Ok(table) => {
                let users = table.len();
                self.table = table;
                ReloadOutcome::Reloaded { users }
            }
            Err(e) => ReloadOutcome::Failed(format!(
                "password file not reloaded, keeping the previous one: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, Verify, hash_entry_with_salt};

    fn line(user: &str, pw: &str) -> String {
        hash_entry_with_salt(user, pw.as_bytes(), Format::Sha512, b"0123456789ab").unwrap()
    }

    fn no_read() -> Result<String, String> {
        panic!("content read although the modification time did not change")
    }

    #[test]
    fn reloads_only_when_due_and_changed() {
        let mut r = Reloader::new(5, 100, 1u64, &line("alice", "one")).unwrap();
        assert_eq!(r.table().verify("alice", b"one"), Verify::Ok);

        // Not due: stat is not even called.
        let out = r.poll(
            104,
            || -> Result<u64, String> { panic!("stat called") },
            no_read,
        );
        assert_eq!(out, ReloadOutcome::NotDue);

        // Due, same mtime: content not read.
        assert_eq!(
            r.poll(105, || Ok::<_, String>(1), no_read),
            ReloadOutcome::Unchanged
        );

        // The next check is 5 s after the last one.
        assert_eq!(
            r.poll(109, || Ok::<_, String>(2), no_read),
            ReloadOutcome::NotDue
        );

        let new = format!("{}\n{}\n", line("alice", "two"), line("bob", "b"));
        let out = r.poll(110, || Ok::<_, String>(2), || Ok(new.clone()));
        assert_eq!(out, ReloadOutcome::Reloaded { users: 2 });
        assert_eq!(r.table().verify("alice", b"one"), Verify::BadPassword);
        assert_eq!(r.table().verify("alice", b"two"), Verify::Ok);
        assert_eq!(r.table().verify("bob", b"b"), Verify::Ok);
    }

    #[test]
    fn a_broken_file_keeps_the_old_table_until_it_changes_again() {
        let mut r = Reloader::new(0, 0, 1u64, &line("alice", "one")).unwrap();
        let out = r.poll(1, || Ok::<_, String>(2), || Ok("alice:oops\n".to_owned()));
        let ReloadOutcome::Failed(msg) = out else {
            panic!("{out:?}")
        };
        assert!(msg.contains("line 1"), "{msg}");
        assert_eq!(r.table().verify("alice", b"one"), Verify::Ok);

        // Same broken mtime: not parsed (nor logged) again.
        assert_eq!(
            r.poll(2, || Ok::<_, String>(2), no_read),
            ReloadOutcome::Unchanged
        );

        // Fixed file.
        let out = r.poll(3, || Ok::<_, String>(3), || Ok(line("alice", "three")));
        assert_eq!(out, ReloadOutcome::Reloaded { users: 1 });
        assert_eq!(r.table().verify("alice", b"three"), Verify::Ok);
    }

    #[test]
    fn io_errors_keep_the_table_and_retry() {
        let mut r = Reloader::new(0, 0, 1u64, &line("alice", "one")).unwrap();
        let out = r.poll(1, || Err::<u64, _>("gone".to_owned()), no_read);
        assert_eq!(
            out,
            ReloadOutcome::Failed("cannot stat the password file: gone".into())
        );
        let out = r.poll(2, || Ok(2), || Err("permission denied".to_owned()));
        assert!(matches!(out, ReloadOutcome::Failed(m) if m.contains("permission denied")));
        // The read is retried at the next check because the new mtime was not recorded.
        let out = r.poll(3, || Ok::<_, String>(2), || Ok(line("alice", "new")));
        assert_eq!(out, ReloadOutcome::Reloaded { users: 1 });
        assert_eq!(r.table().verify("alice", b"one"), Verify::BadPassword);
    }

    #[test]
    fn initial_parse_error_is_returned() {
        let e = Reloader::new(5, 0, (), "x").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
