//! Test-only crate: the tests live in `tests/e2e.rs`.
