//! The compact device wire format (postcard + COBS) shared by firmware and the gateway.
//!
//! Devices running `scout-embassy` send their finished requests over any byte link (UART, USB
//! CDC, TCP) to a gateway, which turns them into core-agent commands. The format is specified
//! byte by byte in `docs/device-protocol.md`; in short:
//!
//! - **Framing.** Each message is [postcard]-encoded, then COBS-encoded and terminated by a
//!   `0x00` byte ([`encode`]). A receiver ([`FrameReader`]) buffers at most `N` bytes per frame,
//!   skips an oversize frame up to the next `0x00`, and so resynchronises on the next frame
//!   after garbage.
//! - **Messages.** Device to gateway: [`Up`] — [`Hello`] (protocol version, device id,
//!   firmware revision, token, tick rate, uptime), [`NameDef`] (operation and tag names, sent
//!   once per connection and then referred to by small ids), [`WireRequest`] (spans as parent
//!   index, name id, start offset, duration; tags), [`DeviceDrops`] and [`TimeSyncReply`].
//!   Gateway to device: [`Down`] — welcome, reject and the time-sync request.
//! - **Size.** A span is 4 to 14 bytes: 1 byte of parent, a varint name id (1 byte below
//!   128 names), and varint start offset and duration in ticks. A request adds about 10 bytes.
//!
//! **Two codecs, one format.** The device side needs no serde: [`Recorder`] records a request
//! in fixed tables and writes it with [`FrameWriter`], a hand-written varint/zigzag/COBS
//! writer that also writes the other device messages, and [`DownReader`] (streaming) and
//! [`decode_down`] read the gateway's messages by hand. The gateway side decodes with postcard ([`decode_up`], [`FrameReader`]),
//! checks with [`validate`], maps times with [`ClockSync`] and rebuilds a request with
//! [`rebuild`]; [`encode`] is postcard's encoder, and [`RequestFrame`] streams a core
//! [`crate::Request`] through it. Both writers produce the same bytes (asserted in
//! `scout-core/tests/device.rs`). [`scan`] is the decoder's pure entry point for fuzzing.
//!
//! ```
//! use scout_core::device::{self, Up, NameDef};
//! let mut buf = [0u8; 32];
//! let n = device::encode(&Up::Name(NameDef { id: 1, name: "Job/read" }), &mut buf).unwrap();
//! assert_eq!(&buf[..n], &[0x0c, 0x01, 0x01, 0x08, b'J', b'o', b'b', b'/', b'r', b'e', b'a', b'd', 0x00]);
//! let msg: Up<'_> = device::decode_up(&mut buf[..n]).unwrap();
//! assert_eq!(msg, Up::Name(NameDef { id: 1, name: "Job/read" }));
//! ```
//!
//! [postcard]: https://postcard.jamesmunns.com/wire-format

mod codec;
mod encode;
mod frame;
mod rebuild;
mod record;
mod wire;

pub use codec::{
    DecodeError, EncodeError, FrameReader, MAX_FRAME, ScanStats, decode_frame, encode, scan,
};
pub use encode::{MICROS_HZ, NameLookup, NameTable};
pub use frame::{DownReader, Events, FrameWriter, decode_down, decode_up, encode_up};
pub use rebuild::{ClockSync, InvalidRequest, NameSource, rebuild};
pub use record::Recorder;
pub use wire::{
    DeviceDrops, Down, Event, Hello, Journal, NO_NAME, NameDef, PROTOCOL_VERSION, RejectReason,
    TimeSyncReply, UNNAMED, Up, WireValue,
};
