//! Commands under the dedicated supervisor, `eventor-supervise`, the one a program finds
//! next to its executable; and how a program tells one that speaks its arguments.

use std::path::Path;

use eventor_agent::supervisor::dedicated_supervisor;

const PROGRAM: &str = env!("CARGO_BIN_EXE_eventor-supervise");

#[path = "supervised/cases.rs"]
mod cases;
#[path = "supervised/procs.rs"]
mod procs;

#[test]
fn the_dedicated_supervisor_of_this_build_is_found_in_its_directory() {
    let dir = Path::new(PROGRAM).parent().unwrap();
    assert_eq!(
        dedicated_supervisor(dir).as_deref(),
        Some(Path::new(PROGRAM))
    );
}

#[test]
fn a_supervisor_that_speaks_other_arguments_or_none_is_passed_over() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(dedicated_supervisor(dir.path()), None, "no file at all");
    let stale = dir.path().join("eventor-supervise");
    std::fs::write(&stale, "#!/bin/sh\necho 0\n").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(dedicated_supervisor(dir.path()), None, "another version");
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(dedicated_supervisor(dir.path()), None, "not executable");
}
