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
    /// A baseline could not be read or saved.
    #[error(transparent)]
    Baseline(#[from] crate::baseline::BaselineError),
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
    /// True for bad input (an invalid scenario, an unreachable target, a missing or invalid
    /// baseline): exit code 2.
    pub fn is_input(&self) -> bool {
        match self {
            LoadError::Config(_) | LoadError::Unreachable { .. } => true,
            LoadError::Baseline(e) => !matches!(e, crate::baseline::BaselineError::Io { .. }),
            LoadError::Write { .. } => false,
        }
    }
}
