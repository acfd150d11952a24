//! `scout-gateway`: relays `scout-embassy` devices to the Scout core agent.
//!
//! ```text
//! scout-gateway --core-agent tcp://127.0.0.1:6590 --app NAME --key KEY \
//!     [--tcp 0.0.0.0:7070]... [--serial /dev/ttyACM0]... \
//!     [--fleet-token TOKEN] [--device ID=TOKEN]... [--sync-interval-ms 10000]
//! ```
//!
//! `--key` and `--app` default to `SCOUT_KEY` and `SCOUT_NAME`; `--core-agent` to
//! `SCOUT_CORE_AGENT_SOCKET_PATH`, then `tcp://127.0.0.1:6590`. Prints `listening on ADDR` for
//! each TCP listener. Serial devices must be configured beforehand (`stty -F PATH 115200 raw`).

use scout_std::gateway;

use std::time::Duration;

use gateway::{Gateway, GatewayConfig};

fn usage() -> ! {
    eprintln!(
        "usage: scout-gateway [--core-agent ADDR] [--app NAME] [--key KEY] [--tcp ADDR]... \
         [--serial PATH]... [--fleet-token TOKEN] [--device ID=TOKEN]... [--sync-interval-ms N]"
    );
    std::process::exit(2);
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let mut config = GatewayConfig::new(
        &env("SCOUT_NAME").unwrap_or_default(),
        &env("SCOUT_KEY").unwrap_or_default(),
        &env("SCOUT_CORE_AGENT_SOCKET_PATH").unwrap_or_else(|| "tcp://127.0.0.1:6590".into()),
    );
    let mut tcp = Vec::new();
    let mut serial = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--core-agent" => config.core_agent = value(),
            "--app" => config.app = value(),
            "--key" => config.key = value(),
            "--tcp" => tcp.push(value()),
            "--serial" => serial.push(value()),
            "--fleet-token" => config.fleet_token = Some(value()),
            "--device" => {
                let v = value();
                let Some((id, token)) = v.split_once('=') else {
                    usage()
                };
                config.device_tokens.insert(id.into(), token.into());
            }
            "--sync-interval-ms" => {
                let ms = value().parse().unwrap_or_else(|_| usage());
                config.sync_interval = Duration::from_millis(ms);
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if tcp.is_empty() && serial.is_empty() {
        eprintln!("scout-gateway: give at least one --tcp or --serial");
        usage();
    }
    if config.device_tokens.is_empty() && config.fleet_token.is_none() {
        eprintln!("scout-gateway: no --device or --fleet-token: every device will be rejected");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scout-gateway: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let gw = Gateway::new(config);
        let mut tasks = tokio::task::JoinSet::new();
        for addr in tcp {
            let listener = match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("scout-gateway: cannot listen on {addr}: {e}");
                    return 1;
                }
            };
            if let Ok(a) = listener.local_addr() {
                println!("listening on {a}");
            }
            let gw = gw.clone();
            tasks.spawn(async move {
                if let Err(e) = gw.serve_tcp(listener).await {
                    eprintln!("scout-gateway: accept failed: {e}");
                }
            });
        }
        for path in serial {
            println!("serving {path}");
            tasks.spawn(gw.clone().serve_serial(path));
        }
        tokio::select! {
            _ = tasks.join_next() => 1,
            _ = tokio::signal::ctrl_c() => 0,
        }
    });
    std::process::exit(code);
}
