//! Capturing the revision SHA at build time, for [`crate::InstallOptions::build_revision_sha`].
//!
//! In the application's `build.rs` (with `scout-std` as a build dependency):
//!
//! ```no_run
//! scout_std::build::emit_revision_sha();
//! ```
//!
//! and at install: `build_revision_sha: scout_std::build_revision_sha!()`.

/// Prints `cargo:rustc-env=SCOUT_BUILD_REVISION_SHA=<git rev-parse HEAD>` when run from a
/// build script in a git checkout; prints nothing otherwise.
pub fn emit_revision_sha() {
    let sha = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(sha) = sha {
        println!("cargo:rustc-env=SCOUT_BUILD_REVISION_SHA={sha}");
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
}

/// The SHA captured by [`emit_revision_sha`] in the calling crate, as `Option<String>`.
#[macro_export]
macro_rules! build_revision_sha {
    () => {
        option_env!("SCOUT_BUILD_REVISION_SHA").map(|s| s.to_owned())
    };
}
