//! [`build_python`] and [`build_js`]: build plugins written in Python (componentize-py) and JavaScript
//! (componentize-js) into components, so that the same harness tests run against them.
//!
//! A build takes 20-40 s, so the component is cached in `<target>/wasp-plugins/<language>/<hash>/`, named
//! by a hash of everything it is made from: the source files, the WIT files, the world and the toolchain's
//! version. A test run whose sources did not change takes the cached file.
//!
//! The toolchains are found in this order: the environment variable (`WASP_COMPONENTIZE_PY`,
//! `WASP_COMPONENTIZE_JS`) naming the program; what `tests/setup` installs in the target dir
//! (`<target>/py-venv/bin/componentize-py`, `<target>/js-toolchain/node_modules/.bin/componentize-js`);
//! the `PATH`. When none is there the build panics with the command that installs it: a missing
//! toolchain fails the tests, it does not skip them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::build::target_dir;

/// The versions `tests/setup` installs, and which the cache key names.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

const SETUP_HINT: &str = "run `tests/setup` from the Wasp repository (it installs componentize-py \
     into <target>/py-venv and componentize-js into <target>/js-toolchain), or name the program in";

/// The WIT package of the Wasp repository this harness was built from (`wit/`), the one the broker
/// speaks. Plugins developed elsewhere pass their own copy.
pub fn wasp_wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit")
}

/// Builds the Python plugin whose module `module` (e.g. `"app"` for `app.py`) is in `dir` against
/// `world` of the WIT package in `wit` (`componentize-py -d WIT -w WORLD componentize -p DIR MODULE`),
/// and returns the path of the cached `.wasm`.
///
/// # Panics
///
/// When componentize-py is not installed (naming the command that installs it) or the build fails
/// (with its output).
pub fn build_python(dir: &Path, module: &str, wit: &Path, world: &str) -> PathBuf {
    let tool = find_tool(
        "WASP_COMPONENTIZE_PY",
        &target_dir(dir).join("py-venv/bin/componentize-py"),
        "componentize-py",
    );
    build_cached("python", dir, wit, world, module, &tool, |out| {
        let mut command = Command::new(&tool);
        command
            .arg("-d")
            .arg(wit)
            .args(["-w", world, "componentize", "-p"])
            .arg(dir)
            .arg(module)
            .arg("-o")
            .arg(out)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        command
    })
}

/// Builds the JavaScript plugin `entry` (an ES module, e.g. `guard.js`) in `dir` against `world` of the
/// WIT package in `wit` (`componentize-js ENTRY --wit WIT -n WORLD --disable http fetch-event`), and
/// returns the path of the cached `.wasm`. Only `entry` is bundled: it must not import other files.
///
/// # Panics
///
/// When componentize-js is not installed (naming the command that installs it) or the build fails
/// (with its output).
pub fn build_js(dir: &Path, entry: &str, wit: &Path, world: &str) -> PathBuf {
    let tool = find_tool(
        "WASP_COMPONENTIZE_JS",
        &target_dir(dir).join("js-toolchain/node_modules/.bin/componentize-js"),
        "componentize-js",
    );
    build_cached("js", dir, wit, world, entry, &tool, |out| {
        let mut command = Command::new(&tool);
        command
            .arg(dir.join(entry))
            .arg("--wit")
            .arg(wit)
            .args(["-n", world])
            // StarlingMonkey's fetch() imports wasi:http, which the broker does not link (a plugin
            // reaches out only through the `http` import its grant allows): left out.
            .args(["--disable", "http", "fetch-event"])
            .arg("-o")
            .arg(out);
        command
    })
}

fn find_tool(variable: &str, installed: &Path, program: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    if installed.exists() {
        return installed.to_owned();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "{program} is not installed (looked for ${variable}, {}, and the PATH): {SETUP_HINT} ${variable}",
            installed.display()
        )
    })
}

fn build_cached(
    language: &str,
    dir: &Path,
    wit: &Path,
    world: &str,
    entry: &str,
    tool: &Path,
    command: impl FnOnce(&Path) -> Command,
) -> PathBuf {
    // A failed build is remembered too: the other tests of the binary report it without building again.
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Held while building: the tests of one binary build a plugin once, one after another.
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key_path = dir.join(entry);
    let result = built
        .entry(key_path.clone())
        .or_insert_with(|| build_once(language, dir, wit, world, entry, tool, command))
        .clone();
    result.unwrap_or_else(|message| panic!("{message}"))
}

fn build_once(
    language: &str,
    dir: &Path,
    wit: &Path,
    world: &str,
    entry: &str,
    tool: &Path,
    command: impl FnOnce(&Path) -> Command,
) -> Result<PathBuf, String> {
    let version = tool_version(tool)?;
    let mut hash = Fnv::default();
    for part in [language, world, entry, version.as_str()] {
        hash.write(part.as_bytes());
        hash.write(&[0]);
    }
    hash_tree(&mut hash, dir);
    hash_tree(&mut hash, wit);
    let name = Path::new(entry)
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    // `<hash>/<name>.wasm`: the file keeps the source's name, which the harness names the plugin by.
    let cache = target_dir(dir)
        .join("wasp-plugins")
        .join(language)
        .join(format!("{:016x}", hash.0));
    let wasm = cache.join(format!("{name}.wasm"));
    if wasm.exists() {
        return Ok(wasm);
    }
    std::fs::create_dir_all(&cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    // Built under a temporary name and renamed: test binaries, and tests of one binary, running at the
    // same time never see a half-written file nor write into each other's.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = cache.join(format!("{name}.{}-{build}.partial", std::process::id()));
    let output = command(&partial)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !output.status.success() || !partial.exists() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "building the {language} plugin {} with {} failed:\n{}\n{}",
            dir.join(entry).display(),
            tool.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &wasm)
        .map_err(|e| format!("cannot move the built plugin to {}: {e}", wasm.display()))?;
    Ok(wasm)
}

fn tool_version(tool: &Path) -> Result<String, String> {
    let output = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", tool.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// FNV-1a, 64 bits: stable across Rust releases (std's hasher is not promised to be), enough to name a
/// cache entry.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Hashes the relative paths and contents of the files under `root`, in sorted order, skipping hidden
/// entries, `__pycache__`, `node_modules` and `target`.
fn hash_tree(hash: &mut Fnv, root: &Path) {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                || matches!(name.as_ref(), "__pycache__" | "node_modules" | "target")
            {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        hash.write(relative.to_string_lossy().as_bytes());
        hash.write(&[0]);
        let bytes =
            std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        hash.write(&(bytes.len() as u64).to_le_bytes());
        hash.write(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_hash_changes_with_a_source_and_ignores_bytecode_caches() {
        let dir = tempfile::tempdir().unwrap();
        let hash_of = |dir: &Path| {
            let mut h = Fnv::default();
            hash_tree(&mut h, dir);
            h.0
        };
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        let first = hash_of(dir.path());
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/app.pyc"), "junk").unwrap();
        assert_eq!(hash_of(dir.path()), first);
        std::fs::write(dir.path().join("app.py"), "x = 2\n").unwrap();
        assert_ne!(hash_of(dir.path()), first);
    }

    #[test]
    fn a_missing_toolchain_names_the_install_command() {
        let message = std::panic::catch_unwind(|| {
            find_tool(
                "WASP_TEST_NO_SUCH_VARIABLE",
                Path::new("/nonexistent/componentize-nothing"),
                "componentize-nothing-here",
            )
        })
        .unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("run `tests/setup`"), "{message}");
        assert!(
            message.contains("/nonexistent/componentize-nothing"),
            "{message}"
        );
    }
}
