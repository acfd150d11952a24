//! Starting Scout's core agent in the background at install (download, verify, launch), off
//! the application's path.

use crate::manager::{self, ManagerConfig};
use scout_core::Config;
use std::path::PathBuf;

/// The manager's settings from the agent's configuration.
pub fn manager_config(c: &Config) -> ManagerConfig {
    let path = |s: &str| PathBuf::from(s);
    ManagerConfig {
        core_agent_dir: path(c.core_agent_dir.as_str()),
        core_agent_version: c.core_agent_version.as_str().to_owned(),
        core_agent_triple: c.core_agent_triple.map(|t| t.as_str().to_owned()),
        core_agent_full_name: c.core_agent_full_name.map(|t| t.as_str().to_owned()),
        download_url: c.download_url.as_str().to_owned(),
        core_agent_download: c.core_agent_download,
        core_agent_launch: c.core_agent_launch,
        core_agent_permissions: c.core_agent_permissions,
        socket_address: c.core_agent_socket_path.as_str().to_owned(),
        log_level: c.core_agent_log_level.as_str().to_owned(),
        log_file: c.core_agent_log_file.map(|p| path(p.as_str())),
        config_file: c.core_agent_config_file.map(|p| path(p.as_str())),
        ca_cert: c.core_agent_ca_cert.map(|p| path(p.as_str())),
        ..ManagerConfig::default()
    }
}

/// Runs the manager on its own thread; failures are logged and the application runs on.
pub(crate) fn spawn_manager(config: &Config) {
    let m = manager_config(config);
    let spawned = std::thread::Builder::new().name("scout-core-agent-manager".into()).spawn(move || {
        match manager::ensure_running(&m) {
            Ok(outcome) => log::info!(target: "scout_apm", "core agent: {outcome:?}"),
            Err(e) => log::error!(target: "scout_apm", "core agent not started: {e}; data stays queued until one answers"),
        }
    });
    if let Err(e) = spawned {
        log::error!(target: "scout_apm", "cannot start the core agent manager thread: {e}");
    }
}
