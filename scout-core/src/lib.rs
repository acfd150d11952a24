//! scout-core (work in progress)
#![no_std]
