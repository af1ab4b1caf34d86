//! Run parameters: what a flow declares (`params:`, each with a default or required), what
//! the user gives (`--param NAME=VALUE`), resolved against what an earlier recovery stored;
//! and `${NAME}` in a step's `env:` values, expanded from them.

use std::collections::BTreeMap;

use super::error::EventorError;

/// A flow's parameters: name → default, `None` for a required one.
pub type DeclaredParams = BTreeMap<String, Option<String>>;

/// Why a name cannot be a parameter's, or `Ok`: `[A-Za-z_][A-Za-z0-9_]*`, not `EVENTOR_…`
/// (the run's own variables).
pub fn check_param_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid parameter name `{name}`: letters, digits and `_`, not starting with a digit"
        ));
    }
    if name.starts_with("EVENTOR_") {
        return Err(format!(
            "invalid parameter name `{name}`: `EVENTOR_` names are the run's own variables"
        ));
    }
    Ok(())
}

/// The names `value` refers to as `${NAME}`, in order.
pub fn references(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.push(&after[..end]);
        rest = &after[end + 1..];
    }
    names
}

/// `value` with each `${NAME}` of a parameter replaced by its value; anything else is kept.
pub fn expand(value: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        out.push_str(&rest[..start]);
        match params.get(&after[..end]) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Refuses a given parameter the flow does not declare, naming the known ones.
pub fn check_given(
    declared: &DeclaredParams,
    given: &BTreeMap<String, String>,
) -> Result<(), EventorError> {
    let unknown = given.keys().find(|name| !declared.contains_key(*name));
    let Some(name) = unknown else { return Ok(()) };
    let known: Vec<&str> = declared.keys().map(String::as_str).collect();
    Err(EventorError::UnknownParam {
        name: name.clone(),
        known: if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        },
        hint: did_you_mean(name, &known),
    })
}

/// A suggestion whatever the case the user typed the name in.
fn did_you_mean(name: &str, known: &[&str]) -> String {
    let lower: Vec<String> = known.iter().map(|k| k.to_ascii_lowercase()).collect();
    let near = crate::yaml::nearest(name, lower.iter().map(String::as_str));
    let index = near.and_then(|n| lower.iter().position(|l| l == n));
    index.map_or_else(String::new, |i| format!("; did you mean `{}`?", known[i]))
}

/// The run's values: each declared parameter's given value, else the stored one (a
/// recovery or continue), else its default; a required one with none is an error. A given
/// value that replaces a stored one is logged once.
pub fn resolve(
    declared: &DeclaredParams,
    given: &BTreeMap<String, String>,
    stored: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, EventorError> {
    check_given(declared, given)?;
    let mut values = BTreeMap::new();
    for (name, default) in declared {
        let kept = stored.and_then(|s| s.get(name));
        let value = match (given.get(name), kept) {
            (Some(new), Some(old)) => {
                if new != old {
                    tracing::info!("parameter {name}: {new} (was {old})");
                }
                new
            }
            (Some(new), None) => new,
            (None, Some(old)) => old,
            (None, None) => default
                .as_ref()
                .ok_or_else(|| EventorError::MissingParam { name: name.clone() })?,
        };
        values.insert(name.clone(), value.clone());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_are_identifiers_outside_eventor_s_own() {
        assert!(check_param_name("RUN_DATE").is_ok());
        assert!(check_param_name("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A B", "EVENTOR_X"] {
            assert!(check_param_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_known_names_and_keeps_the_rest() {
        let params = map(&[("D", "2026-12-05")]);
        assert_eq!(
            expand("day=${D}/${E}/$D/${", &params),
            "day=2026-12-05/${E}/$D/${"
        );
        assert_eq!(references("a${D}b${E}"), vec!["D", "E"]);
    }

    #[test]
    fn given_beats_stored_beats_default_and_a_required_one_must_have_a_value() {
        let declared: DeclaredParams = [
            ("A".to_string(), Some("a0".to_string())),
            ("B".to_string(), None),
        ]
        .into();
        let stored = map(&[("A", "a1"), ("B", "b1")]);
        let got = resolve(&declared, &map(&[("B", "b2")]), Some(&stored)).unwrap();
        assert_eq!(got, map(&[("A", "a1"), ("B", "b2")]));
        let err = resolve(&declared, &BTreeMap::new(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter `B` is required and has no value (pass --param B=VALUE)"
        );
    }

    #[test]
    fn an_unknown_parameter_names_the_known_ones_and_the_nearest() {
        let declared: DeclaredParams = [("RUN_DATE".to_string(), None)].into();
        let err = check_given(&declared, &map(&[("RUN_DAT", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown parameter `RUN_DAT` (the flow's parameters: RUN_DATE); did you mean `RUN_DATE`?"
        );
        let none = check_given(&DeclaredParams::new(), &map(&[("X", "1")])).unwrap_err();
        assert_eq!(
            none.to_string(),
            "unknown parameter `X` (the flow's parameters: none)"
        );
    }
}
