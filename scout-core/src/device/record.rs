//! Device side: [`Recorder`], which records one request as the [`Event`](super::Event)s of a
//! [`Journal`](super::Journal), appended to a fixed byte buffer as they happen (no tables, no
//! encode pass at the end, no serde).

use super::frame::FrameWriter;
use super::wire::WireValue;
use crate::request::SpanFlags;
use crate::value::Value;

/// Most bytes one `Stop` event takes (variant, 5-byte delta): room kept for each open span.
const STOP_MAX: usize = 6;
/// Most bytes the `End` event takes (variant, delta, dropped).
const END_MAX: usize = 11;
/// Most bytes a request frame adds to its events: the variant, `seq` (5), `start` (10), the
/// first COBS code byte and the delimiter.
const FRAME_HEAD: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Open,
    /// Finished, waiting to be sent.
    Done,
}

/// One device request, recorded as the events of a [`Journal`](super::Journal) in an `N`-byte
/// buffer: each call appends its event (2 to 16 bytes per span, usually 5 to 7), whole or not
/// at all. Its frame ([`Recorder::write_frame`]) always fits `N` bytes: the events may use `N`
/// less the frame overhead (18 bytes, plus one per 254).
///
/// The recorder keeps no span table and applies no rule: the gateway replays the events into a
/// [`crate::Request`], which applies ignore flags, the span limit and tag replacement exactly
/// as on a server. Here only what does not fit is dropped, and counted ([`Recorder::dropped`],
/// sent in the `End` event): room for the `Stop` of every open span and for `End` is kept, so a
/// full buffer never leaves a span without its stop; once a `Start` is dropped, its whole
/// subtree is. Names and tag keys are name ids (see [`super::NameTable`]); times are ticks
/// (scout-embassy uses microseconds) from a clock that does not go back (a time before the
/// previous event's is recorded as no time passing, and later deltas count from it); deltas
/// past 2³² ticks are clamped. Nothing here panics or allocates.
///
/// ```
/// use scout_core::device::{decode_up, Event, FrameWriter, Recorder, Up};
/// use scout_core::{SpanFlags, Value};
/// let mut r = Recorder::<64>::new();
/// r.begin(1, 5_000_000); // the root, name id 1
/// r.start_span(2, SpanFlags::NONE, 5_000_120);
/// r.tag(false, 5, Value::Int(6));
/// r.stop_span(5_000_970);
/// assert!(r.finish(5_001_400, 3));
/// let mut buf = [0u8; 64];
/// let mut w = FrameWriter::new(&mut buf);
/// r.write_frame(&mut w);
/// let n = w.finish().unwrap();
/// // What the gateway reads:
/// let Ok(Up::Request(j)) = decode_up(&mut buf[..n]) else { panic!() };
/// assert_eq!((j.seq, j.start), (3, 5_000_000));
/// let events: Vec<Event<'_>> = j.events().collect();
/// assert_eq!(events[1], Event::Start { name: 2, delta: 120 });
/// assert_eq!(events[3], Event::Stop { delta: 850 });
/// assert_eq!(events[4], Event::End { delta: 430, dropped: 0 });
/// ```
#[derive(Debug)]
pub struct Recorder<const N: usize> {
    /// Ticks since boot at the request start.
    start: u64,
    /// Ticks since boot of the last timed event.
    last: u64,
    seq: u32,
    dropped: u32,
    /// Bytes of events.
    len: usize,
    /// Open spans whose `Start` was written (the root included).
    open: usize,
    /// Open spans whose `Start` was dropped (all inside the written ones).
    skipped: usize,
    state: State,
    buf: [u8; N],
}

impl<const N: usize> Default for Recorder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Recorder<N> {
    /// Bytes the events may take.
    const CAP: usize = N.saturating_sub(FRAME_HEAD + N / 254);

    /// An idle recorder (usable in a `static`; all zeros).
    pub const fn new() -> Self {
        Self {
            start: 0,
            last: 0,
            seq: 0,
            dropped: 0,
            len: 0,
            open: 0,
            skipped: 0,
            state: State::Idle,
            buf: [0; N],
        }
    }

    /// True when idle (free for [`Recorder::begin`]).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// True between [`Recorder::begin`] and [`Recorder::finish`].
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True once finished and until [`Recorder::reset`]: the frame is ready to send.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The sequence number given to [`Recorder::finish`].
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Open spans (recorded or not; the root included).
    pub fn open_spans(&self) -> usize {
        self.open.saturating_add(self.skipped)
    }

    /// Bytes of events written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no event was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Spans and tags not recorded for lack of room, and calls made while not open.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Forgets the request: the recorder is idle again.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Starts a new request at `now` with its root span `name` (discarding anything recorded
    /// before).
    pub fn begin(&mut self, name: u16, now: u64) {
        self.start = now;
        self.last = now;
        self.dropped = 0;
        self.len = 0;
        self.open = 0;
        self.skipped = 0;
        self.state = State::Open;
        self.start_span(name, SpanFlags::NONE, now);
    }

    /// Opens a span named `name` under the innermost open span at `now`. `flags`:
    /// [`SpanFlags::IGNORE`] and [`SpanFlags::IGNORE_CHILDREN`] (applied by the gateway).
    /// Returns false when it was dropped (no room, or not open).
    pub fn start_span(&mut self, name: u16, flags: SpanFlags, now: u64) -> bool {
        if self.state != State::Open || self.skipped > 0 {
            return self.drop_start();
        }
        // Room for this span's stop, and for those of the open ones but the root.
        // `open` is at most N / 3 (a start takes 3 bytes): no overflow.
        let keep = self.open * STOP_MAX + END_MAX;
        let mut w = self.cursor();
        let bits = u8::from(flags.contains(SpanFlags::IGNORE))
            | (u8::from(flags.contains(SpanFlags::IGNORE_CHILDREN)) << 1);
        w.u8(1 + u8::from(bits != 0));
        w.varint(u32::from(name));
        if bits != 0 {
            w.u8(bits);
        }
        let at = w.position();
        if self.timed(at, now, keep) {
            self.open += 1;
            true
        } else {
            self.drop_start()
        }
    }

    #[inline(never)]
    fn drop_start(&mut self) -> bool {
        if self.state == State::Open {
            self.skipped = self.skipped.saturating_add(1);
        }
        self.count();
        false
    }

    #[inline(never)]
    fn count(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Stops the innermost open span at `now` (never the root: see [`Recorder::finish`]).
    pub fn stop_span(&mut self, now: u64) {
        // Never the root, recorded or dropped (a later span would take its place).
        if self.state != State::Open || self.open + self.skipped <= 1 {
            return;
        }
        if self.skipped > 0 {
            self.skipped -= 1;
        } else {
            let mut w = self.cursor();
            w.u8(0);
            let at = w.position();
            // Fits: room for it was kept when the span started.
            self.timed(at, now, 0);
            self.open -= 1;
        }
    }

    /// Tags the innermost open span (`request` false) or the request. A key already there
    /// takes the new value (at the gateway).
    pub fn tag(&mut self, request: bool, key: u16, value: Value<'_>) {
        // Inside a dropped span the tag has no span to go to.
        if self.state != State::Open || (!request && self.skipped > 0) {
            return self.count();
        }
        let keep = self.open.saturating_sub(1) * STOP_MAX + END_MAX;
        let mut w = self.cursor();
        w.u8(3 + u8::from(request));
        w.varint(u32::from(key));
        w.value(&WireValue::from(value));
        let at = w.position();
        if at + keep <= Self::CAP {
            self.len = at;
        } else {
            self.count();
        }
    }

    /// Stops every open span at `now` and finishes the request as number `seq`: its frame
    /// ([`Recorder::write_frame`]) is ready. Returns false, and is idle again, when there is
    /// nothing to send: not open, or even the root span did not fit.
    pub fn finish(&mut self, now: u64, seq: u32) -> bool {
        if self.state != State::Open || self.open == 0 {
            self.state = State::Idle;
            return false;
        }
        let (dropped, d) = (self.dropped, delta(self.last, now));
        let mut w = self.cursor();
        w.u8(5);
        w.varint(d);
        w.varint(dropped);
        // Fits: room for it was kept by every event.
        self.len = w.position();
        self.seq = seq;
        self.state = State::Done;
        true
    }

    /// Appends the delta from the last timed event to `now` after an event's first `at`
    /// bytes, keeping `keep` bytes free; false (nothing written) when it does not fit.
    #[inline(never)]
    fn timed(&mut self, at: usize, now: u64, keep: usize) -> bool {
        let d = delta(self.last, now);
        let mut w = FrameWriter::plain(&mut self.buf, at);
        w.varint(d);
        let end = w.position();
        if end + keep > Self::CAP {
            return false;
        }
        self.len = end;
        self.last = now;
        true
    }

    /// A writer at the end of the events.
    fn cursor(&mut self) -> FrameWriter<'_> {
        FrameWriter::plain(&mut self.buf, self.len)
    }

    /// Writes the finished request as [`Up::Request`](super::Up::Request): the variant,
    /// `seq`, `start`, then the events. Fits `N` bytes.
    pub fn write_frame(&self, w: &mut FrameWriter<'_>) {
        w.request_header(self.seq, self.start);
        w.bytes(self.buf.get(..self.len).unwrap_or(&[]));
    }
}

/// Ticks from `from` to `to`, clamped to 32 bits (0 if the clock went back).
fn delta(from: u64, to: u64) -> u32 {
    u32::try_from(to.saturating_sub(from)).unwrap_or(u32::MAX)
}
