//! Third-party checkers the tests run (openapi-spec-validator, schemathesis, hadolint),
//! installed at pinned versions by `.ci/install-tools` into `target/ci-tools` (or
//! `CI_TOOLS_DIR`); the first test that needs them installs them when they are missing.

use std::path::{Path, PathBuf};

const INSTALL: &str = ".ci/install-tools";

fn tools_dir() -> PathBuf {
    std::env::var_os("CI_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-tools"))
}

/// The checker's executable, installed first (once per test run) when it is missing.
pub fn checker(name: &str) -> PathBuf {
    static INSTALL_RUN: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let path = tools_dir().join("venv/bin").join(name);
    if !path.exists() {
        let outcome = INSTALL_RUN.get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(INSTALL);
            let status = std::process::Command::new(&script)
                .env("CI_TOOLS_DIR", tools_dir())
                .status()
                .map_err(|e| format!("{} did not start: {e}", script.display()))?;
            status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{INSTALL} failed: {status}"))
        });
        if let Err(why) = outcome {
            panic!("the checkers the tests use are not installed: {why}");
        }
    }
    assert!(
        path.exists(),
        "{} is missing after {INSTALL} ran",
        path.display()
    );
    path
}
