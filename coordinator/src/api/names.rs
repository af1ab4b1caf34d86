//! What a run id, a flow name and a sequence may be: they name files and rows, so careless
//! input (empty, a newline, `../x`, a 1 MB id) is refused up front, before anything is stored.

/// The longest run id, flow name or sequence, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A run id: non-empty, at most [`MAX_NAME_BYTES`], no control characters.
pub fn check_run_id(id: &str) -> Result<(), String> {
    check_text(id)
}

/// A sequence: as a run id, and no `@` (the command line's separator).
pub fn check_sequence(sequence: &str) -> Result<(), String> {
    check_text(sequence)?;
    match sequence.contains('@') {
        true => Err("must not contain `@`".to_string()),
        false => Ok(()),
    }
}

/// A flow name: as a run id, and usable as one file name in the working directory (it names
/// the default store `<name>.run.db` and the log directory), so no `/` and not `.` or `..`.
pub fn check_flow_name(name: &str) -> Result<(), String> {
    check_text(name)?;
    if name.contains('/') || name == "." || name == ".." {
        return Err("must be a plain file name (no `/`, not `.` or `..`)".to_string());
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > MAX_NAME_BYTES {
        let len = text.len();
        return Err(format!("is {len} bytes long; at most {MAX_NAME_BYTES}"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn careless_names_are_refused_and_ordinary_ones_pass() {
        for bad in ["", " ", "a\nb", "a\tb", &"x".repeat(129)] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_run_id(&"x".repeat(128)).is_ok());
        assert!(check_run_id("nightly 2026-12-01").is_ok());
        for bad in ["../x/../../y", "a/b", "..", "."] {
            assert!(check_flow_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_flow_name("etl.daily").is_ok());
        assert!(check_sequence("@1").is_err());
        assert!(check_sequence("7").is_ok());
    }
}
