//! Host-only `no_std` proof for `scout-core`.
//!
//! Built for the host target with the prebuilt (panic=unwind) `core`, started by
//! the C runtime through a C `main`, linked against libc only. Prints `ok` and
//! exits 0 when [`exercise`] returns 0.
#![no_std]
#![no_main]

use core::ffi::{c_char, c_int, c_void};

// The crate under test. `exercise` below calls into it.
#[allow(unused_imports)]
use scout_core as _;

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn abort() -> !;
}

fn print(s: &str) {
    // SAFETY: fd 1/2 and a valid (ptr, len) pair; a short write only shortens the message.
    unsafe {
        write(1, s.as_ptr().cast(), s.len());
    }
}

fn eprint(s: &str) {
    // SAFETY: as in `print`.
    unsafe {
        write(2, s.as_ptr().cast(), s.len());
    }
}

// ---------------------------------------------------------------------------
// >>> EXERCISE: fill in with real scout-core calls (sample a span, encode a
// >>> frame into a fixed buffer, decode it back, ...). Return 0 on success and a
// >>> distinct non-zero code for each failed check. Everything here must stay
// >>> allocation-free: there is no global allocator in this binary.
// ---------------------------------------------------------------------------
fn exercise() -> i32 {
    0
}
// ---------------------------------------------------------------------------

/// C entry point, called by `__libc_start_main`.
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    match exercise() {
        0 => {
            print("ok\n");
            0
        }
        code => {
            eprint("nostd-check: exercise() failed\n");
            code
        }
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    eprint("nostd-check: panic\n");
    // SAFETY: libc abort never returns.
    unsafe { abort() }
}

/// The prebuilt host `core` is compiled with panic=unwind and references this
/// symbol; stable Rust cannot define the lang item, so provide an empty stub.
/// It is never called: this binary is built with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Trivial critical-section implementation: this binary is single-threaded
/// and installs no signal handlers, so there is nothing to mask.
struct SingleThreaded;
critical_section::set_impl!(SingleThreaded);

// SAFETY: the process has exactly one thread and no interrupt/signal handlers
// touch scout-core state, so acquire/release need not do anything.
unsafe impl critical_section::Impl for SingleThreaded {
    unsafe fn acquire() -> critical_section::RawRestoreState {}
    unsafe fn release(_token: critical_section::RawRestoreState) {}
}
