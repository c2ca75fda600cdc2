//! Errors of the daemon.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `concurrent` is 0.
    #[error("concurrent must be at least 1")]
    ZeroConcurrent,
    /// A runner names an executor this build does not have.
    #[error(
        "runner {runner:?} uses executor {executor:?}, which this build does not support (supported: {supported})"
    )]
    UnknownExecutor {
        /// Runner name.
        runner: String,
        /// The executor it asked for.
        executor: String,
        /// Comma-separated supported names.
        supported: String,
    },
    /// A runner's coordinator client could not be built.
    #[error("failed to set up the client of runner {runner:?}")]
    Client {
        /// Runner name.
        runner: String,
        /// Why.
        #[source]
        source: podrunner_coordinator::Error,
    },
    /// The daemon has already ended.
    #[error("the daemon has stopped")]
    Stopped,
    /// The state directory (the job journal) could not be used.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The metrics listener could not be bound.
    #[error("failed to listen on {address}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ZeroConcurrent => "zero_concurrent",
            Self::UnknownExecutor { .. } => "unknown_executor",
            Self::Client { .. } => "client",
            Self::Listen { .. } => "listen",
            Self::Journal(_) => "journal",
            Self::Stopped => "stopped",
        }
    }
}
