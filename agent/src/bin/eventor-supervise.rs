//! The dedicated supervisor of one command (see `supervisor.rs`): what a program that runs
//! commands starts instead of itself when this binary lies next to it, for the cost of a
//! small program's start instead of a large one's.

// The C `main` directly: a supervisor needs none of the set-up Rust's own start does
// (reading /proc/self/maps for the main thread's guard page, an alternate signal stack).
// The arguments still come through `std::env::args_os`, which glibc hands to the
// standard library before `main`.
#![no_main]

#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    eventor_agent::supervisor::dedicated_main()
}
