//! `eventor-coord`: the command line of the prime coordinator.
fn main() {}
