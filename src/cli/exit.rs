//! Exit codes of the `tcb-backup` binary and the error type that carries one.
//!
//! Every command returns `Result<ExitStatus, CliError>`; the code a script sees is decided here
//! and nowhere else, so `docs/cli.md` can document it once.

use std::fmt;

/// The documented process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// Everything asked for was done.
    Ok,
    /// An error that fits no more specific code.
    Error,
    /// A backup run finished, but some collections failed.
    PartialFailure,
    /// The configuration file or the state store does not exist (or the config is invalid).
    ConfigOrStoreMissing,
    /// Another process holds the state store.
    StoreLocked,
    /// The platform refused the app's credentials (wrong secret, unknown appid, IP whitelist...).
    Credentials,
    /// Stopped by Ctrl-C / SIGINT; unfinished jobs resume on the next run.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::Error => 1,
            ExitStatus::PartialFailure => 3,
            ExitStatus::ConfigOrStoreMissing => 10,
            ExitStatus::StoreLocked => 11,
            ExitStatus::Credentials => 12,
            ExitStatus::Interrupted => 130,
        }
    }
}

/// An error that ends a command, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub status: ExitStatus,
    pub message: String,
}

impl CliError {
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        CliError {
            status,
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Error, message)
    }
    pub fn missing(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::ConfigOrStoreMissing, message)
    }
    pub fn credentials(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Credentials, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documentation() {
        let all = [
            (ExitStatus::Ok, 0),
            (ExitStatus::Error, 1),
            (ExitStatus::PartialFailure, 3),
            (ExitStatus::ConfigOrStoreMissing, 10),
            (ExitStatus::StoreLocked, 11),
            (ExitStatus::Credentials, 12),
            (ExitStatus::Interrupted, 130),
        ];
        for (status, code) in all {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }
}
