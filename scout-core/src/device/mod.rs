//! The compact device wire format (protocol version 2, postcard + COBS) shared by firmware and
//! the gateway.
//!
//! Devices running `scout-embassy` send their finished requests over any byte link (UART, USB
//! CDC, TCP) to a gateway, which turns them into core-agent commands. The format is specified
//! byte by byte in `docs/device-protocol.md`; in short:
//!
//! - **Framing.** Each message is [postcard]-encoded, then COBS-encoded and terminated by a
//!   `0x00` byte. A receiver ([`FrameReader`]) buffers at most `N` bytes per frame, skips an
//!   oversize frame up to the next `0x00`, and so resynchronises on the next frame after
//!   garbage.
//! - **Messages.** Device to gateway: [`Up`] — [`Hello`] (protocol version, device id,
//!   firmware revision, token, tick rate, uptime, span limit), [`NameDef`] (operation and tag
//!   names, sent once per connection and then referred to by small ids), a request as a
//!   [`Journal`], [`DeviceDrops`] and [`TimeSyncReply`]. Gateway to device: [`Down`] —
//!   welcome, reject and the time-sync request.
//! - **A request is a journal of events.** Its sequence number and start (ticks since boot),
//!   then the [`Event`]s the device recorded, in call order, back to back with no count:
//!   `Start` / `StartWith` (name id, ignore flags), `Stop`, `SpanTag`, `RequestTag`, and `End`
//!   last (with the number of spans and tags the device dropped). Times are deltas in ticks
//!   from the previous timed event, so they are small.
//! - **The device appends, the gateway replays.** The device's [`Recorder`] appends each
//!   call's event to a fixed `N`-byte buffer as the call happens: no span table, no rules, no
//!   encoding pass at the end. It keeps room for the `Stop` of every open span and for `End`,
//!   so what does not fit is dropped whole (a dropped start takes its subtree with it) and
//!   counted, and its frame always fits `N` bytes. The gateway checks the frame
//!   ([`decode_up`]) and replays the events into a core [`crate::Request`] ([`rebuild`]) with
//!   the calls a server makes, so ignore flags, the span limit (from the hello), tag
//!   replacement and capacities follow the core's rules exactly.
//! - **Size.** A span is two events, `Start` (variant, name id, delta) and `Stop` (variant,
//!   delta): usually 5 to 7 bytes with fewer than 128 names and microsecond ticks, at most 16
//!   (`StartWith` with name id 65 535 and deltas of 2³² − 1 ticks). A request adds its header
//!   (2 to 16 bytes), `End` (3 to 11) and 2 bytes of framing; COBS adds one byte per 254. A
//!   10-span request (children of 0.1-5 ms) takes 69 bytes, 6.9 bytes per span.
//!
//! **Two codecs, one format.** The device side needs no serde: [`FrameWriter`] is a
//! hand-written varint/zigzag/COBS writer of every message and event (the [`Recorder`]
//! appends its events with it), and [`DownReader`] (streaming) and [`decode_down`] read the
//! gateway's messages by hand. The gateway reads requests by hand too: [`decode_up`] checks
//! every event up to `End` and refuses bytes after it ([`DecodeError::Trailing`]);
//! [`ClockSync`] maps device ticks to wall-clock time. [`encode`] and [`decode_frame`] are
//! postcard's, for the gateway's [`Down`] messages. `scout-core/tests/device.rs` asserts that
//! the hand-written writer produces postcard's bytes, that [`decode_up`] accepts exactly what
//! postcard accepts, and that a recorder replayed at the gateway gives the request a server
//! records with the same calls. [`scan`] is the decoder's pure entry point for fuzzing.
//!
//! ```
//! use scout_core::device::{self, Event, FrameWriter, NameDef, NameSource, Recorder, Up, WireValue};
//! use scout_core::{Request, RequestIds, SpanFlags, Timestamp, Value};
//!
//! // A name definition: postcard's bytes (variant 1, id 1, the name), COBS, then 0x00.
//! let mut buf = [0u8; 64];
//! let name = Up::Name(NameDef { id: 1, name: "Job/read" });
//! let n = device::encode_up(&name, &mut buf).unwrap();
//! assert_eq!(&buf[..n], b"\x0c\x01\x01\x08Job/read\x00");
//! assert_eq!(device::decode_up(&mut buf[..n]), Ok(name));
//!
//! // A request recorded on a device: the root (name id 1) at 1 000 µs of uptime, a child
//! // (id 2) from 1 120 to 1 970 µs tagged `bytes` (id 3) = 6, finished at 2 400 µs.
//! let mut rec = Recorder::<64>::new();
//! rec.begin(1, 1_000);
//! rec.start_span(2, SpanFlags::NONE, 1_120);
//! rec.tag(false, 3, Value::Int(6));
//! rec.stop_span(1_970);
//! assert!(rec.finish(2_400, 7));
//! let mut w = FrameWriter::new(&mut buf);
//! rec.write_frame(&mut w);
//! let n = w.finish().unwrap();
//! assert_eq!(n, 23); // 2 spans in 23 bytes, framing included
//!
//! // The gateway reads the journal...
//! let Ok(Up::Request(journal)) = device::decode_up(&mut buf[..n]) else { panic!() };
//! assert_eq!((journal.seq, journal.start), (7, 1_000));
//! let events: Vec<Event<'_>> = journal.events().collect();
//! assert_eq!(events, [
//!     Event::Start { name: 1, delta: 0 },
//!     Event::Start { name: 2, delta: 120 },
//!     Event::SpanTag { key: 3, value: WireValue::Int(6) },
//!     Event::Stop { delta: 850 },
//!     Event::End { delta: 430, dropped: 0 },
//! ]);
//!
//! // ...and replays it into a core request (here with device ticks as wall-clock µs).
//! struct Names;
//! impl NameSource for Names {
//!     fn name(&self, id: u16) -> Option<&str> {
//!         ["Job/read", "I2C/read", "bytes"].get(usize::from(id).checked_sub(1)?).copied()
//!     }
//! }
//! let mut req: Box<Request> = Box::default();
//! let dropped = device::rebuild(&journal, &Names, RequestIds::default(), 1500, Timestamp, &mut req);
//! assert_eq!(dropped, Ok(0));
//! let spans: Vec<_> = req.spans().map(|s| (s.operation(), s.start_time().0, s.duration_us())).collect();
//! assert_eq!(spans, [("I2C/read", 1_120, 850), ("Job/read", 1_000, 1_400)]);
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
