//! The `wasp` binary's subcommands run as a user would (`wasp passwd`, `wasp plugin inspect`), the
//! demo configuration in `examples/demo/`, and the identity provider configurations in
//! `examples/oauth/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wasp_plugin_host::test_programs::{ALLOW_DENY, INIT_REJECT};
use wasp_plugin_password_file::{PasswordFile, Verify};

/// Runs `wasp ARGS` with `stdin` piped in, and a cache folder of its own.
fn wasp(args: &[&str], stdin: &str, cache: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wasp");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for wasp")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn read_file(path: &Path) -> PasswordFile {
    PasswordFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn passwd_adds_changes_and_deletes_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| wasp(args, stdin, dir.path());

    let out = run(&["passwd", "-c", "-b", f, "alice", "alice-pw"], "");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    // Not a terminal: the password is read from stdin, once or twice.
    let out = run(&["passwd", f, "bob"], "bob-pw\nbob-pw\n");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let out = run(&["passwd", "-H", "sha512", f, "carol"], "carol-pw\n");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let out = run(&["passwd", "-b", "-I", "1000", f, "dave", "dave-pw"], "");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));

    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 4, "{written}");
    assert!(lines[0].starts_with("alice:$7$101$"), "{written}");
    assert!(lines[1].starts_with("bob:$7$101$"), "{written}");
    assert!(lines[2].starts_with("carol:$6$"), "{written}");
    assert!(lines[3].starts_with("dave:$7$1000$"), "{written}");
    let users = read_file(&file);
    for (user, password) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
        ("dave", "dave-pw"),
    ] {
        assert_eq!(
            users.verify(user, password.as_bytes()),
            Verify::Ok,
            "{user}"
        );
    }

    // Changing bob's password keeps everyone else's line as it was, in place.
    let out = run(&["passwd", "-b", f, "bob", "new-pw"], "");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let changed = std::fs::read_to_string(&file).unwrap();
    let changed_lines: Vec<&str> = changed.lines().collect();
    assert_eq!(
        [changed_lines[0], changed_lines[2], changed_lines[3]],
        [lines[0], lines[2], lines[3]]
    );
    assert_ne!(changed_lines[1], lines[1]);
    let users = read_file(&file);
    assert_eq!(users.verify("bob", b"new-pw"), Verify::Ok);
    assert_eq!(users.verify("bob", b"bob-pw"), Verify::BadPassword);

    // -D removes the user; deleting an absent user fails and leaves the file alone.
    let out = run(&["passwd", "-D", f, "carol"], "");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let users = read_file(&file);
    assert_eq!(users.len(), 3);
    assert_eq!(users.verify("carol", b"carol-pw"), Verify::UnknownUser);
    let before = std::fs::read_to_string(&file).unwrap();
    let out = run(&["passwd", "-D", f, "carol"], "");
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stderr).contains("\"carol\""),
        "{}",
        text(&out.stderr)
    );

    // Mismatched or empty passwords are refused.
    let out = run(&["passwd", f, "erin"], "one\ntwo\n");
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stderr).contains("do not match"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["passwd", f, "erin"], "\n");
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stderr).contains("empty password"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    // -c overwrites: only the new user is left.
    let out = run(&["passwd", "-c", "-b", f, "frank", "frank-pw"], "");
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let users = read_file(&file);
    assert_eq!(users.len(), 1);
    assert_eq!(users.verify("frank", b"frank-pw"), Verify::Ok);
}

#[test]
fn passwd_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let usage = [
        vec!["passwd", "-c", "-D", f, "a"],
        vec!["passwd", "-b", f, "a"],
        vec!["passwd", f, "a", "password-without-b"],
        vec!["passwd", "-D", "-b", f, "a", "pw"],
        vec!["passwd", "-H", "md5", "-b", f, "a", "pw"],
        vec!["passwd", "-I", "0", "-b", f, "a", "pw"],
        vec![
            "passwd", "-H", "sha512", "-I", "5", "-c", "-b", f, "a", "pw",
        ],
        vec![
            "--listen",
            "127.0.0.1:1999",
            "passwd",
            "-c",
            "-b",
            f,
            "a",
            "pw",
        ],
    ];
    for args in usage {
        let out = wasp(&args, "", dir.path());
        assert_eq!(status(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(!file.exists(), "{args:?} wrote the file");
    }
    // Without -c, a missing file is an error, not a new file.
    let out = wasp(&["passwd", "-b", f, "a", "pw"], "", dir.path());
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stderr).contains("use -c"),
        "{}",
        text(&out.stderr)
    );
    // Names that cannot be stored in the file.
    let out = wasp(&["passwd", "-c", "-b", f, "a:b", "pw"], "", dir.path());
    assert_eq!(status(&out), 1);
    assert!(!file.exists());
}

#[test]
fn plugin_inspect_reports_exports_and_interests() {
    let dir = tempfile::tempdir().unwrap();
    let out = wasp(
        &[
            "plugin",
            "inspect",
            ALLOW_DENY,
            "--config",
            r#"{"filters": ["sensors/#"]}"#,
        ],
        "",
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(status(&out), 0, "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("world: wasp:plugin/full-plugin@0.1.5\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("roles: authenticator, authorizer, transformer, ticker\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hooks: authenticate, authorize-publish, authorize-subscribe, transform\n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("publish-filters:\n  sensors/#\n"),
        "{stdout}"
    );

    // init rejects: the exports and the plugin's message, exit status 1.
    let out = wasp(&["plugin", "inspect", INIT_REJECT], "", dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(status(&out), 1, "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("roles: authenticator\n"), "{stdout}");
    assert!(
        stdout.contains("init: rejected the configuration: config key `token` is required"),
        "{stdout}"
    );

    // Not JSON: a usage error before the plugin is read.
    let out = wasp(
        &["plugin", "inspect", INIT_REJECT, "--config", "token=1"],
        "",
        dir.path(),
    );
    assert_eq!(status(&out), 2, "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    // Not a component.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm junk").unwrap();
    let out = wasp(
        &["plugin", "inspect", junk.to_str().unwrap()],
        "",
        dir.path(),
    );
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stderr).contains("not a valid WebAssembly component"),
        "{}",
        text(&out.stderr)
    );
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo")
}

#[test]
fn demo_config_parses_and_points_at_the_example_plugins() {
    let demo = demo_dir();
    let config = wasp::config::Config::load(&demo.join("wasp.toml")).unwrap();
    assert!(!config.allow_anonymous);
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(binds, ["127.0.0.1:1883"]);
    let wasm: Vec<String> = config
        .plugins
        .iter()
        .map(|p| {
            p.spec
                .wasm
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        wasm,
        [
            "wasp_plugin_password_file.wasm",
            "wasp_plugin_acl_file.wasm",
            "wasp_plugin_transform.wasm",
            "wasp_plugin_storage_redb.wasm"
        ]
    );
    // The storage plugin writes its database in a writable grant (the run script creates it).
    let storage = config.storage.as_ref().expect("[storage]");
    let spec = &config.plugins[3].spec;
    assert_eq!(storage.plugin, spec.name);
    assert_eq!(spec.limits.max_instances, 1);
    assert!(spec.dirs[0].writable);
    assert_eq!(spec.dirs[0].host, demo.join("data"));
    let target = demo.join("../../target/wasm32-wasip2/release");
    for plugin in &config.plugins {
        assert_eq!(plugin.spec.wasm.parent().unwrap(), target);
    }
    // The files the plugins are told to read exist in the directory granted to them.
    for (plugin, file) in [(0, "passwd"), (1, "acl")] {
        let spec = &config.plugins[plugin].spec;
        let config: serde_json::Value = serde_json::from_str(&spec.config_json).unwrap();
        let guest_path = config["file"].as_str().unwrap();
        let grant = &spec.dirs[0];
        assert_eq!(guest_path, format!("{}/{file}", grant.guest));
        assert!(grant.host.join(file).is_file(), "{}", grant.host.display());
        assert!(!grant.writable);
    }
}

#[test]
fn demo_passwords_verify() {
    let users = read_file(&demo_dir().join("passwd"));
    assert_eq!(users.len(), 2);
    assert_eq!(users.verify("alice", b"alice-password"), Verify::Ok);
    assert_eq!(users.verify("bob", b"bob-password"), Verify::Ok);
}

/// Every `examples/oauth/*.toml` is a valid broker configuration: clients need a token, the oauth
/// plugin (the release `.wasm`, which need not exist: validation does not open it) with a longer call
/// deadline than the default, HTTPS granted to the key set's host only, and an issuer, audience and key
/// set in its `config`. The plugin's own checks of that `config` run in
/// `plugins/oauth/tests/examples.rs`.
#[test]
fn oauth_example_configs_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/oauth");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["auth0.toml", "entra.toml", "keycloak.toml"]);
    for file in &files {
        let config =
            wasp::config::Config::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!config.allow_anonymous, "{}", file.display());
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.plugins.len(), 1);
        let spec = &config.plugins[0].spec;
        assert_eq!(spec.name, "oauth");
        assert_eq!(
            spec.wasm,
            dir.join("../../target/wasm32-wasip2/release/wasp_oauth_plugin.wasm")
        );
        assert_eq!(spec.limits.call_timeout, std::time::Duration::from_secs(3));
        let plugin: serde_json::Value = serde_json::from_str(&spec.config_json).unwrap();
        let jwks_url = plugin["jwks_url"].as_str().unwrap();
        let grant = spec.http.as_ref().expect("an http grant");
        assert_eq!(grant.hosts.len(), 1);
        assert!(
            jwks_url.starts_with(&format!("https://{}/", grant.hosts[0])),
            "{jwks_url} is not on {:?}",
            grant.hosts
        );
        assert!(grant.ca_file.is_none() && !grant.allow_plain_http);
        assert!(plugin["issuer"].as_str().unwrap().starts_with("https://"));
        assert!(!plugin["audience"].as_str().unwrap().is_empty());
    }
}

/// The scheduling policy of each of `pid`'s threads (`/proc/PID/task/TID/stat`, field 41), by thread
/// name; empty until the runtime's workers exist.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue;
        };
        // The fields after the name, which is in parentheses and may hold spaces, start at field 3.
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
        let policy = after_name.split_whitespace().nth(41 - 3).expect("field 41");
        threads.push((name.trim().to_owned(), policy.parse().expect("a number")));
    }
    threads
}

/// Starts the `wasp` binary on a loopback listener with `[log] level = LEVEL` (compact format) and, after
/// the rest of the file, `extra` (e.g. a `[runtime]` table); its standard error goes to `stderr`. The
/// directory holds the configuration and the plugin cache: keep it alive while the broker runs.
fn start_broker(
    level: &str,
    extra: &str,
    stderr: Stdio,
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"[[listeners]]
name = "t"
bind = "127.0.0.1:0"

[sys]
interval_secs = 0

[log]
level = "{level}"
format = "compact"

{extra}"#
    );
    let file = dir.path().join("wasp.toml");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .arg("--config")
        .arg(&file)
        .env("XDG_CACHE_HOME", dir.path())
        .env_remove("TOKIO_WORKER_THREADS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run wasp");
    (child, dir)
}

/// `runtime.scheduling` reaches every thread of the running broker: SCHED_BATCH (3) by default,
/// SCHED_OTHER (0) with "normal".
#[cfg(target_os = "linux")]
#[test]
fn broker_threads_get_the_configured_scheduling_policy() {
    for (setting, expected) in [(None, 3), (Some("normal"), 0), (Some("batch"), 3)] {
        let extra = setting.map_or(String::new(), |s| {
            format!("[runtime]\nscheduling = \"{s}\"\n")
        });
        let (mut child, _dir) = start_broker("warn", &extra, Stdio::inherit());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let threads = loop {
            let threads = thread_policies(child.id());
            if threads.iter().any(|(name, _)| name == "wasp-worker") {
                break threads;
            }
            if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("{setting:?}: no runtime worker thread appeared: {threads:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(threads.len() >= 2, "{threads:?}");
        for (name, policy) in &threads {
            assert_eq!(*policy, expected, "{setting:?}: thread {name}: {threads:?}");
        }
    }
}

/// `runtime.worker_threads` sets how many workers the runtime starts (the broker logs it at start-up);
/// without it there is one per CPU.
#[test]
fn broker_starts_the_configured_number_of_workers() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (setting, expected) in [(None, cpus), (Some(1), 1), (Some(3), 3)] {
        let extra = setting.map_or(String::new(), |n| {
            format!("[runtime]\nworker_threads = {n}\n")
        });
        let (mut child, _dir) = start_broker("info", &extra, Stdio::piped());
        // Read on a thread of its own, so that a broker that never logs the line fails the test in time.
        let stderr = child.stderr.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let started = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.contains("runtime started") => break line,
                Ok(_) => {}
                Err(e) => {
                    let _ = child.kill();
                    panic!("{setting:?}: no \"runtime started\" line: {e}");
                }
            }
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            started.contains(&format!("workers={expected}")),
            "{setting:?}: expected {expected} workers: {started}"
        );
    }
}
