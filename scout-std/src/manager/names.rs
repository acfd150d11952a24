//! Platform triple, full name, download URL and working directory (spec §2.1, §2.2, §2.6).

use std::path::PathBuf;

use super::ManagerConfig;

/// Maps an OS machine name and OS name (as in `std::env::consts`) to a core agent triple.
///
/// Architecture: `i686`/`x86` -> `i686`, `x86_64` -> `x86_64`, `aarch64`/`arm64` -> `aarch64`,
/// anything else `unknown`. OS: `linux` -> `unknown-linux-musl` (always musl), `macos` ->
/// `apple-darwin`, anything else `unknown`. `aarch64-apple-darwin` becomes `x86_64-apple-darwin`
/// (Apple Silicon runs the x86_64 build).
pub fn triple_for(arch: &str, os: &str) -> String {
    let arch = match arch {
        "i686" | "x86" => "i686",
        "x86_64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        _ => "unknown",
    };
    let os = match os {
        "linux" | "Linux" => "unknown-linux-musl",
        "macos" | "Darwin" => "apple-darwin",
        _ => "unknown",
    };
    let triple = format!("{arch}-{os}");
    if triple == "aarch64-apple-darwin" {
        "x86_64-apple-darwin".to_owned()
    } else {
        triple
    }
}

/// The triple of the platform this program runs on.
pub fn detect_triple() -> String {
    triple_for(std::env::consts::ARCH, std::env::consts::OS)
}

/// True if `triple` is one the download host publishes (spec §2.6).
pub fn is_valid_triple(triple: &str) -> bool {
    const ARCHES: [&str; 4] = ["i686", "x86_64", "aarch64", "unknown"];
    const OSES: [&str; 4] = [
        "unknown-linux-gnu",
        "unknown-linux-musl",
        "apple-darwin",
        "unknown",
    ];
    triple != "aarch64-apple-darwin"
        && ARCHES.iter().any(|a| {
            triple
                .strip_prefix(a)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|os| OSES.contains(&os))
        })
}

/// The configured triple, or the detected one. An invalid configured triple is only warned about.
pub fn triple(cfg: &ManagerConfig) -> String {
    match &cfg.core_agent_triple {
        Some(t) => {
            if !is_valid_triple(t) {
                log::warn!(
                    "scout core agent: core_agent_triple {t:?} is not a known triple; using it anyway"
                );
            }
            t.clone()
        }
        None => detect_triple(),
    }
}

/// `core_agent_full_name`, or `scout_apm_core-<version>-<triple>`.
pub fn full_name(cfg: &ManagerConfig) -> String {
    match &cfg.core_agent_full_name {
        Some(n) => n.clone(),
        None => format!("scout_apm_core-{}-{}", cfg.core_agent_version, triple(cfg)),
    }
}

/// `<download_url>/<full name>.tgz`, without a double slash when `download_url` ends with `/`.
pub fn download_url(cfg: &ManagerConfig) -> String {
    format!(
        "{}/{}.tgz",
        cfg.download_url.trim_end_matches('/'),
        full_name(cfg)
    )
}

/// The working directory `<core_agent_dir>/<full name>`.
pub fn working_dir(cfg: &ManagerConfig) -> PathBuf {
    cfg.core_agent_dir.join(full_name(cfg))
}

/// True if `name` can be used as a single path component (no `/`, not `.`/`..`, not empty).
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triples() {
        assert_eq!(triple_for("x86_64", "linux"), "x86_64-unknown-linux-musl");
        assert_eq!(triple_for("aarch64", "linux"), "aarch64-unknown-linux-musl");
        assert_eq!(triple_for("arm64", "linux"), "aarch64-unknown-linux-musl");
        assert_eq!(triple_for("i686", "linux"), "i686-unknown-linux-musl");
        assert_eq!(triple_for("x86_64", "macos"), "x86_64-apple-darwin");
        assert_eq!(triple_for("aarch64", "macos"), "x86_64-apple-darwin");
        assert_eq!(triple_for("riscv64", "linux"), "unknown-unknown-linux-musl");
        assert_eq!(triple_for("x86_64", "windows"), "x86_64-unknown");
        assert!(is_valid_triple("x86_64-unknown-linux-gnu"));
        assert!(is_valid_triple("unknown-unknown"));
        assert!(!is_valid_triple("aarch64-apple-darwin"));
        assert!(!is_valid_triple("x86_64-pc-windows-msvc"));
    }

    #[test]
    fn names_and_url() {
        let mut cfg = ManagerConfig {
            core_agent_triple: Some("x86_64-unknown-linux-musl".into()),
            ..ManagerConfig::default()
        };
        assert_eq!(
            full_name(&cfg),
            "scout_apm_core-v1.6.0-x86_64-unknown-linux-musl"
        );
        assert_eq!(
            download_url(&cfg),
            "https://s3-us-west-1.amazonaws.com/scout-public-downloads/apm_core_agent/release/scout_apm_core-v1.6.0-x86_64-unknown-linux-musl.tgz"
        );
        cfg.download_url = "http://h/x/".into();
        cfg.core_agent_full_name = Some("custom".into());
        assert_eq!(download_url(&cfg), "http://h/x/custom.tgz");
        assert_eq!(
            working_dir(&cfg),
            PathBuf::from("/tmp/scout_apm_core/custom")
        );
    }
}
