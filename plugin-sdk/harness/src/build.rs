//! [`build_wasm`]: builds a plugin crate to a WebAssembly component with a nested cargo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Builds the plugin crate at `manifest_dir` (`cargo build --release --target wasm32-wasip2`) into
/// `<target>/wasp-plugins` (a target dir of its own, so the nested cargo never waits on the lock the
/// outer build holds) and returns the path of its `.wasm`. Each crate is built once per process.
///
/// # Panics
///
/// When cargo fails (with cargo's output) or produces no `.wasm`.
pub fn build_wasm(manifest_dir: &Path) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Held while building: tests of one binary build the same crate once, one after another.
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(wasm) = built.get(manifest_dir) {
        return wasm.clone();
    }
    let manifest = manifest_dir.join("Cargo.toml");
    let target_dir = target_dir(manifest_dir).join("wasp-plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // Small artifacts: the workspace's release profile keeps line tables (for the broker's
        // backtraces), which would make a plugin ~3 MB instead of a few hundred KB. Only this nested
        // build is affected.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .current_dir(manifest_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("build_wasm: cannot run cargo: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        panic!(
            "build_wasm: `cargo build --target wasm32-wasip2` failed for {}:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wasm = wasm_artifact(&stdout, &manifest).unwrap_or_else(|| {
        panic!(
            "build_wasm: cargo built {} but reported no .wasm (is it a `cdylib`?):\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    built.insert(manifest_dir.to_owned(), wasm.clone());
    wasm
}

/// The `.wasm` cargo reported for the package of `manifest` in its JSON messages.
fn wasm_artifact(messages: &str, manifest: &Path) -> Option<PathBuf> {
    let wanted = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_owned());
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| Path::new(p) == wanted)
        })
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

/// `$CARGO_TARGET_DIR`, else the target dir the running test binary lives in, else `<crate>/target`.
pub(crate) fn target_dir(manifest_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            // <target>/<profile>/deps/<test binary> or <target>/<profile>/examples/<binary>.
            exe.ancestors()
                .find(|dir| {
                    dir.join("CACHEDIR.TAG").exists()
                        || dir.file_name().is_some_and(|n| n == "target")
                })
                .map(Path::to_owned)
        })
        .unwrap_or_else(|| manifest_dir.join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_of_the_wanted_package_is_found_among_cargo_messages() {
        let manifest = Path::new("/nonexistent/p/Cargo.toml");
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/nonexistent/dep/Cargo.toml","filenames":["/t/libdep.rlib"]}"#,
            r#"{"reason":"compiler-message","manifest_path":"/nonexistent/p/Cargo.toml"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/nonexistent/p/Cargo.toml","filenames":["/t/p.d","/t/p.wasm"]}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            wasm_artifact(&messages, manifest),
            Some(PathBuf::from("/t/p.wasm"))
        );
        assert_eq!(wasm_artifact("", manifest), None);
    }
}
