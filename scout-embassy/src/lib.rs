//! Scout APM agent for Embassy firmware (work in progress).
#![no_std]
