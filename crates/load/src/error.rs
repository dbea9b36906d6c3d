//! Errors of a load run.

use rampart_resilience::ConfigError;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The scenario is invalid; every problem is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A target did not accept a connection before the run.
    #[error("cannot reach {target}: {reason} (checked before the run; nothing was sent)")]
    Unreachable {
        /// `host:port`.
        target: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// A report could not be written.
    #[error("cannot write the report to {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    /// True for bad input (an invalid scenario or an unreachable target): exit code 2.
    pub fn is_input(&self) -> bool {
        matches!(self, LoadError::Config(_) | LoadError::Unreachable { .. })
    }
}
