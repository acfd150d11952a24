//! Crate-private logging: forwards to defmt on bare-metal targets when the `defmt` feature is
//! on, and compiles to nothing otherwise (host builds never need a defmt global logger).

#[cfg(all(feature = "defmt", target_os = "none"))]
macro_rules! log_debug {
    ($($arg:tt)*) => { defmt::debug!($($arg)*) };
}
#[cfg(not(all(feature = "defmt", target_os = "none")))]
macro_rules! log_debug {
    ($($arg:tt)*) => {{}};
}

#[cfg(all(feature = "defmt", target_os = "none"))]
macro_rules! log_warn {
    ($($arg:tt)*) => { defmt::warn!($($arg)*) };
}
#[cfg(not(all(feature = "defmt", target_os = "none")))]
macro_rules! log_warn {
    ($($arg:tt)*) => {{}};
}

pub(crate) use {log_debug, log_warn};
