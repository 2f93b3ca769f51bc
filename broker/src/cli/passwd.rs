//! `wasp passwd`: adds, changes or deletes a user in a Mosquitto-compatible password file, as
//! `mosquitto_passwd` does (same flags), with the password-file plugin's own hashing.
//!
//! The file is edited line by line: every other line (other users, comments, blank lines) is kept as it
//! was, the user's line is replaced in place (or appended), and the result replaces the file atomically
//! (a temporary file in the same folder, renamed over it), so a broker reloading the file never reads half
//! of it. A new file is created with mode 0600; an existing file keeps its mode.

use std::fs::{OpenOptions, Permissions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use wasp_plugin_password_file::{Format, hash_entry};

/// Arguments of `wasp passwd`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Add, change or delete a user in a Mosquitto-compatible password file",
    long_about = "Add, change or delete a user in a Mosquitto-compatible password file \
                  (the same flags as mosquitto_passwd).\n\n\
                  Without -b the password is asked twice on the terminal; when standard input is not a \
                  terminal, its first line is the password (a second line, if any, must repeat it)."
)]
pub struct Args {
    /// Create the file, or overwrite it if it exists (every other user is dropped).
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,

    /// Batch mode: the password is the third argument instead of being asked for.
    #[arg(short = 'b', requires = "password")]
    pub batch: bool,

    /// Delete the user from the file.
    #[arg(short = 'D', conflicts_with_all = ["batch", "hash", "iterations"])]
    pub delete: bool,

    /// Hash format of the new entry (default sha512-pbkdf2, as mosquitto_passwd 2).
    #[arg(short = 'H', value_enum, value_name = "FORMAT")]
    pub hash: Option<HashKind>,

    /// PBKDF2 iterations for sha512-pbkdf2 (default 101, as mosquitto_passwd 2).
    #[arg(short = 'I', value_name = "ITERATIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,

    /// The password file.
    pub file: PathBuf,

    /// The user name.
    pub user: String,

    /// The password (only with -b).
    #[arg(requires = "batch")]
    pub password: Option<String>,
}

/// `-H`: the hash formats `mosquitto_passwd` knows, plus argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashKind {
    /// `$6$`: salted SHA-512 (Mosquitto 1.x).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 (Mosquitto 2 default).
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    /// argon2id, PHC string (Mosquitto 2.1 reads it; 2.0 does not).
    Argon2id,
}

/// Why `wasp passwd` failed; the message is printed after `wasp passwd: `.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Wrong combination of arguments that clap cannot express (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl PasswdError {
    /// 2 for usage errors, 1 otherwise (as `wasp` itself).
    pub fn exit_code(&self) -> u8 {
        match self {
            PasswdError::Usage(_) => 2,
            PasswdError::Failed(_) => 1,
        }
    }
}

/// The format `-H` and `-I` ask for.
pub fn format(hash: Option<HashKind>, iterations: Option<u32>) -> Result<Format, PasswdError> {
    match (hash.unwrap_or(HashKind::Sha512Pbkdf2), iterations) {
        // The default: 101 iterations, as mosquitto_passwd 2.
        (HashKind::Sha512Pbkdf2, None) => Ok(Format::default()),
        (HashKind::Sha512Pbkdf2, Some(iterations)) => Ok(Format::Sha512Pbkdf2 { iterations }),
        (kind, Some(_)) => Err(PasswdError::Usage(format!(
            "-I applies to -H sha512-pbkdf2 only, not to -H {}",
            kind.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned())
        ))),
        (HashKind::Sha512, None) => Ok(Format::Sha512),
        (HashKind::Argon2id, None) => Ok(Format::Argon2id),
    }
}

/// What to do to the user's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace the user's line with this `user:hash` entry, or append it.
    Set(String),
    /// Remove the user's line.
    Delete,
}

/// The user name of a `user:hash` line, as the password file reads it (trimmed); `None` for blank lines,
/// comments and lines without `:`.
fn line_user(line: &str) -> Option<&str> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    trimmed.split_once(':').map(|(user, _)| user.trim())
}

/// Applies `edit` for `user` to the text of a password file (`None`: a new file). Other lines are kept
/// verbatim; the user's first line is replaced in place and any later duplicate of it is removed. Deleting
/// a user who has no line is an error.
pub fn apply(existing: Option<&str>, user: &str, edit: &Edit) -> Result<String, PasswdError> {
    let mut out = String::new();
    let mut found = false;
    for line in existing.unwrap_or_default().lines() {
        if line_user(line) == Some(user) {
            if !found && let Edit::Set(entry) = edit {
                out.push_str(entry);
                out.push('\n');
            }
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    match edit {
        Edit::Delete if !found => Err(PasswdError::Failed(format!(
            "user {user:?} is not in the password file"
        ))),
        Edit::Set(entry) if !found => {
            out.push_str(entry);
            out.push('\n');
            Ok(out)
        }
        _ => Ok(out),
    }
}

/// Runs `wasp passwd`.
pub fn run(args: Args) -> Result<(), PasswdError> {
    let format = format(args.hash, args.iterations)?;
    let existing = if args.create {
        None
    } else {
        match std::fs::read_to_string(&args.file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PasswdError::Failed(format!(
                    "{} does not exist (use -c to create it)",
                    args.file.display()
                )));
            }
            Err(e) => {
                return Err(PasswdError::Failed(format!(
                    "cannot read {}: {e}",
                    args.file.display()
                )));
            }
        }
    };
    let edit = if args.delete {
        Edit::Delete
    } else {
        let password = match args.password {
            Some(password) => password,
            None => read_password()?,
        };
        if password.is_empty() {
            return Err(PasswdError::Failed("empty password".to_owned()));
        }
        let entry = hash_entry(&args.user, password.as_bytes(), format)
            .map_err(|e| PasswdError::Failed(format!("user {:?}: {e}", args.user)))?;
        Edit::Set(entry)
    };
    let text = apply(existing.as_deref(), &args.user, &edit)?;
    replace_file(&args.file, text.as_bytes())
        .map_err(|e| PasswdError::Failed(format!("cannot write {}: {e}", args.file.display())))
}

/// The password: asked twice on the terminal (without echo), else read from standard input.
fn read_password() -> Result<String, PasswdError> {
    if std::io::stdin().is_terminal() {
        let read = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map_err(|e| PasswdError::Failed(format!("cannot read the password: {e}")))
        };
        let first = read("Password: ")?;
        let second = read("Reenter password: ")?;
        if first != second {
            return Err(PasswdError::Failed("passwords do not match".to_owned()));
        }
        Ok(first)
    } else {
        password_from_lines(std::io::stdin().lock())
    }
}

/// The first line of `input` (without its line break); a second line, if any, must repeat it (so that
/// `printf 'pw\npw\n' | ...`, which `mosquitto_passwd` accepts, works too).
fn password_from_lines(mut input: impl BufRead) -> Result<String, PasswdError> {
    let mut line = |what: &str| {
        let mut text = String::new();
        input
            .read_line(&mut text)
            .map_err(|e| PasswdError::Failed(format!("cannot read the {what} from stdin: {e}")))?;
        let eof = text.is_empty();
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned();
        Ok::<_, PasswdError>((text, eof))
    };
    let (first, eof) = line("password")?;
    if eof {
        return Err(PasswdError::Failed(
            "no password on stdin (or use -b FILE USER PASSWORD)".to_owned(),
        ));
    }
    let (second, eof) = line("repeated password")?;
    if !eof && second != first {
        return Err(PasswdError::Failed("passwords do not match".to_owned()));
    }
    Ok(first)
}

/// Writes `contents` to a temporary file next to `path` and renames it over `path`. The new file gets
/// the old one's permissions, or 0600.
fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".wasp-passwd-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o600,
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` at creation is masked by the umask; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_plugin_password_file::{PasswordFile, Verify};

    #[test]
    fn set_appends_replaces_in_place_and_keeps_other_lines() {
        let text = "# users\nalice:$6$old\n\nbob:$6$bob\n";
        let set = |t: Option<&str>, user: &str, entry: &str| {
            apply(t, user, &Edit::Set(entry.to_owned())).unwrap()
        };
        assert_eq!(
            set(Some(text), "alice", "alice:NEW"),
            "# users\nalice:NEW\n\nbob:$6$bob\n"
        );
        assert_eq!(
            set(Some(text), "carol", "carol:NEW"),
            "# users\nalice:$6$old\n\nbob:$6$bob\ncarol:NEW\n"
        );
        assert_eq!(set(None, "carol", "carol:NEW"), "carol:NEW\n");
        // No final line break, white space around the name, and a duplicate (which the plugin refuses).
        assert_eq!(
            set(Some("  bob : x\nalice:y\nbob:z"), "bob", "bob:NEW"),
            "bob:NEW\nalice:y\n"
        );
        // `#alice` is a comment, not alice.
        assert_eq!(
            set(Some("#alice:x\n"), "alice", "alice:NEW"),
            "#alice:x\nalice:NEW\n"
        );
    }

    #[test]
    fn delete_removes_every_line_of_the_user_or_fails() {
        assert_eq!(
            apply(Some("a:1\nb:2\na:3\n"), "a", &Edit::Delete).unwrap(),
            "b:2\n"
        );
        let err = apply(Some("a:1\n"), "b", &Edit::Delete).unwrap_err();
        assert!(
            matches!(err, PasswdError::Failed(ref m) if m.contains("\"b\"")),
            "{err}"
        );
        assert!(apply(None, "b", &Edit::Delete).is_err());
    }

    #[test]
    fn formats_follow_mosquitto_passwd_defaults() {
        assert_eq!(
            format(None, None).unwrap(),
            Format::Sha512Pbkdf2 { iterations: 101 }
        );
        assert_eq!(
            format(Some(HashKind::Sha512Pbkdf2), Some(1000)).unwrap(),
            Format::Sha512Pbkdf2 { iterations: 1000 }
        );
        assert_eq!(
            format(None, Some(7)).unwrap(),
            Format::Sha512Pbkdf2 { iterations: 7 }
        );
        assert_eq!(
            format(Some(HashKind::Sha512), None).unwrap(),
            Format::Sha512
        );
        assert_eq!(
            format(Some(HashKind::Argon2id), None).unwrap(),
            Format::Argon2id
        );
        let err = format(Some(HashKind::Sha512), Some(5)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("-H sha512"), "{err}");
    }

    #[test]
    fn stdin_password_is_the_first_line_and_a_second_must_match() {
        let read = |input: &str| password_from_lines(input.as_bytes());
        assert_eq!(read("secret\n").unwrap(), "secret");
        assert_eq!(read("secret").unwrap(), "secret");
        assert_eq!(read("secret\r\nsecret\r\n").unwrap(), "secret");
        assert_eq!(read("with space \nwith space \n").unwrap(), "with space ");
        assert!(read("").is_err());
        let err = read("a\nb\n").unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        // An empty line is read as an empty password; `run` refuses it.
        assert_eq!(read("\n").unwrap(), "");
    }

    #[test]
    fn replace_file_creates_0600_and_keeps_an_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        replace_file(&path, b"a:1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a:1\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        replace_file(&path, b"b:2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b:2\n");
        assert_eq!(mode(&path), 0o640);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn run_writes_entries_the_plugin_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let args = |create, user: &str, password: &str, hash| Args {
            create,
            batch: true,
            delete: false,
            hash,
            iterations: None,
            file: file.clone(),
            user: user.to_owned(),
            password: Some(password.to_owned()),
        };
        run(args(true, "alice", "alice-pw", None)).unwrap();
        run(args(false, "bob", "bob-pw", Some(HashKind::Sha512))).unwrap();
        run(args(false, "carol", "carol-pw", Some(HashKind::Argon2id))).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("alice:$7$101$"), "{text}");
        assert!(lines[1].starts_with("bob:$6$"), "{text}");
        assert!(lines[2].starts_with("carol:$argon2id$"), "{text}");
        let parsed = PasswordFile::parse(&text).unwrap();
        assert_eq!(parsed.verify("alice", b"alice-pw"), Verify::Ok);
        assert_eq!(parsed.verify("bob", b"bob-pw"), Verify::Ok);
        assert_eq!(parsed.verify("carol", b"carol-pw"), Verify::Ok);
        assert_eq!(parsed.verify("alice", b"bob-pw"), Verify::BadPassword);

        // Empty passwords and names the file cannot hold are refused; the file is unchanged.
        assert!(run(args(false, "dave", "", None)).is_err());
        let err = run(args(false, "da:ve", "pw", None)).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

        // Without -c a missing file is an error.
        std::fs::remove_file(&file).unwrap();
        let err = run(args(false, "alice", "pw", None)).unwrap_err();
        assert!(err.to_string().contains("use -c"), "{err}");
    }
}
