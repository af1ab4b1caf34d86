//! The wire protocol between the prime coordinator and its agents (filled in by the protocol issue).
