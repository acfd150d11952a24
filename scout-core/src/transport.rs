//! The [`Transport`] trait: how framed messages leave the agent.
//!
//! A transport takes one complete frame at a time and must **never block**: when it cannot take
//! the frame right now it returns an error whose [`ErrorKind`] says why, and the caller drops
//! the frame and counts it. Adapters (the std socket sender, the embassy link) keep their rich
//! errors and map them to a kind.

use crate::command::{Encode, FrameError, write_frame};
use crate::json::SliceSink;

/// What kind of failure a transport reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ErrorKind {
    /// No room right now (queue or buffer full); the frame was not taken.
    Full,
    /// No peer is connected; the frame was not taken.
    Disconnected,
    /// The frame is larger than the transport ever accepts.
    TooLarge,
    /// Anything else.
    Other,
}

impl core::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Full => "transport full",
            Self::Disconnected => "transport disconnected",
            Self::TooLarge => "frame too large for transport",
            Self::Other => "transport error",
        })
    }
}

/// A transport error.
pub trait Error: core::fmt::Debug {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
}

impl Error for ErrorKind {
    fn kind(&self) -> ErrorKind {
        *self
    }
}

/// A non-blocking sink of framed messages.
pub trait Transport {
    /// The transport's error.
    type Error: Error;
    /// Hands over one complete frame (length prefix included). Must not block.
    fn try_send(&mut self, frame: &[u8]) -> Result<(), Self::Error>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;
    fn try_send(&mut self, frame: &[u8]) -> Result<(), T::Error> {
        (**self).try_send(frame)
    }
}

/// Frames `cmd` into `scratch` and hands it to `transport`.
///
/// A command larger than `scratch` is refused with [`ErrorKind::TooLarge`] before anything is
/// sent.
pub fn send_command<T: Transport + ?Sized, E: Encode + ?Sized>(
    transport: &mut T,
    cmd: &E,
    scratch: &mut [u8],
) -> Result<(), ErrorKind> {
    let max = scratch.len().saturating_sub(4);
    let mut sink = SliceSink::new(scratch);
    match write_frame(cmd, &mut sink, max) {
        Ok(_) => transport.try_send(sink.written()).map_err(|e| e.kind()),
        Err(FrameError::TooLarge(_)) | Err(FrameError::Sink(_)) => Err(ErrorKind::TooLarge),
    }
}

/// A transport that discards everything (for a disabled agent).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullTransport;

impl Transport for NullTransport {
    type Error = ErrorKind;
    fn try_send(&mut self, _frame: &[u8]) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// A transport that records frames into a fixed buffer of `N` bytes, for tests.
///
/// When the buffer is full it answers [`ErrorKind::Full`], as a real transport would.
#[derive(Debug, Default)]
pub struct RecordingTransport<const N: usize> {
    bytes: heapless::Vec<u8, N>,
    frames: usize,
    /// Frames refused because the buffer was full.
    pub refused: usize,
}

impl<const N: usize> RecordingTransport<N> {
    /// An empty recorder.
    pub const fn new() -> Self {
        Self {
            bytes: heapless::Vec::new(),
            frames: 0,
            refused: 0,
        }
    }
    /// Number of frames recorded.
    pub fn frame_count(&self) -> usize {
        self.frames
    }
    /// All recorded bytes (frames back to back, with their length prefixes).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The JSON bodies of the recorded frames.
    pub fn frames(&self) -> FrameIter<'_> {
        FrameIter { rest: &self.bytes }
    }
    /// Forgets everything recorded.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames = 0;
    }
}

impl<const N: usize> Transport for RecordingTransport<N> {
    type Error = ErrorKind;
    fn try_send(&mut self, frame: &[u8]) -> Result<(), ErrorKind> {
        if frame.len() > N {
            self.refused += 1;
            return Err(ErrorKind::TooLarge);
        }
        if self.bytes.extend_from_slice(frame).is_err() {
            self.refused += 1;
            return Err(ErrorKind::Full);
        }
        self.frames += 1;
        Ok(())
    }
}

/// Iterator over the bodies of back-to-back length-prefixed frames; stops at the first
/// incomplete frame.
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    rest: &'a [u8],
}

impl<'a> FrameIter<'a> {
    /// Iterates over the frames in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.get(..4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let body = self.rest.get(4..4usize.checked_add(len)?)?;
        self.rest = &self.rest[4 + len..];
        Some(body)
    }
}
