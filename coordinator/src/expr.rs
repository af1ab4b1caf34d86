//! placeholder: filled in by the flow-file work.
