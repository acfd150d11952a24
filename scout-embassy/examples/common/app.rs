//! The demo firmware's application code, shared verbatim by the host-run example, the
//! gateway end-to-end tests and the Cortex-M firmware in `firmware/`.
#![allow(dead_code)] // Not every includer uses every function.

use embassy_time::Timer;
use scout_core::Value;
use scout_embassy::{Agent, AgentConfig};

/// The device's agent. Firmware carries no Scout key: only its id and a device token.
pub(crate) static AGENT: Agent = Agent::new(
    AgentConfig::from_core(&scout_core::Config::new().span_limit(64))
        .device_id("demo-device")
        .firmware("demo-1.0")
        .token("demo-token"),
);

/// Waits until a link is attached (so that nothing is dropped as `no_link` at boot).
pub(crate) async fn wait_for_link() {
    while AGENT.stats().links == 0 {
        Timer::after_millis(5).await;
    }
}

/// Runs `count` sensor transactions, `period_ms` apart:
///
/// ```text
/// Job/read_sensor            (request tag iteration = i)
/// ├── I2C/read               (tag bytes = 6), ~300 µs
/// └── Filter/apply
///     └── Math/fft           ~200 µs
/// ```
pub(crate) async fn sensor_loop(count: u32, period_ms: u64) {
    for i in 0..count {
        let tx = AGENT.transaction("Job/read_sensor");
        {
            let _span = tx.span("I2C/read");
            Timer::after_micros(300).await;
            tx.tag_span("bytes", Value::Int(6));
        }
        {
            let _filter = tx.span("Filter/apply");
            let _fft = tx.span("Math/fft");
            Timer::after_micros(200).await;
        }
        tx.tag_request("iteration", Value::Int(i64::from(i)));
        tx.finish();
        Timer::after_millis(period_ms).await;
    }
}
