//! Demo firmware for QEMU's `lm3s6965evb` (Cortex-M3): the shared demo application
//! (`scout-embassy/examples/common/app.rs`, the same code the host example and the gateway
//! tests run) records `COUNT` sensor transactions `PERIOD_MS` apart with scout-embassy, whose
//! link task sends them over UART0 to a gateway; then the firmware exits through semihosting
//! (0 when every request was queued and written, 1 otherwise).
//!
//! With the `no-agent` feature the same application runs against no-op stubs, and the link
//! task only echoes the UART (the same board glue without the agent), which measures what the
//! agent adds (see `scripts/firmware.sh`).
#![no_std]
#![no_main]

#[path = "../../scout-embassy/examples/common/app.rs"]
mod app;
mod time_driver;
mod uart;

use cortex_m_semihosting::debug;
use embassy_executor::Spawner;
use embassy_time::Timer;

/// Transactions to record before exiting.
const COUNT: u32 = 10;
/// Pause between transactions.
const PERIOD_MS: u64 = 20;

#[cfg(not(feature = "no-agent"))]
#[embassy_executor::task]
async fn link(rx: uart::UartRx, tx: uart::UartTx) {
    // One link for the whole run: a UART does not reconnect.
    let _end = app::AGENT.run_link(rx, tx).await;
}

/// Without the agent, the same board glue: a link task driving the UART (reads, writes and
/// flushes, here an echo), so that the size difference is the agent's code alone.
#[cfg(feature = "no-agent")]
#[embassy_executor::task]
async fn link(mut rx: uart::UartRx, mut tx: uart::UartTx) {
    use embedded_io_async::{Read, Write};
    let mut buf = [0u8; 8];
    while let Ok(n) = rx.read(&mut buf).await {
        let echo = buf.get(..n).unwrap_or(&[]);
        if n == 0 || tx.write_all(echo).await.is_err() || tx.flush().await.is_err() {
            break;
        }
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    time_driver::init();
    let Some((rx, tx)) = uart::take() else {
        exit(false)
    };
    spawner.spawn(link(rx, tx).expect("link task"));

    app::wait_for_link().await;
    app::sensor_loop(COUNT, PERIOD_MS).await;

    // The link writes synchronously, so no pending request means every frame left the UART.
    while app::AGENT.pending() > 0 {
        Timer::after_millis(1).await;
    }
    exit(all_sent())
}

#[cfg(not(feature = "no-agent"))]
fn all_sent() -> bool {
    let s = app::AGENT.stats();
    let d = &s.drops;
    // No drop of any kind (an OR of the counters: cheaper than their 64-bit `total`).
    let dropped = d.queue_full | d.no_link | d.too_large | d.no_slot | d.items | d.names;
    s.queued == COUNT && (dropped | d.link_errors) == 0
}

#[cfg(feature = "no-agent")]
fn all_sent() -> bool {
    true
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (e.g. on hardware): idle.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    exit(false)
}
