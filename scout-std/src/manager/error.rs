//! The manager's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while verifying, downloading, launching or talking to a core agent.
///
/// `Display` names the failed step and the detail an operator needs (URL and HTTP status, both
/// hashes, the offending archive member, ...).
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// A filesystem or process operation failed.
    Io {
        /// What was being done, e.g. `create directory /tmp/scout_apm_core/x`.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A directory other users can write (or owned by another user) was refused.
    InsecureDirectory {
        /// The refused directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Why it was refused.
        reason: String,
    },
    /// `manifest.json` is missing.
    ManifestMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// `manifest.json` is not a valid manifest (spec §2.4).
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The binary named by the manifest does not exist.
    BinaryMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The binary's SHA-256 differs from the manifest's `core_agent_binary_sha256`.
    ShaMismatch {
        /// The hashed file.
        path: PathBuf,
        /// The hash the manifest names.
        expected: String,
        /// The hash of the file.
        actual: String,
    },
    /// No verified core agent exists and `core_agent_download` is false.
    DownloadDisabled {
        /// Why verification failed.
        reason: String,
    },
    /// The download server answered with a status other than 200.
    HttpStatus {
        /// Requested URL.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// The HTTP request failed (connection refused, TLS, broken body, ...).
    Http {
        /// Requested URL.
        url: String,
        /// The client's description of the failure.
        message: String,
    },
    /// An operation did not finish in time.
    Timeout {
        /// What timed out.
        what: String,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The archive or its contents exceed the configured size bound.
    TooLarge {
        /// What is too large.
        what: String,
        /// The bound in bytes.
        limit: u64,
    },
    /// An archive member was refused (absolute path, `..`, link, device, ...).
    UnsafeArchiveMember {
        /// The member's name as stored in the archive.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The archive could not be read (bad gzip, truncated, not a tar file).
    Archive {
        /// The archive file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// Another process held `download.lock` for longer than the configured wait.
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
    /// The core agent binary could not be started.
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The core agent binary exited with a status other than 0 or 3.
    LaunchFailed {
        /// The binary.
        binary: PathBuf,
        /// The exit status as printed by the OS.
        status: String,
    },
    /// The socket address setting cannot be used.
    InvalidAddress {
        /// The configured address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to, writing to or reading from the core agent socket failed.
    Socket {
        /// The address.
        address: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The core agent answered something that is not a framed JSON object.
    Protocol {
        /// The address.
        address: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// A setting has a value the manager cannot use.
    InvalidSetting {
        /// The setting's key, e.g. `core_agent_full_name`.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An internal failure (runtime creation, worker thread panic).
    Internal(String),
}

impl ManagerError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True for verification failures that a fresh download can fix (missing or invalid
    /// manifest, missing binary, hash mismatch).
    pub fn needs_download(&self) -> bool {
        matches!(
            self,
            Self::ManifestMissing { .. }
                | Self::ManifestInvalid { .. }
                | Self::BinaryMissing { .. }
                | Self::ShaMismatch { .. }
        )
    }

    /// True when the failure is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { context, source } => write!(f, "cannot {context}: {source}"),
            Self::InsecureDirectory { path, mode, reason } => write!(
                f,
                "refusing directory {} (mode {mode:o}): {reason}",
                path.display()
            ),
            Self::ManifestMissing { path } => {
                write!(f, "core agent manifest {} does not exist", path.display())
            }
            Self::ManifestInvalid { path, reason } => {
                write!(
                    f,
                    "invalid core agent manifest {}: {reason}",
                    path.display()
                )
            }
            Self::BinaryMissing { path } => {
                write!(f, "core agent binary {} does not exist", path.display())
            }
            Self::ShaMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "SHA-256 mismatch for {}: manifest says {expected}, file has {actual}",
                path.display()
            ),
            Self::DownloadDisabled { reason } => write!(
                f,
                "no verified core agent ({reason}) and core_agent_download is off"
            ),
            Self::HttpStatus { url, status } => {
                write!(f, "download of {url} failed: HTTP status {status}")
            }
            Self::Http { url, message } => write!(f, "download of {url} failed: {message}"),
            Self::Timeout { what, after } => {
                write!(f, "{what} timed out after {:.1} s", after.as_secs_f64())
            }
            Self::TooLarge { what, limit } => {
                write!(f, "{what} exceeds the limit of {limit} bytes")
            }
            Self::UnsafeArchiveMember { name, reason } => {
                write!(f, "refusing archive member {name:?}: {reason}")
            }
            Self::Archive { path, message } => {
                write!(f, "cannot read archive {}: {message}", path.display())
            }
            Self::LockTimeout { path, waited } => write!(
                f,
                "another process still holds {} after waiting {:.1} s",
                path.display(),
                waited.as_secs_f64()
            ),
            Self::Spawn { binary, source } => {
                write!(f, "cannot start core agent {}: {source}", binary.display())
            }
            Self::LaunchFailed { binary, status } => write!(
                f,
                "core agent {} failed to start: {status}",
                binary.display()
            ),
            Self::InvalidAddress { address, reason } => {
                write!(f, "invalid core agent address {address:?}: {reason}")
            }
            Self::Socket { address, source } => {
                write!(f, "core agent socket {address}: {source}")
            }
            Self::Protocol { address, reason } => {
                write!(f, "unexpected reply from core agent at {address}: {reason}")
            }
            Self::InvalidSetting { name, reason } => write!(f, "invalid setting {name}: {reason}"),
            Self::Internal(msg) => write!(f, "internal error: {msg}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::Spawn { source, .. } | Self::Socket { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}
