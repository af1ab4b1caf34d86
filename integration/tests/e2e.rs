//! End-to-end tests: each drives eventor through real processes and a real store.
