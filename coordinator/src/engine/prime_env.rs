//! Variables copied from the prime's environment into tasks (`env_from_prime`): secrets such
//! as a database password, which reach a task only in its environment (through the protocol
//! session for a host's task), and are never stored, logged or shown: their `Debug` names
//! the variables, never their values.

use std::fmt;

/// Variables read from the prime's environment, by name, in the order given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PrimeEnv {
    vars: Vec<(String, String)>,
}

/// A variable `env_from_prime` names that the prime's environment lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` (env_from_prime of {whose}) is not set in the prime's environment")]
pub struct MissingPrimeVar {
    pub name: String,
    /// Whose list named it: `the hosts file`, `step s1`.
    pub whose: String,
}

impl PrimeEnv {
    /// No variables.
    pub const fn new() -> PrimeEnv {
        PrimeEnv { vars: Vec::new() }
    }

    /// The values of `names` in this process's environment; a name missing there (or not
    /// valid UTF-8) is an error naming it, never a value.
    pub fn read(names: &[String], whose: &str) -> Result<PrimeEnv, MissingPrimeVar> {
        let read = |name: &String| match std::env::var(name) {
            Ok(value) => Ok((name.clone(), value)),
            Err(_) => Err(MissingPrimeVar {
                name: name.clone(),
                whose: whose.to_string(),
            }),
        };
        let vars = names.iter().map(read).collect::<Result<_, _>>()?;
        Ok(PrimeEnv { vars })
    }

    /// The variables with their values, for a task's environment only.
    pub fn vars(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.vars.iter().cloned()
    }

    /// The variables' names: what may be stored and shown.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(name, _)| name.as_str())
    }
}

impl fmt::Debug for PrimeEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PrimeEnv")
            .field(&self.names().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_variables_and_never_shows_a_value() {
        let env = PrimeEnv {
            vars: vec![("DB_PASSWORD".into(), "hunter2-secret".into())],
        };
        let shown = format!("{env:?}");
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_variable_missing_from_the_prime_is_named() {
        let names = vec!["EVENTOR_TEST_SURELY_UNSET_VARIABLE".to_string()];
        let err = PrimeEnv::read(&names, "step s1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`EVENTOR_TEST_SURELY_UNSET_VARIABLE` (env_from_prime of step s1) is not set in the prime's environment"
        );
    }
}
