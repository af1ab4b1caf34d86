//! Shared helpers for the examples (the examples themselves live in `examples/examples/`).
