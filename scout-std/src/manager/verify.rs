//! Manifest parsing, SHA-256 verification and directory safety checks (spec §2.2, §2.4).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::names::{full_name, is_plain_file_name, working_dir};
use super::{ManagerConfig, ManagerError};

/// Name of the manifest inside the working directory and the archive.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The fields of `manifest.json` the manager relies on (spec §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `core_agent_binary`: file name of the executable, e.g. `core-agent`.
    pub core_agent_binary: String,
    /// `core_agent_version`, e.g. `1.6.0`.
    pub core_agent_version: String,
    /// `core_agent_binary_sha256`: lowercase hex SHA-256 of the executable.
    pub core_agent_binary_sha256: String,
}

impl Manifest {
    /// Parses manifest JSON. `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ManagerError> {
        let invalid = |reason: String| ManagerError::ManifestInvalid {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("not a JSON object".to_owned()))?;
        let field = |key: &str| -> Result<String, ManagerError> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(invalid(format!("{key} is not a string"))),
                None => Err(invalid(format!("{key} is missing"))),
            }
        };
        let manifest = Self {
            core_agent_binary: field("core_agent_binary")?,
            core_agent_version: field("core_agent_version")?,
            core_agent_binary_sha256: field("core_agent_binary_sha256")?,
        };
        if !is_plain_file_name(&manifest.core_agent_binary) {
            return Err(invalid(format!(
                "core_agent_binary {:?} is not a plain file name",
                manifest.core_agent_binary
            )));
        }
        let sha = &manifest.core_agent_binary_sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "core_agent_binary_sha256 {sha:?} is not 64 hex digits"
            )));
        }
        Ok(manifest)
    }

    /// Reads and parses `<dir>/manifest.json`.
    pub fn read_from(dir: &Path) -> Result<Self, ManagerError> {
        let path = dir.join(MANIFEST_FILE);
        let mut bytes = Vec::new();
        match fs::File::open(&path) {
            Ok(f) => {
                // A manifest is a few hundred bytes; refuse to read a huge file.
                f.take(64 * 1024)
                    .read_to_end(&mut bytes)
                    .map_err(|e| ManagerError::io(format!("read {}", path.display()), e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ManagerError::ManifestMissing { path });
            }
            Err(e) => return Err(ManagerError::io(format!("open {}", path.display()), e)),
        }
        Self::parse(&bytes, &path)
    }
}

/// A core agent whose manifest is valid and whose binary matches the manifest's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The working directory.
    pub dir: PathBuf,
    /// Absolute or config-relative path of the executable.
    pub binary: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

/// Lowercase hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Verifies the manifest and binary found in `dir` (no directory safety check).
pub(crate) fn verify_dir(dir: &Path) -> Result<Verified, ManagerError> {
    let manifest = Manifest::read_from(dir)?;
    let binary = dir.join(&manifest.core_agent_binary);
    let meta = match fs::symlink_metadata(&binary) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ManagerError::BinaryMissing { path: binary });
        }
        Err(e) => return Err(ManagerError::io(format!("stat {}", binary.display()), e)),
    };
    if !meta.file_type().is_file() {
        return Err(ManagerError::BinaryMissing { path: binary });
    }
    let actual = sha256_file(&binary)
        .map_err(|e| ManagerError::io(format!("read {}", binary.display()), e))?;
    let expected = manifest.core_agent_binary_sha256.to_ascii_lowercase();
    if actual != expected {
        return Err(ManagerError::ShaMismatch {
            path: binary,
            expected,
            actual,
        });
    }
    Ok(Verified {
        dir: dir.to_owned(),
        binary,
        manifest,
    })
}

/// Checks that the full name is usable as a directory name.
pub(crate) fn checked_working_dir(cfg: &ManagerConfig) -> Result<PathBuf, ManagerError> {
    let name = full_name(cfg);
    if !is_plain_file_name(&name) {
        return Err(ManagerError::InvalidSetting {
            name: "core_agent_full_name".to_owned(),
            reason: format!("{name:?} is not a plain directory name"),
        });
    }
    Ok(working_dir(cfg))
}

/// Verification (spec §2.4): the working directory is safe, `manifest.json` is valid and the
/// binary it names has the SHA-256 it states. Nothing is created or downloaded.
pub fn verify(cfg: &ManagerConfig) -> Result<Verified, ManagerError> {
    let dir = checked_working_dir(cfg)?;
    match fs::symlink_metadata(&dir) {
        Ok(_) => check_dirs(cfg, &dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ManagerError::ManifestMissing {
                path: dir.join(MANIFEST_FILE),
            });
        }
        Err(e) => return Err(ManagerError::io(format!("stat {}", dir.display()), e)),
    }
    verify_dir(&dir)
}

/// The effective uid of this process, where it can be found without `unsafe` (Linux `/proc`).
fn current_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Refuses a working directory that other users could write to or replace.
///
/// * the working directory must be a real directory (not a symlink), owned by this user or
///   root, and not writable by others (group write only if `core_agent_permissions` grants it);
/// * `core_agent_dir` must not be writable by others unless it has the sticky bit (like `/tmp`).
pub(crate) fn check_dirs(cfg: &ManagerConfig, dir: &Path) -> Result<(), ManagerError> {
    let uid = current_uid();
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| ManagerError::io(format!("stat {}", dir.display()), e))?;
    let mode = meta.permissions().mode() & 0o7777;
    let refuse = |reason: &str| ManagerError::InsecureDirectory {
        path: dir.to_owned(),
        mode,
        reason: reason.to_owned(),
    };
    if !meta.file_type().is_dir() {
        return Err(refuse("not a directory (symlinks are not followed)"));
    }
    if mode & 0o002 != 0 {
        return Err(refuse("other users can write to it"));
    }
    if mode & 0o020 != 0 && cfg.core_agent_permissions & 0o020 == 0 {
        return Err(refuse(
            "its group can write to it and core_agent_permissions does not allow that",
        ));
    }
    if let Some(uid) = uid
        && meta.uid() != uid
        && meta.uid() != 0
    {
        return Err(refuse(&format!(
            "owned by uid {}, not by this user",
            meta.uid()
        )));
    }
    let parent = &cfg.core_agent_dir;
    if let Ok(pmeta) = fs::metadata(parent) {
        let pmode = pmeta.permissions().mode() & 0o7777;
        if pmode & 0o002 != 0 && pmode & 0o1000 == 0 {
            return Err(ManagerError::InsecureDirectory {
                path: parent.clone(),
                mode: pmode,
                reason: "other users can write to it and it has no sticky bit".to_owned(),
            });
        }
    }
    Ok(())
}

/// Creates `core_agent_dir` (default mode) and the working directory with
/// `core_agent_permissions`, then checks both (see [`check_dirs`]).
pub(crate) fn prepare_working_dir(cfg: &ManagerConfig) -> Result<PathBuf, ManagerError> {
    let dir = checked_working_dir(cfg)?;
    fs::DirBuilder::new()
        .recursive(true)
        .create(&cfg.core_agent_dir)
        .map_err(|e| {
            ManagerError::io(
                format!("create directory {}", cfg.core_agent_dir.display()),
                e,
            )
        })?;
    let mode = cfg.core_agent_permissions & 0o7777;
    match fs::DirBuilder::new().mode(mode).create(&dir) {
        Ok(()) => {
            // Apply the configured mode exactly (the umask only narrows it).
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|e| {
                ManagerError::io(format!("set permissions of {}", dir.display()), e)
            })?;
            log::debug!(
                "scout core agent: created {} with mode {mode:o}",
                dir.display()
            );
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(ManagerError::io(
                format!("create directory {}", dir.display()),
                e,
            ));
        }
    }
    check_dirs(cfg, &dir)?;
    Ok(dir)
}
