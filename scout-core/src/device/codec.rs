//! Framing: postcard inside COBS, `0x00`-delimited; a bounded, resynchronising stream reader.

use serde::{Deserialize, Serialize};

use super::frame::decode_up;
use super::wire::{Event, Up};

/// Why a frame was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The COBS layer is malformed.
    Cobs,
    /// The postcard payload is malformed (bad variant, bad varint, bad UTF-8, too many items…).
    Payload,
    /// The payload has bytes after the message.
    Trailing,
    /// The frame was longer than the reader's buffer; it was skipped up to the next delimiter.
    TooLong,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Cobs => "malformed COBS frame",
            Self::Payload => "malformed message",
            Self::Trailing => "trailing bytes after message",
            Self::TooLong => "frame too long",
        })
    }
}

impl core::error::Error for DecodeError {}

/// The frame did not fit the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EncodeError;

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("frame does not fit the buffer")
    }
}

impl core::error::Error for EncodeError {}

/// Encodes `msg` as one frame (COBS of the postcard bytes, then `0x00`) at the start of `buf`.
/// Returns the frame length.
pub fn encode<T: Serialize + ?Sized>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    postcard::to_slice_cobs(msg, buf)
        .map(|f| f.len())
        .map_err(|_| EncodeError)
}

/// Decodes one frame in place: `frame` is the COBS bytes without the `0x00` delimiter (a
/// trailing delimiter is tolerated). Strings in the result borrow from `frame`.
///
/// This is a pure function: no allocation, no panic on any input, no I/O.
pub fn decode_frame<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, DecodeError> {
    let end = match frame.last() {
        Some(0) => frame.len() - 1,
        _ => frame.len(),
    };
    let frame = &mut frame[..end];
    if frame.contains(&0) {
        return Err(DecodeError::Cobs);
    }
    let n = cobs::decode_in_place(frame).map_err(|_| DecodeError::Cobs)?;
    let payload = frame.get(..n).ok_or(DecodeError::Cobs)?;
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(|_| DecodeError::Payload)?;
    if rest.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::Trailing)
    }
}

/// Rebuilds frames from a byte stream that arrives in pieces, in a buffer of `N` bytes.
///
/// Frames end at `0x00`. A frame longer than `N` is skipped up to the next delimiter and
/// reported once as [`DecodeError::TooLong`]; garbage therefore costs at most the frame it is
/// in, and decoding resumes with the next frame. Empty frames (repeated delimiters) are ignored,
/// so a sender may start with a delimiter to flush a receiver's partial frame.
#[derive(Debug)]
pub struct FrameReader<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for FrameReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameReader<N> {
    /// An empty reader.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Bytes of the current partial frame.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Forgets any partial frame.
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    /// Consumes `data`, calling `on_frame` with each complete frame's raw COBS bytes (without
    /// the delimiter), or with [`DecodeError::TooLong`] for a frame that did not fit.
    pub fn feed_raw(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(Result<&mut [u8], DecodeError>),
    ) {
        for &b in data {
            if b == 0 {
                if self.overflow {
                    on_frame(Err(DecodeError::TooLong));
                } else if let Some(frame) = self.buf.get_mut(..self.len)
                    && !frame.is_empty()
                {
                    on_frame(Ok(frame));
                }
                self.reset();
            } else if self.overflow {
                // Skip to the next delimiter.
            } else if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            } else {
                self.overflow = true;
            }
        }
    }

    /// Consumes `data`, calling `on_frame` with each decoded message (or why a frame was bad).
    pub fn feed<T>(&mut self, data: &[u8], mut on_frame: impl FnMut(Result<T, DecodeError>))
    where
        T: for<'a> Deserialize<'a>,
    {
        self.feed_raw(data, |f| on_frame(f.and_then(|f| decode_frame::<T>(f))));
    }
}

/// What [`scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScanStats {
    /// Frames decoded to a message.
    pub frames: u32,
    /// Of those, requests.
    pub requests: u32,
    /// Spans started in those requests.
    pub spans: u32,
    /// Frames that failed to decode.
    pub bad: u32,
}

/// Largest frame the gateway accepts, in bytes (COBS, without the delimiter).
pub const MAX_FRAME: usize = 8192;

/// Decodes a whole device byte stream with the gateway's reader (a [`FrameReader`] of
/// [`MAX_FRAME`] bytes), counting frames and errors. This is the fuzzing entry point: a pure
/// function that must never panic, allocate or loop forever, whatever `data` holds.
pub fn scan(data: &[u8]) -> ScanStats {
    let mut reader = FrameReader::<MAX_FRAME>::new();
    let mut stats = ScanStats::default();
    reader.feed_raw(data, |frame| match frame.and_then(decode_up) {
        Ok(Up::Request(r)) => {
            stats.frames += 1;
            stats.requests += 1;
            let starts = r
                .events()
                .filter(|e| matches!(e, Event::Start { .. } | Event::StartWith { .. }));
            stats.spans += starts.count() as u32;
        }
        Ok(_) => stats.frames += 1,
        Err(_) => stats.bad += 1,
    });
    stats
}
