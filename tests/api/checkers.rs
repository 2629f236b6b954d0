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
    crate::helpers::installed_by(
        INSTALL,
        "CI_TOOLS_DIR",
        &tools_dir(),
        tools_dir().join("venv/bin").join(name),
    )
}
