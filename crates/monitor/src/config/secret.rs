//! Secrets in the configuration (connection strings with passwords, tokens): written inline, or
//! taken from an environment variable or a file, and never shown.

use std::fmt;

use rampart_resilience::ConfigError;

/// A secret value from the configuration. Its `Debug` output is redacted, so a logged
/// configuration leaks nothing; [`Secret::expose`] gives the value to the code that uses it.
///
/// ```
/// use rampart_monitor::config::Secret;
///
/// let url = Secret::new("postgres://app:hunter2@db:5432/app");
/// assert_eq!(format!("{url:?}"), "Secret(***)");
/// assert!(url.expose().contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The three ways a secret named `key` can be written: `key`, `key_env`, `key_file`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecretSource<'a> {
    pub(crate) inline: Option<&'a str>,
    pub(crate) env: Option<&'a str>,
    pub(crate) file: Option<&'a str>,
}

impl SecretSource<'_> {
    /// Reads the secret named `key` of the section at `path`: exactly one of the three ways must
    /// be given; a variable must be set and not empty; a file must be readable (one trailing
    /// newline is dropped). Problems name the variable or file, never the value.
    pub(crate) fn read(&self, path: &str, key: &str, errors: &mut ConfigError) -> Option<Secret> {
        let given = [
            self.inline.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ];
        match given.iter().filter(|&&g| g).count() {
            0 => {
                errors.push(
                    format!("{path}.{key}"),
                    format!("one of `{key}`, `{key}_env` or `{key}_file` is required"),
                );
                return None;
            }
            1 => {}
            _ => {
                errors.push(
                    format!("{path}.{key}"),
                    format!("give only one of `{key}`, `{key}_env` and `{key}_file`"),
                );
                return None;
            }
        }
        if let Some(value) = self.inline {
            return Some(Secret::new(value));
        }
        if let Some(var) = self.env {
            return match std::env::var(var) {
                Ok(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    errors.push(
                        format!("{path}.{key}_env"),
                        format!("environment variable {var:?} is not set (or empty)"),
                    );
                    None
                }
            };
        }
        let file = self.file?;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let value = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if value.is_empty() {
                    errors.push(format!("{path}.{key}_file"), format!("{file:?} is empty"));
                    None
                } else {
                    Some(Secret::new(value))
                }
            }
            Err(e) => {
                errors.push(
                    format!("{path}.{key}_file"),
                    format!("cannot read {file:?}: {e}"),
                );
                None
            }
        }
    }
}
