//! A polling driver for UART0 of the LM3S6965 (an ARM PL011 at `0x4000_C000`) implementing
//! embedded-io-async. Writes wait for FIFO room (QEMU drains it at once); reads return what the
//! receive FIFO holds and otherwise poll it every millisecond, so the core sleeps in between.
// Register access is the only unsafe code in the firmware.
#![allow(unsafe_code)]

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_time::Timer;

const BASE: usize = 0x4000_C000;
/// Data register.
const DR: usize = 0x000;
/// Flag register.
const FR: usize = 0x018;
/// Line control: 8 data bits (WLEN = 0b11), FIFOs on (FEN).
const LCRH: usize = 0x02C;
/// Control: UART, transmitter and receiver on.
const CR: usize = 0x030;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const LCRH_8N1_FIFO: u32 = (0b11 << 5) | (1 << 4);
const CR_ENABLE: u32 = (1 << 9) | (1 << 8) | 1;

fn read_reg(offset: usize) -> u32 {
    // SAFETY: an aligned PL011 register of UART0, which only this module accesses; reads
    // have no side effect other than popping the receive FIFO (DR), which is intended.
    unsafe { core::ptr::read_volatile((BASE + offset) as *const u32) }
}

fn write_reg(offset: usize, value: u32) {
    // SAFETY: as in `read_reg`; writes to DR push the transmit FIFO, LCRH/CR configure UART0.
    unsafe { core::ptr::write_volatile((BASE + offset) as *mut u32, value) }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Configures UART0 (8N1, FIFOs on; QEMU ignores the baud rate) and returns its two halves,
/// once.
pub(crate) fn take() -> Option<(UartRx, UartTx)> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    write_reg(CR, 0);
    write_reg(LCRH, LCRH_8N1_FIFO);
    write_reg(CR, CR_ENABLE);
    Some((UartRx(()), UartTx(())))
}

/// UART0's receive half.
#[derive(Debug)]
pub(crate) struct UartRx(());

/// UART0's transmit half.
#[derive(Debug)]
pub(crate) struct UartTx(());

impl embedded_io_async::ErrorType for UartRx {
    type Error = Infallible;
}

impl embedded_io_async::ErrorType for UartTx {
    type Error = Infallible;
}

impl embedded_io_async::Read for UartRx {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mut n = 0;
            for b in buf.iter_mut() {
                if read_reg(FR) & FR_RXFE != 0 {
                    break;
                }
                *b = read_reg(DR) as u8;
                n += 1;
            }
            if n > 0 {
                return Ok(n);
            }
            Timer::after_millis(1).await;
        }
    }
}

impl embedded_io_async::Write for UartTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while read_reg(FR) & FR_TXFF != 0 {}
            write_reg(DR, u32::from(b));
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
