//! The device's own codec: a hand-written frame writer that produces exactly the bytes of
//! postcard + COBS (see [`super::encode`]), and a hand-written decoder of the gateway's
//! [`Down`] messages. Neither uses serde or postcard, so a firmware that records with
//! [`super::Recorder`] and speaks through these two links none of their code.
//!
//! The byte-for-byte equality with postcard is asserted in `scout-core/tests/device.rs`.

use super::codec::{DecodeError, EncodeError};
use super::wire::{
    DeviceDrops, Down, Event, Hello, Journal, NameDef, RejectReason, TimeSyncReply, Up, WireValue,
};

/// Writes one frame: postcard's encoding of the values written (varint integers, zigzag for
/// signed ones, raw `u8`, length-prefixed strings), COBS-encoded on the fly into a byte slice,
/// then the `0x00` delimiter ([`FrameWriter::finish`]).
///
/// Writing never fails and never panics: bytes past the end of the slice are counted but not
/// stored, [`FrameWriter::len`] tells how long the frame would be, and
/// [`FrameWriter::finish`] reports whether it fit. Write exactly one message per frame, with
/// the message methods ([`FrameWriter::hello`], [`FrameWriter::request`], …) or, for a
/// message streamed from elsewhere (a [`super::Recorder`]), field by field in the order of
/// the message's definition.
///
/// ```
/// use scout_core::device::{FrameWriter, NameDef};
/// let mut buf = [0u8; 32];
/// let mut w = FrameWriter::new(&mut buf);
/// w.name(&NameDef { id: 1, name: "Job/read" });
/// let n = w.finish().unwrap();
/// assert_eq!(&buf[..n], &[0x0c, 0x01, 0x01, 0x08, b'J', b'o', b'b', b'/', b'r', b'e', b'a', b'd', 0x00]);
/// ```
#[derive(Debug)]
pub struct FrameWriter<'b> {
    buf: &'b mut [u8],
    /// Offset of the current COBS block's code byte.
    code: usize,
    /// Offset of the next data byte.
    pos: usize,
    /// No COBS: the values' bytes as they are (see [`FrameWriter::plain`]).
    plain: bool,
}

impl<'b> FrameWriter<'b> {
    /// A writer of one frame at the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            code: 0,
            pos: 1,
            plain: false,
        }
    }

    /// A writer of postcard bytes without COBS, from index `at` of `buf` (how a
    /// [`super::Recorder`] appends events): bytes past the end are counted, not stored; read
    /// the end with [`FrameWriter::position`]. Not for [`FrameWriter::finish`].
    pub fn plain(buf: &'b mut [u8], at: usize) -> Self {
        Self {
            buf,
            code: 0,
            pos: at,
            plain: true,
        }
    }

    /// Index of the next byte (for a [`FrameWriter::plain`] writer, the end of what was
    /// written, whether or not it fit).
    pub fn position(&self) -> usize {
        self.pos
    }

    fn put(&mut self, at: usize, b: u8) {
        if let Some(slot) = self.buf.get_mut(at) {
            *slot = b;
        }
    }

    /// Ends the current COBS block (its code byte is its length plus one).
    fn close(&mut self) {
        let len = self.pos.wrapping_sub(self.code);
        self.put(self.code, len as u8);
        self.code = self.pos;
        self.pos = self.pos.saturating_add(1);
    }

    /// One raw byte (postcard's `u8` and `bool`).
    pub fn u8(&mut self, b: u8) {
        if self.plain {
            self.put(self.pos, b);
            self.pos = self.pos.saturating_add(1);
        } else if b == 0 {
            self.close();
        } else {
            self.put(self.pos, b);
            self.pos = self.pos.saturating_add(1);
            if self.pos.wrapping_sub(self.code) == 0xFF {
                self.close();
            }
        }
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.u8(x);
        }
    }

    /// An unsigned integer as a LEB128 varint (postcard's `u16`, `u32`, enum variant
    /// indices).
    pub fn varint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.u8(v as u8);
    }

    /// A `u64` (or a length) as a LEB128 varint.
    pub fn varint64(&mut self, mut v: u64) {
        // While more than 32 bits are left, more bytes follow.
        while v > u64::from(u32::MAX) {
            self.u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.varint(v as u32);
    }

    /// A signed integer, zigzag-encoded then as a varint (postcard's `i64`).
    pub fn zigzag(&mut self, v: i64) {
        self.varint64(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A string: its length as a varint, then its bytes (UTF-8 is the caller's business).
    pub fn text(&mut self, s: &[u8]) {
        self.varint64(s.len() as u64);
        self.bytes(s);
    }

    /// Length of the frame written so far, delimiter included, whether or not it fits.
    #[allow(clippy::len_without_is_empty)] // A frame is never empty.
    pub fn len(&self) -> usize {
        self.pos.saturating_add(1)
    }

    /// Ends the frame: writes the last code byte and the delimiter. Returns the frame length,
    /// or an error when it does not fit (the bytes within the limit then hold garbage). Call
    /// it once.
    pub fn finish(&mut self) -> Result<usize, EncodeError> {
        let end = self.pos;
        self.close();
        self.put(end, 0);
        if end < self.buf.len() {
            Ok(end + 1)
        } else {
            Err(EncodeError)
        }
    }

    /// [`Up::Hello`], variant 0.
    pub fn hello(&mut self, h: &Hello<'_>) {
        self.u8(0);
        self.u8(h.version);
        self.text(h.device_id.as_bytes());
        self.text(h.firmware.as_bytes());
        self.text(h.token.as_bytes());
        self.varint(h.tick_hz);
        self.varint64(h.uptime);
        self.varint(h.span_limit);
    }

    /// [`Up::Name`], variant 1.
    pub fn name(&mut self, d: &NameDef<'_>) {
        self.u8(1);
        self.varint(u32::from(d.id));
        self.text(d.name.as_bytes());
    }

    /// The header of [`Up::Request`] (variant 2): sequence number and start. The events
    /// follow, as [`FrameWriter::event`]s or their bytes.
    pub fn request_header(&mut self, seq: u32, start: u64) {
        self.u8(2);
        self.varint(seq);
        self.varint64(start);
    }

    /// [`Up::Request`], variant 2: the header and the journal's events.
    pub fn request(&mut self, j: &Journal<'_>) {
        self.request_header(j.seq, j.start);
        self.bytes(j.events);
    }

    /// One event of a request.
    pub fn event(&mut self, e: &Event<'_>) {
        match *e {
            Event::Stop { delta } => {
                self.u8(0);
                self.varint(delta);
            }
            Event::Start { name, delta } => {
                self.u8(1);
                self.varint(u32::from(name));
                self.varint(delta);
            }
            Event::StartWith { name, flags, delta } => {
                self.u8(2);
                self.varint(u32::from(name));
                self.u8(flags);
                self.varint(delta);
            }
            Event::SpanTag { key, value } | Event::RequestTag { key, value } => {
                self.u8(if matches!(e, Event::SpanTag { .. }) {
                    3
                } else {
                    4
                });
                self.varint(u32::from(key));
                self.value(&value);
            }
            Event::End { delta, dropped } => {
                self.u8(5);
                self.varint(delta);
                self.varint(dropped);
            }
        }
    }

    /// A tag value.
    pub fn value(&mut self, v: &WireValue<'_>) {
        match *v {
            WireValue::Null => self.u8(0),
            WireValue::Bool(b) => {
                self.u8(1);
                self.u8(u8::from(b));
            }
            WireValue::Int(i) => {
                self.u8(2);
                self.zigzag(i);
            }
            WireValue::Float(f) => {
                self.u8(3);
                self.bytes(&f.to_le_bytes());
            }
            WireValue::Str(s) => {
                self.u8(4);
                self.text(s.as_bytes());
            }
        }
    }

    /// [`Up::Drops`], variant 3.
    pub fn drops(&mut self, d: &DeviceDrops) {
        self.drop_counts(&d.counts());
    }

    /// [`Up::Drops`] from [`DeviceDrops::counts`] (for a caller that already has them).
    pub fn drop_counts(&mut self, counts: &[u32; 7]) {
        self.u8(3);
        for &v in counts {
            self.varint(v);
        }
    }

    /// [`Up::TimeSync`], variant 4.
    pub fn time_sync(&mut self, r: &TimeSyncReply) {
        self.u8(4);
        self.varint(r.id);
        self.varint64(r.uptime);
    }

    /// Any device-to-gateway message.
    pub fn up(&mut self, m: &Up<'_>) {
        match m {
            Up::Hello(h) => self.hello(h),
            Up::Name(d) => self.name(d),
            Up::Request(r) => self.request(r),
            Up::Drops(d) => self.drops(d),
            Up::TimeSync(r) => self.time_sync(r),
        }
    }

    /// Any gateway-to-device message.
    pub fn down(&mut self, m: &Down) {
        match *m {
            Down::Welcome { version } => {
                self.u8(0);
                self.u8(version);
            }
            Down::Reject { reason } => {
                self.u8(1);
                self.u8(match reason {
                    RejectReason::Unauthorized => 0,
                    RejectReason::Version => 1,
                    RejectReason::Protocol => 2,
                });
            }
            Down::TimeSync { id } => {
                self.u8(2);
                self.varint(id);
            }
        }
    }
}

/// Encodes one device-to-gateway message as a frame with [`FrameWriter`] (no serde): the same
/// bytes as [`super::encode`]. Returns the frame length.
pub fn encode_up(msg: &Up<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = FrameWriter::new(buf);
    w.up(msg);
    w.finish()
}

/// Decodes COBS in place (`frame` without delimiter) with the rules of [`cobs::decode_in_place`],
/// refusing any `0x00`; returns the payload length.
fn cobs_decode(frame: &mut [u8]) -> Option<usize> {
    let len = frame.len();
    if len == 0 {
        return None;
    }
    let (mut src, mut dst) = (0usize, 0usize);
    while src < len {
        let code = usize::from(*frame.get(src)?);
        if code == 0 || (code != 1 && src + code > len) {
            return None;
        }
        src += 1;
        for _ in 1..code {
            let b = *frame.get(src)?;
            if b == 0 {
                return None;
            }
            *frame.get_mut(dst)? = b;
            src += 1;
            dst += 1;
        }
        if code != 0xFF && src < len {
            *frame.get_mut(dst)? = 0;
            dst += 1;
        }
    }
    Some(dst)
}

/// Reads postcard's primitives from a decoded payload, by hand, with postcard's rules.
#[derive(Debug, Clone)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// A varint of at most `max` bytes whose last byte is at most `last` when it is the
    /// `max`th (postcard's bound on the type's bits).
    fn varint(&mut self, max: usize, last: u8) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..max {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max || b <= last).then_some(out);
            }
        }
        None
    }

    fn u16(&mut self) -> Option<u16> {
        self.varint(3, 0x03).map(|v| v as u16)
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0F).map(|v| v as u32)
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    fn text(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.u64()?).ok()?;
        if n > self.rest.len() {
            return None;
        }
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        core::str::from_utf8(s).ok()
    }

    fn value(&mut self) -> Option<WireValue<'a>> {
        Some(match self.u32()? {
            0 => WireValue::Null,
            1 => WireValue::Bool(match self.byte()? {
                0 => false,
                1 => true,
                _ => return None,
            }),
            2 => {
                let z = self.u64()?;
                WireValue::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            3 => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = self.byte()?;
                }
                WireValue::Float(f64::from_le_bytes(b))
            }
            4 => WireValue::Str(self.text()?),
            _ => return None,
        })
    }

    fn event(&mut self) -> Option<Event<'a>> {
        Some(match self.u32()? {
            0 => Event::Stop { delta: self.u32()? },
            1 => Event::Start {
                name: self.u16()?,
                delta: self.u32()?,
            },
            2 => Event::StartWith {
                name: self.u16()?,
                flags: self.byte()?,
                delta: self.u32()?,
            },
            3 => Event::SpanTag {
                key: self.u16()?,
                value: self.value()?,
            },
            4 => Event::RequestTag {
                key: self.u16()?,
                value: self.value()?,
            },
            5 => Event::End {
                delta: self.u32()?,
                dropped: self.u32()?,
            },
            _ => return None,
        })
    }

    fn down(&mut self) -> Option<Down> {
        Some(match self.u32()? {
            0 => Down::Welcome {
                version: self.byte()?,
            },
            1 => Down::Reject {
                reason: match self.u32()? {
                    0 => RejectReason::Unauthorized,
                    1 => RejectReason::Version,
                    2 => RejectReason::Protocol,
                    _ => return None,
                },
            },
            2 => Down::TimeSync { id: self.u32()? },
            _ => return None,
        })
    }

    fn up(&mut self) -> Option<Up<'a>> {
        Some(match self.u32()? {
            0 => Up::Hello(Hello {
                version: self.byte()?,
                device_id: self.text()?,
                firmware: self.text()?,
                token: self.text()?,
                tick_hz: self.u32()?,
                uptime: self.u64()?,
                span_limit: self.u32()?,
            }),
            1 => Up::Name(NameDef {
                id: self.u16()?,
                name: self.text()?,
            }),
            2 => {
                let seq = self.u32()?;
                let start = self.u64()?;
                let events = self.rest;
                // Every event must decode, up to `End`; what follows it is trailing.
                while !matches!(self.event()?, Event::End { .. }) {}
                let used = events.len() - self.rest.len();
                Up::Request(Journal {
                    seq,
                    start,
                    events: events.get(..used)?,
                })
            }
            3 => Up::Drops(DeviceDrops {
                queue_full: self.u32()?,
                no_link: self.u32()?,
                too_large: self.u32()?,
                no_slot: self.u32()?,
                items: self.u32()?,
                names: self.u32()?,
                link_errors: self.u32()?,
            }),
            4 => Up::TimeSync(TimeSyncReply {
                id: self.u32()?,
                uptime: self.u64()?,
            }),
            _ => return None,
        })
    }
}

/// Decodes one device-to-gateway frame in place, by hand with postcard's rules: `frame` is
/// the COBS bytes without the `0x00` delimiter (a trailing delimiter is tolerated). Strings and
/// a request's events borrow from `frame`; a request is returned only when every event decodes
/// and the last is [`Event::End`].
///
/// This is a pure function: no allocation, no panic on any input, no I/O.
pub fn decode_up(frame: &mut [u8]) -> Result<Up<'_>, DecodeError> {
    decode_with(frame, Reader::up)
}

/// Undoes COBS in place (`frame` without its delimiter, a trailing one tolerated) and reads
/// one message from the payload with `read`, refusing bytes after it.
fn decode_with<'a, T>(
    frame: &'a mut [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Result<T, DecodeError> {
    let end = match frame.last() {
        Some(0) => frame.len() - 1,
        _ => frame.len(),
    };
    let frame = frame.get_mut(..end).ok_or(DecodeError::Cobs)?;
    let n = cobs_decode(frame).ok_or(DecodeError::Cobs)?;
    let frame: &'a [u8] = frame;
    let mut r = Reader {
        rest: frame.get(..n).ok_or(DecodeError::Cobs)?,
    };
    let msg = read(&mut r).ok_or(DecodeError::Payload)?;
    if r.rest.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::Trailing)
    }
}

impl<'a> Journal<'a> {
    /// The events in recorded order (`End` last). A journal from [`decode_up`] yields them
    /// all; one made by hand stops at the first that does not decode.
    pub fn events(&self) -> Events<'a> {
        Events {
            r: Reader { rest: self.events },
        }
    }
}

/// The events of a [`Journal`], from [`Journal::events`].
#[derive(Debug, Clone)]
pub struct Events<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        let e = self.r.event();
        if e.is_none() {
            self.r.rest = &[];
        }
        e
    }
}

/// Decodes one gateway-to-device frame in place, by hand (no serde): accepts and rejects the
/// same frames as [`super::decode_frame`]`::<Down>` and returns the same message. `frame` is
/// the COBS bytes without the `0x00` delimiter (a trailing delimiter is tolerated).
///
/// This is a pure function: no allocation, no panic on any input, no I/O.
pub fn decode_down(frame: &mut [u8]) -> Result<Down, DecodeError> {
    decode_with(frame, Reader::down)
}

/// Decodes the gateway's [`Down`] messages from a byte stream as it arrives, one byte at a
/// time, in 10 bytes of state: COBS is undone on the fly and the payload parsed as it is
/// decoded (no payload buffer). The device side's counterpart of a [`super::FrameReader`]
/// feeding [`decode_down`]: the same messages come out of the same stream (frames that fail,
/// whatever the reason, come out as errors, not necessarily with the same [`DecodeError`];
/// empty frames are skipped).
#[derive(Debug, Clone, Default)]
pub struct DownReader {
    /// The integer being read (the variant, then the field).
    acc: u32,
    /// Bytes of `acc` read so far.
    n: u8,
    /// 0: reading the variant; 1: reading the field; 2: the message is complete.
    stage: u8,
    /// The variant, once read.
    variant: u8,
    /// The current COBS block's code byte (0 before the first).
    block: u8,
    /// Bytes left in the current block (0: the next byte is a code byte).
    left: u8,
    /// The frame is malformed or too long; skip to the delimiter.
    bad: bool,
}

impl DownReader {
    /// A reader between frames.
    pub const fn new() -> Self {
        Self {
            acc: 0,
            n: 0,
            stage: 0,
            variant: 0,
            block: 0,
            left: 0,
            bad: false,
        }
    }

    /// Consumes one byte; at the end of a non-empty frame, returns its message (or why it
    /// did not decode).
    #[inline(never)]
    pub fn push(&mut self, b: u8) -> Option<Result<Down, DecodeError>> {
        if b == 0 {
            let msg = match (self.block, self.bad || self.left > 0, self.stage) {
                (0, _, _) => None,
                (_, true, _) => Some(Err(DecodeError::Cobs)),
                (_, _, 2) => Some(Ok(match (self.variant, self.acc) {
                    (0, v) => Down::Welcome { version: v as u8 },
                    (1, 0) => Down::Reject {
                        reason: RejectReason::Unauthorized,
                    },
                    (1, 1) => Down::Reject {
                        reason: RejectReason::Version,
                    },
                    (1, _) => Down::Reject {
                        reason: RejectReason::Protocol,
                    },
                    (_, id) => Down::TimeSync { id },
                })),
                _ => Some(Err(DecodeError::Payload)),
            };
            *self = Self::new();
            return msg;
        }
        let data = if self.left > 0 {
            self.left -= 1;
            Some(b)
        } else {
            // A code byte: the block before it ended with an implied zero, unless it was a
            // full 254-byte block.
            let zero = self.block != 0 && self.block != 0xFF;
            self.block = b;
            self.left = b - 1;
            zero.then_some(0)
        };
        // One decoded payload byte: postcard's varint variant, then a raw `u8` (`Welcome`) or
        // a varint (`Reject`, `TimeSync`), then nothing more.
        if let Some(b) = data {
            if self.stage == 1 && self.variant == 0 {
                self.acc = u32::from(b);
                self.stage = 2;
            } else if self.stage > 1 || (self.n == 4 && b > 0x0F) {
                // Past the message, or a `u32` varint longer than 5 bytes or above `u32::MAX`.
                self.bad = true;
            } else {
                self.acc |= u32::from(b & 0x7F) << (7 * self.n);
                self.n += 1;
                if b < 0x80 {
                    // Variants 0..=2, and reasons 0..=2.
                    if (self.stage == 0 || self.variant == 1) && self.acc > 2 {
                        self.bad = true;
                    }
                    if self.stage == 0 {
                        self.variant = self.acc as u8;
                        self.acc = 0;
                        self.n = 0;
                    }
                    self.stage += 1;
                }
            }
        }
        None
    }
}
