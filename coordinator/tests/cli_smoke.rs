//! The `eventor-coord` binary starts and answers `--version` and `--help`.
//!
//! Besides checking that, this test makes `cargo test --workspace` build the binary before
//! any test runs, so the end-to-end tests in `integration/` always run the current one.

use std::process::Command;

#[test]
fn binary_answers_version_and_help() {
    let binary = env!("CARGO_BIN_EXE_eventor-coord");
    let version = Command::new(binary).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("eventor-coord "));
    let help = Command::new(binary).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit status: 0 success, 1 the flow failed, 2 bad input, 3 incomplete"),
        "{help}"
    );
}
