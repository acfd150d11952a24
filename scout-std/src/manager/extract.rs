//! Safe extraction of the downloaded `.tgz` (spec §2.3 step 5).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::EntryType;

use super::ManagerError;

/// Most members an archive may hold (the real one has two).
const MAX_MEMBERS: usize = 1000;

/// Relative, normalised member path, or a refusal.
fn member_path(raw: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path".to_owned());
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Extracts the gzip-compressed tar `archive` into the existing, empty directory `dest`.
///
/// Only regular files and directories are accepted; absolute paths, `..`, links, devices,
/// FIFOs and duplicate members are refused, as are archives whose members exceed
/// `max_bytes` in total. File modes lose group/other write and setuid/setgid/sticky bits.
/// The gzip trailer is checked, so a truncated download is an error.
pub(crate) fn extract_tgz(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), ManagerError> {
    let archive_err = |e: io::Error| ManagerError::Archive {
        path: archive.to_owned(),
        message: e.to_string(),
    };
    let file = fs::File::open(archive)
        .map_err(|e| ManagerError::io(format!("open {}", archive.display()), e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let mut total: u64 = 0;
    let mut members = 0usize;
    for entry in tar.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        members += 1;
        if members > MAX_MEMBERS {
            return Err(ManagerError::TooLarge {
                what: format!("member count of {}", archive.display()),
                limit: MAX_MEMBERS as u64,
            });
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| ManagerError::UnsafeArchiveMember {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let kind = entry.header().entry_type();
        let is_file = matches!(kind, EntryType::Regular);
        let is_dir = matches!(kind, EntryType::Directory);
        if kind.is_pax_global_extensions() {
            continue;
        }
        if !is_file && !is_dir {
            let what = match kind {
                EntryType::Symlink => "symbolic link",
                EntryType::Link => "hard link",
                EntryType::Char | EntryType::Block => "device file",
                EntryType::Fifo => "FIFO",
                _ => "unsupported member type",
            };
            return Err(refuse(what));
        }
        let raw = entry.path().map_err(archive_err)?;
        let rel = match member_path(&raw).map_err(|r| refuse(&r))? {
            Some(p) => p,
            None if is_dir => continue,
            None => return Err(refuse("empty path")),
        };
        let target = dest.join(&rel);
        if is_dir {
            match fs::DirBuilder::new().mode(0o700).create(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => {
                    return Err(ManagerError::io(
                        format!("create directory {}", target.display()),
                        e,
                    ));
                }
            }
            continue;
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(ManagerError::TooLarge {
                what: format!("extracted contents of {}", archive.display()),
                limit: max_bytes,
            });
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755 | 0o600;
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Members need their directory to be listed first; no implicit creation
            // through paths that could be links (links are refused anyway).
            let p = dest.join(parent);
            if !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                return Err(refuse("parent directory not in archive"));
            }
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    refuse("duplicate member")
                } else {
                    ManagerError::io(format!("create {}", target.display()), e)
                }
            })?;
        let copied = io::copy(&mut (&mut entry).take(size), &mut out).map_err(archive_err)?;
        if copied != size {
            return Err(ManagerError::Archive {
                path: archive.to_owned(),
                message: format!("member {name:?} is truncated ({copied} of {size} bytes)"),
            });
        }
        out.sync_all()
            .map_err(|e| ManagerError::io(format!("write {}", target.display()), e))?;
        drop(out);
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(|e| ManagerError::io(format!("set permissions of {}", target.display()), e))?;
    }
    // Read the rest of the stream so the gzip CRC and length trailer are checked.
    let inner = tar.into_inner();
    let rest = io::copy(
        &mut inner.take(max_bytes.saturating_add(1)),
        &mut io::sink(),
    )
    .map_err(archive_err)?;
    if total.saturating_add(rest) > max_bytes {
        return Err(ManagerError::TooLarge {
            what: format!("decompressed size of {}", archive.display()),
            limit: max_bytes,
        });
    }
    Ok(())
}
