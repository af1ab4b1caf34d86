//! The `eventor-agent` binary starts and answers `--help` and `--version`.
//!
//! Besides checking that, this test makes `cargo test --workspace` build the binary before
//! any test runs, so the end-to-end tests in `integration/` always run the current one.

use std::process::Command;

#[test]
fn binary_answers_help_and_version() {
    let binary = env!("CARGO_BIN_EXE_eventor-agent");
    let help = Command::new(binary).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--store",
        "--host-name",
        "--max-concurrent",
        "Exit status: 0",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let version = Command::new(binary).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("eventor-agent "));
}
