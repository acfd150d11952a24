//! End to end over a pseudo-terminal: the demo firmware writes to the pty's master side as it
//! would to a UART, the gateway serves the slave side as a serial device path.

mod support;

#[path = "../../scout-embassy/examples/common/app.rs"]
mod app;
use scout_std::gateway;

use std::time::Duration;

use embassy_executor::Executor;
use embedded_io_adapters::tokio_1::FromTokio;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use scout_std::local_agent::Address;

const COUNT: u32 = 8;

#[embassy_executor::task]
async fn device_link(master: std::fs::File) {
    // Runs inside the tokio runtime context entered by the executor's thread.
    let r = FromTokio::new(tokio::fs::File::from_std(master.try_clone().unwrap()));
    let w = FromTokio::new(tokio::fs::File::from_std(master));
    let end = app::AGENT.run_link(r, w).await;
    eprintln!("device link ended: {end:?}");
}

#[embassy_executor::task]
async fn device_main() {
    app::wait_for_link().await;
    app::sensor_loop(COUNT, 10).await;
}

#[test]
fn device_spans_reach_the_core_agent_over_a_pty() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut t = tcgetattr(&pty.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
    let path = nix::unistd::ttyname(&pty.slave)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let master = std::fs::File::from(pty.master);
    let rt = support::runtime(2);
    let handle = rt.handle().clone();
    rt.block_on(async {
        let agent = support::start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()).await;
        let mut config =
            gateway::GatewayConfig::new("DeviceApp", "KEY123", &agent.address().to_string());
        config.fleet_token = Some("demo-token".into());
        let gw = gateway::Gateway::new(config);
        tokio::spawn(gw.clone().serve_serial(path));
        std::thread::spawn(move || {
            // tokio's file I/O needs the runtime context on the thread that polls it.
            let _rt = handle.enter();
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            executor.run(move |spawner| {
                spawner.spawn(device_link(master).unwrap());
                spawner.spawn(device_main().unwrap());
            });
        });
        assert!(
            agent
                .wait_for_requests(u64::from(COUNT), Duration::from_secs(20))
                .await,
            "only {} requests arrived; gateway stats {:?}",
            agent.requests().len(),
            gw.stats()
        );
        for r in agent.requests() {
            assert_eq!(r.operation.as_deref(), Some("Job/read_sensor"));
            assert_eq!(r.spans.len(), 4);
            let fft = r.spans.iter().find(|s| s.operation == "Math/fft").unwrap();
            let filter = r
                .spans
                .iter()
                .find(|s| s.operation == "Filter/apply")
                .unwrap();
            assert_eq!(fft.parent_id.as_ref(), Some(&filter.id));
        }
        let dev = &gw.stats()["demo-device"];
        assert_eq!(
            (dev.forwarded, dev.bad_frames, dev.lost),
            (u64::from(COUNT), 0, 0)
        );
        agent.shutdown().await;
    });
    // Blocking reads of the device links never return by themselves: do not wait for them.
    rt.shutdown_background();
    drop(pty.slave);
}
