//! API keys: read from the environment or a file, never shown.

use std::path::Path;
use std::sync::Arc;

/// A provider's API key. `Debug` and `Display` show `***`; the key itself only goes into the
/// `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Why a key could not be read. Says where from, never what was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The environment variable is unset or not unicode.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read key file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The variable or file holds only whitespace.
    #[error("{0} is empty")]
    Empty(String),
}

impl ApiKey {
    /// A key given directly (surrounding whitespace trimmed).
    pub fn new(key: impl AsRef<str>) -> Result<ApiKey, ApiKeyError> {
        let key = key.as_ref().trim();
        if key.is_empty() {
            return Err(ApiKeyError::Empty("the key".to_owned()));
        }
        Ok(ApiKey(key.into()))
    }

    /// The key in environment variable `var`.
    pub fn from_env(var: &str) -> Result<ApiKey, ApiKeyError> {
        let value = std::env::var(var).map_err(|_| ApiKeyError::EnvMissing(var.to_owned()))?;
        ApiKey::new(value).map_err(|_| ApiKeyError::Empty(format!("environment variable {var}")))
    }

    /// The key in file `path` (such as a mounted secret), surrounding whitespace trimmed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ApiKey, ApiKeyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let value = std::fs::read_to_string(path).map_err(|e| ApiKeyError::File {
            path: shown.clone(),
            message: e.kind().to_string(),
        })?;
        ApiKey::new(value).map_err(|_| ApiKeyError::Empty(format!("key file {shown}")))
    }

    /// The key, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_never_shown() {
        let key = ApiKey::new(" sk-secret-123\n").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "***");
        assert_eq!(key.expose(), "sk-secret-123");
    }

    #[test]
    fn a_key_file_is_trimmed_and_errors_do_not_show_contents() {
        let dir = std::env::temp_dir().join(format!("rampart-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        assert_eq!(ApiKey::from_file(&file).unwrap().expose(), "sk-from-file");
        std::fs::write(&file, "  \n").unwrap();
        let err = ApiKey::from_file(&file).unwrap_err();
        assert!(matches!(err, ApiKeyError::Empty(_)), "{err}");
        let missing = ApiKey::from_file(dir.join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read key file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            ApiKey::from_env("RAMPART_TEST_SURELY_UNSET_KEY").unwrap_err(),
            ApiKeyError::EnvMissing("RAMPART_TEST_SURELY_UNSET_KEY".to_owned())
        );
    }
}
