//! The dedicated supervisor of one command (see `supervisor.rs`): what a program that runs
//! commands starts instead of itself when this binary lies next to it, for the cost of a
//! small program's start instead of a large one's.

// The C `main` directly: a supervisor needs none of the set-up Rust's own start does
// (reading /proc/self/maps for the main thread's guard page, an alternate signal stack).
// The arguments are read from `argv` here: only glibc hands them to the standard library
// before `main`, and the portable agent's supervisor is built for musl.
#![no_main]

use std::ffi::{c_char, c_int, CStr, OsString};
use std::os::unix::ffi::OsStringExt;

/// # Safety
/// Called by the C runtime only, with `argc` valid NUL-terminated strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let count = usize::try_from(argc).unwrap_or(0);
    // SAFETY: the C runtime passes `argc` valid NUL-terminated strings in `argv`.
    let args = (1..count).map(|i| unsafe { CStr::from_ptr(*argv.add(i)) });
    let args = args.map(|arg| OsString::from_vec(arg.to_bytes().to_vec()));
    eventor_agent::supervisor::dedicated_main(args.collect())
}
