//! The fast path of frame decoding: a hand-written scanner for the frames agents actually send.
//!
//! It recognises request/span commands and `ApplicationEvent`, alone or in a `BatchCommand`, in
//! any JSON spacing (Python's `", "`/`": "`, Node's compact form) and any key order, and decodes
//! them straight into a [`Command`] whose strings borrow from the frame unless they had escapes.
//! It accepts a strict subset of what the serde decoder in [`super::protocol`] accepts, and only
//! where that decoder would produce the same command: anything else (other commands, malformed or
//! merely unusual JSON, any semantic error, escaped keys, lone surrogates, numbers it does not
//! read exactly, deep nesting) makes it give up with `None`, and the caller decodes the frame
//! again with serde, so error messages, counters and `Failure` replies do not depend on it.
//!
//! Tag and event values: strings, booleans, `null` and small non-negative integers are built
//! directly; any other value (objects, arrays, other numbers) is delimited by the scanner and
//! handed to `serde_json` on its own, which parses it exactly as it would inside the frame.

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::Value;

use super::protocol::{Command, MAX_NAME_LEN, Str, TagValue};
use super::timestamp::Timestamp;

/// Deepest nesting of arrays/objects the fast path accepts, counting from the frame's outer
/// object (serde_json's own limit is 128, so everything accepted here is within it).
const MAX_DEPTH: usize = 100;

/// A remembered timestamp prefix: its bytes 0..8, 8..16 and 11..19 read as words, and its value.
type TsPrefix = Option<([u64; 3], i64)>;

thread_local! {
    /// The timestamp prefix the last frame decoded on this thread ended with (timestamps of
    /// consecutive frames usually share it: one command per frame, or a burst of requests).
    static TS_PREFIX: Cell<TsPrefix> = const { Cell::new(None) };
    /// An empty command vector whose allocation the next batch decoded on this thread reuses
    /// (a batch's vector is a few kilobytes: allocating it for every frame costs more than
    /// decoding some of its commands).
    static SPARE: Cell<Vec<Command<'static>>> = const { Cell::new(Vec::new()) };
}

/// Vectors with more room than this many commands are not kept.
const SPARE_MAX: usize = 4096;

/// Empties `v` and gives it another lifetime, keeping its allocation (the element type's size
/// and alignment are the same, so the standard library collects in place).
// `filter_map` (not `filter`): the element type changes, which `filter` cannot do.
#[allow(clippy::unnecessary_filter_map)]
fn relabel<'b>(mut v: Vec<Command<'_>>) -> Vec<Command<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// An empty command vector, with the allocation of the last recycled one if any.
fn spare_commands<'a>() -> Vec<Command<'a>> {
    relabel(SPARE.with(Cell::take))
}

/// Keeps the allocation of a batch's command vector for the next batch decoded on this thread.
pub(crate) fn recycle_commands(v: Vec<Command<'_>>) {
    if v.capacity() > 0 && v.capacity() <= SPARE_MAX {
        let v = relabel(v);
        SPARE.with(|s| s.set(v));
    }
}

/// Decodes `text` if it is one of the recognised, well-formed command frames.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Option<Command<'_>> {
    parse_bytes(text.as_bytes())
}

/// Frames up to this size are checked to be UTF-8 as a whole before they are scanned.
const WHOLE_CHECK_MAX: usize = 512;

/// Decodes the frame `b` if it is one of the recognised, well-formed command frames, which are
/// UTF-8: a small frame is checked as a whole, a larger one string by string as they are read
/// (structural bytes are ASCII by construction, and a repeated string is compared with one
/// already checked), so large frames need no separate UTF-8 pass.
pub(crate) fn parse_bytes(b: &[u8]) -> Option<Command<'_>> {
    // Checking a string costs about as much as checking a few hundred bytes of frame at once.
    let text = match b.len() {
        0..=WHOLE_CHECK_MAX => Some(std::str::from_utf8(b).ok()?),
        _ => None,
    };
    let mut s = Scanner {
        b,
        i: 0,
        last: [None; 4],
        tags: [None; 4],
        next_tag: 0,
        text,
        ts_prefix: TS_PREFIX.with(Cell::get),
    };
    let cmd = s.frame();
    TS_PREFIX.with(|c| c.set(s.ts_prefix));
    cmd
}

/// The commands the fast path decodes (a `BatchCommand` may hold any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StartRequest,
    TagRequest,
    StartSpan,
    TagSpan,
    StopSpan,
    FinishRequest,
    ApplicationEvent,
}

// Body fields, as bits of the set a kind reads.
const TS: u16 = 1;
const RID: u16 = 1 << 1;
const SID: u16 = 1 << 2;
const PID: u16 = 1 << 3;
const OP: u16 = 1 << 4;
const TAG: u16 = 1 << 5;
const VAL: u16 = 1 << 6;
const ETYPE: u16 = 1 << 7;
const EVAL: u16 = 1 << 8;
const SRC: u16 = 1 << 9;

impl Kind {
    fn of(name: &str) -> Option<Self> {
        // Dispatch on the length (all distinct), then compare the bytes.
        let (kind, lit): (Self, &[u8]) = match name.len() {
            12 => (Self::StartRequest, b"StartRequest"),
            10 => (Self::TagRequest, b"TagRequest"),
            9 => (Self::StartSpan, b"StartSpan"),
            7 => (Self::TagSpan, b"TagSpan"),
            8 => (Self::StopSpan, b"StopSpan"),
            13 => (Self::FinishRequest, b"FinishRequest"),
            16 => (Self::ApplicationEvent, b"ApplicationEvent"),
            _ => return None,
        };
        same(name.as_bytes(), lit).then_some(kind)
    }

    /// The fields this kind reads; other fields are only checked to be JSON.
    fn fields(self) -> u16 {
        match self {
            Self::StartRequest | Self::FinishRequest => TS | RID,
            Self::TagRequest => RID | TAG | VAL,
            Self::StartSpan => TS | RID | SID | PID | OP,
            Self::TagSpan => RID | SID | TAG | VAL,
            Self::StopSpan => TS | RID | SID,
            Self::ApplicationEvent => TS | ETYPE | EVAL | SRC,
        }
    }
}

fn field_bit(key: &str) -> u16 {
    let k = key.as_bytes();
    let (bit, lit): (u16, &[u8]) = match (k.len(), k.first()) {
        (9, Some(b't')) => (TS, b"timestamp"),
        (10, Some(b'r')) => (RID, b"request_id"),
        (7, _) => (SID, b"span_id"),
        (9, Some(b'p')) => (PID, b"parent_id"),
        (9, Some(b'o')) => (OP, b"operation"),
        (3, _) => (TAG, b"tag"),
        (5, _) => (VAL, b"value"),
        (10, Some(b'e')) => (ETYPE, b"event_type"),
        (11, _) => (EVAL, b"event_value"),
        (6, _) => (SRC, b"source"),
        _ => return 0,
    };
    if same(k, lit) { bit } else { 0 }
}

/// `a == b` for short keys, without a call to `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Eight bytes of `b` from `at` (which the caller keeps in bounds), little-endian.
#[inline]
fn word_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(src) = b.get(at..at + 8) {
        w.copy_from_slice(src);
    }
    u64::from_le_bytes(w)
}

/// Whether `hay` starts with `lit`, comparing eight bytes at a time (no call to `memcmp`).
#[inline(always)]
pub(crate) fn starts_with(hay: &[u8], lit: &[u8]) -> bool {
    let n = lit.len();
    if hay.len() < n {
        return false;
    }
    if n < 8 {
        return same(&hay[..n], lit);
    }
    if n > 32 {
        return hay[..n] == *lit;
    }
    let mut i = 0;
    while i + 8 < n {
        if word_at(hay, i) != word_at(lit, i) {
            return false;
        }
        i += 8;
    }
    word_at(hay, n - 8) == word_at(lit, n - 8)
}

/// The fields of one body as read so far (a repeated key overwrites, as in serde's decoder).
#[derive(Default)]
struct Fields<'a> {
    ts: Option<Timestamp>,
    request_id: Option<Str<'a>>,
    span_id: Option<Str<'a>>,
    parent_id: Option<Str<'a>>,
    operation: Option<Str<'a>>,
    tag: Option<Str<'a>>,
    value: Option<TagValue<'a>>,
    event_type: Option<Str<'a>>,
    event_value: Option<TagValue<'a>>,
    source: Option<Str<'a>>,
}

// Positions in `Scanner::last`.
const RID_AT: usize = 0;
const SID_AT: usize = 1;
const PID_AT: usize = 2;
const OP_AT: usize = 3;

/// Whether `c` ends a run of plain string bytes.
#[inline]
fn special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The last `request_id`, `span_id`, `parent_id` and `operation` read without escapes
    /// (indexed by [`RID_AT`] ...): commands repeat them (a request's id in every command, a
    /// span's id in its tags and stop, a parent's id in its children and its own start), and
    /// comparing bytes is cheaper than scanning and checking a string.
    last: [Option<&'a str>; 4],
    /// The last four tag names read without escapes (spans repeat a few names in turn), and
    /// where the next one goes.
    tags: [Option<&'a str>; 4],
    next_tag: usize,
    /// The whole frame, when it was checked to be UTF-8 at once (small frames, where that
    /// costs less than checking each string).
    text: Option<&'a str>,
    /// The first 19 bytes (`YYYY-MM-DDTHH:MM:SS`) of the last timestamp parsed in full and
    /// their value in microseconds: timestamps in one frame mostly share them.
    /// Kept from frame to frame (see `TS_PREFIX`).
    ts_prefix: TsPrefix,
}

impl<'a> Scanner<'a> {
    /// The whole frame: one command object, or a `BatchCommand`.
    fn frame(&mut self) -> Option<Command<'a>> {
        self.expect(b'{')?;
        let name = self.key()?;
        let cmd = if name == "BatchCommand" {
            self.batch()?
        } else {
            self.body(Kind::of(name)?, 2)?
        };
        self.expect(b'}')?;
        self.ws();
        (self.i == self.b.len()).then_some(cmd)
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            // Every JSON whitespace byte is at most a space; most bytes here are not.
            if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.i += 1;
        }
    }

    /// The next byte after whitespace (not consumed).
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// After an element: `true` at the closing `close`, `false` after a comma.
    #[inline]
    fn next_or_end(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Some(false)
            }
            c if c == close => {
                self.i += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// An object key without escapes, and its colon.
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.i;
        let end = self.plain_run();
        if self.b.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        self.expect(b':')?;
        self.str_at(start, end)
    }

    /// Bytes `start..end` of the frame as a string, if they are UTF-8.
    #[inline]
    fn str_at(&self, start: usize, end: usize) -> Option<&'a str> {
        match self.text {
            Some(t) => t.get(start..end),
            None => std::str::from_utf8(self.b.get(start..end)?).ok(),
        }
    }

    /// The end of the run of plain string bytes starting at the cursor (not consumed).
    #[inline]
    fn plain_run(&self) -> usize {
        let b = self.b;
        let mut j = self.i;
        // Eight bytes at a time while none of them is a quote, a backslash or a control byte.
        while let Some(chunk) = b.get(j..j + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            const ONES: u64 = 0x0101_0101_0101_0101;
            const HIGH: u64 = 0x8080_8080_8080_8080;
            let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
            let quote = has_zero(w ^ (ONES * u64::from(b'"')));
            let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
            let hits = quote | backslash | control;
            if hits != 0 {
                // The lowest flagged byte is exact (only bytes above a true hit can be false hits).
                return j + (hits.trailing_zeros() / 8) as usize;
            }
            j += 8;
        }
        while let Some(&c) = b.get(j) {
            if special(c) {
                break;
            }
            j += 1;
        }
        j
    }

    /// A string whose opening quote was consumed, with its escapes decoded.
    fn string_body(&mut self) -> Option<Str<'a>> {
        let start = self.i;
        let end = self.plain_run();
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return self.str_at(start, end).map(Cow::Borrowed);
        }
        let mut out = String::with_capacity(end - start + 16);
        out.push_str(self.str_at(start, end)?);
        self.i = end;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    });
                }
                c if c < 0x20 => return None,
                _ => {
                    let run = self.i;
                    self.i = self.plain_run();
                    out.push_str(self.str_at(run, self.i)?);
                }
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` was consumed), joining a surrogate pair.
    /// A lone surrogate is not taken (serde rejects it in strings it decodes).
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xDC00..0xE000).contains(&hi) {
            return None;
        }
        if !(0xD800..0xDC00).contains(&hi) {
            return char::from_u32(hi);
        }
        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
            return None;
        }
        self.i += 2;
        let lo = self.hex4()?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    /// A string (after whitespace).
    #[inline]
    fn string(&mut self) -> Option<Str<'a>> {
        self.expect(b'"')?;
        self.string_body()
    }

    /// `true`, `false` or `null` starting at the cursor.
    fn literal(&mut self) -> Option<Value> {
        let rest = self.b.get(self.i..)?;
        let (v, len) = if rest.starts_with(b"true") {
            (Value::Bool(true), 4)
        } else if rest.starts_with(b"false") {
            (Value::Bool(false), 5)
        } else if rest.starts_with(b"null") {
            (Value::Null, 4)
        } else {
            return None;
        };
        self.i += len;
        Some(v)
    }

    /// An id, tag name, operation or event type: a string of at most [`MAX_NAME_LEN`] bytes.
    #[inline]
    fn name(&mut self) -> Option<Str<'a>> {
        self.string().filter(|s| s.len() <= MAX_NAME_LEN)
    }

    /// `null` or a name.
    fn opt_name(&mut self) -> Option<Option<Str<'a>>> {
        if self.peek()? == b'n' {
            self.literal().filter(Value::is_null).map(|_| None)
        } else {
            self.name().map(Some)
        }
    }

    /// `null` or an RFC 3339 timestamp.
    fn timestamp(&mut self) -> Option<Option<Timestamp>> {
        match self.peek()? {
            b'n' => self.literal().filter(Value::is_null).map(|_| None),
            b'"' => {
                self.i += 1;
                if let Some(t) = self.cached_timestamp() {
                    return Some(Some(t));
                }
                let s = self.string_body()?;
                let t = Timestamp::parse(&s)?;
                if let Cow::Borrowed(raw) = s
                    && let Some(prefix) = raw.get(..19)
                    && let Some(base) = Timestamp::parse(prefix)
                {
                    let p = prefix.as_bytes();
                    let words = [word_at(p, 0), word_at(p, 8), word_at(p, 11)];
                    self.ts_prefix = Some((words, base.0));
                }
                Some(Some(t))
            }
            _ => None,
        }
    }

    /// The timestamp string at the cursor (after its opening quote), if it starts with the
    /// remembered 19-byte prefix and the rest is a fraction and zone exactly as
    /// [`Timestamp::parse`] reads them; `None` (cursor unchanged) otherwise.
    fn cached_timestamp(&mut self) -> Option<Timestamp> {
        let (prefix, base) = self.ts_prefix?;
        let b = self.b.get(self.i..)?;
        if b.len() < 20
            || word_at(b, 0) != prefix[0]
            || word_at(b, 8) != prefix[1]
            || word_at(b, 11) != prefix[2]
        {
            return None;
        }
        // The usual rest, `.ffffff+00:00"` (six digits, UTC written as Python and the std agent
        // write it), checked with two words.
        const LOW6: u64 = 0x0000_ffff_ffff_ffff;
        const ZONE: u64 = u64::from_le_bytes(*b"+00:00\"\0");
        if b.get(19) == Some(&b'.') && b.len() >= 34 {
            let t = (word_at(b, 20) & LOW6).wrapping_sub(0x0000_3030_3030_3030);
            // Each of the six bytes was a digit iff it is now at most 9 (no borrow, no high bit).
            let digits = (t | t.wrapping_add(0x0000_7676_7676_7676)) & 0x0000_8080_8080_8080 == 0;
            if digits && word_at(b, 26) & 0x00ff_ffff_ffff_ffff == ZONE {
                let micros = t.to_le_bytes()[..6]
                    .iter()
                    .fold(0i64, |m, &d| m * 10 + i64::from(d));
                self.i += 33;
                return Some(Timestamp(base + micros));
            }
        }
        let digit = |j: usize| {
            b.get(j)
                .filter(|c| c.is_ascii_digit())
                .map(|c| i64::from(c - b'0'))
        };
        // The rest after `YYYY-MM-DDTHH:MM:SS`, exactly as `Timestamp::parse` reads it.
        let mut j = 19;
        let mut micros = 0i64;
        if b.get(j) == Some(&b'.') {
            j += 1;
            // Usually exactly six digits (microseconds).
            if let Some(d) = b.get(j..j + 7)
                && d[..6].iter().all(u8::is_ascii_digit)
                && !d[6].is_ascii_digit()
            {
                micros = d[..6].iter().fold(0, |m, &c| m * 10 + i64::from(c - b'0'));
                j += 6;
            } else {
                let start = j;
                while let Some(d) = digit(j) {
                    if j - start < 6 {
                        micros = micros * 10 + d;
                    }
                    j += 1;
                }
                let n = j - start;
                if n == 0 || n > 9 {
                    return None;
                }
                for _ in n..6 {
                    micros *= 10;
                }
            }
        }
        if b.get(j..j + 7) == Some(b"+00:00\"") {
            self.i += j + 7;
            return Some(Timestamp(base + micros));
        }
        let offset_secs = match *b.get(j)? {
            b'"' => 0,
            b'Z' | b'z' => {
                j += 1;
                0
            }
            sign @ (b'+' | b'-') => {
                let oh = digit(j + 1)? * 10 + digit(j + 2)?;
                let om = digit(j + 4)? * 10 + digit(j + 5)?;
                if b.get(j + 3) != Some(&b':') || oh > 23 || om > 59 {
                    return None;
                }
                j += 6;
                let v = oh * 3600 + om * 60;
                if sign == b'-' { -v } else { v }
            }
            _ => return None,
        };
        if b.get(j) != Some(&b'"') {
            return None;
        }
        self.i += j + 1;
        Some(Timestamp(base - offset_secs * 1_000_000 + micros))
    }

    /// A name (see [`Self::name`]) of the kind remembered at `at` in [`Self::last`]: compared
    /// first with the last one of that kind and, if `also` is given, of kind `also`.
    #[inline(always)]
    fn cached(&mut self, at: usize, also: Option<usize>) -> Option<Str<'a>> {
        if self.b.get(self.i) == Some(&b'"') {
            self.i += 1;
        } else {
            self.expect(b'"')?;
        }
        let rest = self.b.get(self.i..)?;
        let other = also.and_then(|k| self.last.get(k).copied().flatten());
        for prev in [self.last.get(at).copied().flatten(), other]
            .into_iter()
            .flatten()
        {
            // `prev` had no escapes: the same bytes followed by a quote are the same string.
            if starts_with(rest, prev.as_bytes()) && rest.get(prev.len()) == Some(&b'"') {
                self.i += prev.len() + 1;
                if let Some(slot) = self.last.get_mut(at) {
                    *slot = Some(prev);
                }
                return Some(Cow::Borrowed(prev));
            }
        }
        let s = self.string_body().filter(|s| s.len() <= MAX_NAME_LEN)?;
        if let Cow::Borrowed(raw) = s
            && let Some(slot) = self.last.get_mut(at)
        {
            *slot = Some(raw);
        }
        Some(s)
    }

    /// A tag name: compared first with the last four (see [`Self::cached`]).
    #[inline]
    fn cached_tag(&mut self) -> Option<Str<'a>> {
        if self.b.get(self.i) == Some(&b'"') {
            self.i += 1;
        } else {
            self.expect(b'"')?;
        }
        let rest = self.b.get(self.i..)?;
        for prev in self.tags.into_iter().flatten() {
            if starts_with(rest, prev.as_bytes()) && rest.get(prev.len()) == Some(&b'"') {
                self.i += prev.len() + 1;
                return Some(Cow::Borrowed(prev));
            }
        }
        let s = self.string_body().filter(|s| s.len() <= MAX_NAME_LEN)?;
        if let Cow::Borrowed(raw) = s {
            if let Some(slot) = self.tags.get_mut(self.next_tag % 4) {
                *slot = Some(raw);
            }
            self.next_tag += 1;
        }
        Some(s)
    }

    /// `null` or a parent span id (see [`Self::cached`]).
    #[inline]
    fn parent_id(&mut self) -> Option<Option<Str<'a>>> {
        if self.peek()? == b'n' {
            self.literal().filter(Value::is_null).map(|_| None)
        } else {
            self.cached(PID_AT, Some(SID_AT)).map(Some)
        }
    }

    /// A body key and its colon, as its field bit (0 for keys the decoder ignores). The usual
    /// keys are recognised by comparing their bytes; anything else is read as a string.
    #[inline]
    fn field(&mut self) -> Option<u16> {
        self.expect(b'"')?;
        let rest = self.b.get(self.i..)?;
        let (bit, lit): (u16, &[u8]) = match (rest.first(), rest.get(1)) {
            (Some(b't'), Some(b'i')) => (TS, b"timestamp\""),
            (Some(b't'), _) => (TAG, b"tag\""),
            (Some(b'r'), _) => (RID, b"request_id\""),
            (Some(b's'), Some(b'p')) => (SID, b"span_id\""),
            (Some(b's'), _) => (SRC, b"source\""),
            (Some(b'p'), _) => (PID, b"parent_id\""),
            (Some(b'o'), _) => (OP, b"operation\""),
            (Some(b'v'), _) => (VAL, b"value\""),
            (Some(b'e'), _) if rest.get(6) == Some(&b't') => (ETYPE, b"event_type\""),
            (Some(b'e'), _) => (EVAL, b"event_value\""),
            _ => (0, b""),
        };
        if bit != 0 && starts_with(rest, lit) {
            self.i += lit.len();
            self.expect(b':')?;
            return Some(bit);
        }
        self.i -= 1;
        Some(field_bit(self.key()?))
    }

    /// A command name inside a batch and its colon, recognised like [`Self::field`].
    #[inline]
    fn kind(&mut self) -> Option<Kind> {
        self.expect(b'"')?;
        let rest = self.b.get(self.i..)?;
        let (kind, lit): (Kind, &[u8]) = match (rest.first(), rest.get(2), rest.get(5)) {
            (Some(b'S'), Some(b'a'), Some(b'S')) => (Kind::StartSpan, b"StartSpan\""),
            (Some(b'S'), Some(b'a'), _) => (Kind::StartRequest, b"StartRequest\""),
            (Some(b'S'), _, _) => (Kind::StopSpan, b"StopSpan\""),
            (Some(b'T'), _, Some(b'a')) => (Kind::TagSpan, b"TagSpan\""),
            (Some(b'T'), _, _) => (Kind::TagRequest, b"TagRequest\""),
            (Some(b'F'), _, _) => (Kind::FinishRequest, b"FinishRequest\""),
            _ => (Kind::ApplicationEvent, b"ApplicationEvent\""),
        };
        if starts_with(rest, lit) {
            self.i += lit.len();
            self.expect(b':')?;
            return Some(kind);
        }
        self.i -= 1;
        Kind::of(self.key()?)
    }

    /// Digits of an integer starting at the cursor, if it is one serde reads as a `u64` or
    /// `i64` exactly as written: at most 18 digits, no leading zero, no fraction or exponent.
    /// Returns (negative, first digit, end).
    fn small_int(&self) -> Option<(bool, usize, usize)> {
        let neg = self.b.get(self.i) == Some(&b'-');
        let first = self.i + usize::from(neg);
        let mut end = first;
        while let Some(c) = self.b.get(end) {
            if !c.is_ascii_digit() {
                break;
            }
            end += 1;
        }
        let digits = end - first;
        if digits == 0 || digits > 18 || (digits > 1 && self.b[first] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.b.get(end) {
            return None;
        }
        Some((neg, first, end))
    }

    /// A tag or event value.
    fn value(&mut self, depth: usize) -> Option<TagValue<'a>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                Some(TagValue::Str(self.string_body()?))
            }
            b't' | b'f' | b'n' => Some(TagValue::from_value(self.literal()?)),
            b'0'..=b'9' => match self.small_int() {
                Some((_, first, end)) => {
                    let mut v = 0u64;
                    for &d in self.b.get(first..end)? {
                        v = v * 10 + u64::from(d - b'0');
                    }
                    self.i = end;
                    Some(TagValue::UInt(v))
                }
                None => self.delegated(depth).map(TagValue::from_value),
            },
            _ => self.delegated(depth).map(TagValue::from_value),
        }
    }

    /// A value that serde_json parses on its own: delimited here, then parsed from its slice.
    fn delegated(&mut self, depth: usize) -> Option<Value> {
        let start = self.i;
        match *self.b.get(self.i)? {
            b'{' | b'[' => {
                let mut level = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'{' | b'[' => {
                            level += 1;
                            if depth + level > MAX_DEPTH {
                                return None;
                            }
                        }
                        b'}' | b']' => {
                            level -= 1;
                            if level == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        b'"' => {
                            self.i += 1;
                            loop {
                                self.i = self.plain_run();
                                match *self.b.get(self.i)? {
                                    b'"' => break,
                                    b'\\' => self.i += 2,
                                    _ => self.i += 1,
                                }
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            b'-' | b'0'..=b'9' => {
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.i)
                {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        // serde_json checks the UTF-8 of the slice's strings as it reads them.
        serde_json::from_slice(self.b.get(start..self.i)?).ok()
    }

    /// Checks a value that is not read (stricter than JSON: see [`Self::small_int`]).
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string_body().map(drop)
            }
            b't' | b'f' | b'n' => self.literal().map(drop),
            b'-' | b'0'..=b'9' => {
                let (_, _, end) = self.small_int()?;
                self.i = end;
                Some(())
            }
            open @ (b'{' | b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.expect(b':')?;
                    }
                    self.skip(depth + 1)?;
                    if self.next_or_end(close)? {
                        return Some(());
                    }
                }
            }
            _ => None,
        }
    }

    /// `{"commands": [...]}`, the body of a `BatchCommand` (other keys are checked and ignored).
    fn batch(&mut self) -> Option<Command<'a>> {
        self.expect(b'{')?;
        let mut commands = None;
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            if same(self.key()?.as_bytes(), b"commands") {
                if commands.is_some() {
                    return None;
                }
                commands = Some(self.commands()?);
            } else {
                self.skip(2)?;
            }
            if self.next_or_end(b'}')? {
                break;
            }
        }
        commands.map(Command::Batch)
    }

    /// The array of a `BatchCommand`.
    fn commands(&mut self) -> Option<Vec<Command<'a>>> {
        self.expect(b'[')?;
        // About one command per 100 bytes in agents' batches.
        let mut out = spare_commands();
        out.reserve((self.b.len() - self.i) / 96 + 1);
        if self.peek()? == b']' {
            self.i += 1;
            return Some(out);
        }
        self.expect(b'{')?;
        loop {
            let kind = self.kind()?;
            out.push(self.body(kind, 5)?);
            // The end of this command and the start of the next: `}, {` (Python, the std
            // agent) or `},{` (Node) in one comparison, else token by token.
            let rest = self.b.get(self.i..)?;
            if starts_with(rest, b"}, {") {
                self.i += 4;
                continue;
            }
            if starts_with(rest, b"},{") {
                self.i += 3;
                continue;
            }
            self.expect(b'}')?;
            if self.next_or_end(b']')? {
                return Some(out);
            }
            self.expect(b'{')?;
        }
    }

    /// The body object of a command of kind `kind`, at nesting `depth` (its own level).
    fn body(&mut self, kind: Kind, depth: usize) -> Option<Command<'a>> {
        let at = self.i;
        if let Some(c) = self.usual_body(kind, depth) {
            return Some(c);
        }
        self.i = at;
        self.any_body(kind, depth)
    }

    /// A key given as its bytes and closing quote (`request_id"`), and its colon.
    #[inline]
    fn lit_key(&mut self, lit: &[u8]) -> Option<()> {
        self.expect(b'"')?;
        if !starts_with(self.b.get(self.i..)?, lit) {
            return None;
        }
        self.i += lit.len();
        self.expect(b':')
    }

    /// The separator `sep` (`{` or `,`) and the key `key` (given with its closing quote) with
    /// its colon: one comparison for the usual layouts (`spaced`: `, "key": `; `compact`:
    /// `,"key":`), else token by token with any whitespace.
    #[inline(always)]
    fn sep_key(&mut self, sep: u8, spaced: &[u8], compact: &[u8], key: &[u8]) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        if starts_with(rest, spaced) {
            self.i += spaced.len();
        } else if starts_with(rest, compact) {
            self.i += compact.len();
        } else {
            self.expect(sep)?;
            self.lit_key(key)?;
        }
        Some(())
    }

    /// The body of `kind` with exactly the fields the agents send, in their order (timestamp,
    /// request_id, span_id, then parent_id and operation, or tag and value), read in straight
    /// line; `None` for any other body, which [`Self::any_body`] then reads. Both read every
    /// field with the same function, so they agree on every body this one takes.
    fn usual_body(&mut self, kind: Kind, depth: usize) -> Option<Command<'a>> {
        // Python and the std agent write `{"key": ` and `, "key": `; Node writes `{"key":` and
        // `,"key":`.
        macro_rules! key {
            ('{', $k:literal) => {
                self.sep_key(
                    b'{',
                    concat!("{\"", $k, "\": ").as_bytes(),
                    concat!("{\"", $k, "\":").as_bytes(),
                    concat!($k, "\"").as_bytes(),
                )
            };
            (',', $k:literal) => {
                self.sep_key(
                    b',',
                    concat!(", \"", $k, "\": ").as_bytes(),
                    concat!(",\"", $k, "\":").as_bytes(),
                    concat!($k, "\"").as_bytes(),
                )
            };
        }
        if kind == Kind::ApplicationEvent {
            return None;
        }
        self.ws();
        key!('{', "timestamp")?;
        let ts = if matches!(kind, Kind::TagRequest | Kind::TagSpan) {
            // Not read, only checked to be JSON: usually a timestamp like the others.
            let at = self.i;
            if self.b.get(self.i) != Some(&b'"') || {
                self.i += 1;
                self.cached_timestamp().is_none()
            } {
                self.i = at;
                self.skip(depth)?;
            }
            None
        } else {
            self.timestamp()?
        };
        key!(',', "request_id")?;
        let request_id = self.cached(RID_AT, None)?;
        let cmd = match kind {
            Kind::StartRequest => Command::StartRequest { ts, request_id },
            Kind::FinishRequest => Command::FinishRequest { ts, request_id },
            Kind::TagRequest => {
                key!(',', "tag")?;
                let tag = self.cached_tag()?;
                key!(',', "value")?;
                let value = self.value(depth)?;
                Command::TagRequest {
                    request_id,
                    tag,
                    value,
                }
            }
            _ => {
                key!(',', "span_id")?;
                let span_id = self.cached(SID_AT, Some(PID_AT))?;
                match kind {
                    Kind::StopSpan => Command::StopSpan {
                        ts,
                        request_id,
                        span_id,
                    },
                    Kind::StartSpan => {
                        key!(',', "parent_id")?;
                        let parent_id = self.parent_id()?;
                        key!(',', "operation")?;
                        let operation = self.cached(OP_AT, None)?;
                        Command::StartSpan {
                            ts,
                            request_id,
                            span_id,
                            parent_id,
                            operation,
                        }
                    }
                    _ => {
                        key!(',', "tag")?;
                        let tag = self.cached_tag()?;
                        key!(',', "value")?;
                        let value = self.value(depth)?;
                        Command::TagSpan {
                            request_id,
                            span_id,
                            tag,
                            value,
                        }
                    }
                }
            }
        };
        self.expect(b'}')?;
        Some(cmd)
    }

    /// The body object of a command of kind `kind`, any key order, other keys ignored.
    fn any_body(&mut self, kind: Kind, depth: usize) -> Option<Command<'a>> {
        self.expect(b'{')?;
        let wanted = kind.fields();
        let mut f = Fields::default();
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            match self.field()? & wanted {
                0 => self.skip(depth)?,
                TS => f.ts = self.timestamp()?,
                RID => f.request_id = Some(self.cached(RID_AT, None)?),
                SID => f.span_id = Some(self.cached(SID_AT, Some(PID_AT))?),
                PID => f.parent_id = self.parent_id()?,
                OP => f.operation = Some(self.cached(OP_AT, None)?),
                TAG => f.tag = Some(self.cached_tag()?),
                VAL => f.value = Some(self.value(depth)?),
                ETYPE => f.event_type = Some(self.name()?),
                EVAL => f.event_value = Some(self.value(depth)?),
                _ => f.source = self.opt_name()?,
            }
            if self.next_or_end(b'}')? {
                break;
            }
        }
        Some(match kind {
            Kind::StartRequest => Command::StartRequest {
                ts: f.ts,
                request_id: f.request_id?,
            },
            Kind::TagRequest => Command::TagRequest {
                request_id: f.request_id?,
                tag: f.tag?,
                value: f.value?,
            },
            Kind::StartSpan => Command::StartSpan {
                ts: f.ts,
                request_id: f.request_id?,
                span_id: f.span_id?,
                parent_id: f.parent_id,
                operation: f.operation?,
            },
            Kind::TagSpan => Command::TagSpan {
                request_id: f.request_id?,
                span_id: f.span_id?,
                tag: f.tag?,
                value: f.value?,
            },
            Kind::StopSpan => Command::StopSpan {
                ts: f.ts,
                request_id: f.request_id?,
                span_id: f.span_id?,
            },
            Kind::FinishRequest => Command::FinishRequest {
                ts: f.ts,
                request_id: f.request_id?,
            },
            Kind::ApplicationEvent => Command::ApplicationEvent {
                ts: f.ts,
                event_type: f.event_type?,
                event_value: Box::new(f.event_value?.into_value()),
                source: f.source,
            },
        })
    }
}

/// Differential tests: whenever the scanner decodes a frame, the serde decoder decodes it to the
/// same command, and [`Command::parse`] always answers exactly as the serde decoder does.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_agent::protocol::ParseError;
    use scout_core::command::{self as core_cmd, Encode};
    use scout_core::json::{FnSink, Sink};
    use serde_json::json;

    const PY_FRAMES: &str =
        include_str!("../../tests/fixtures/local_agent/python-4.0.0-frames.json");

    /// Returns whether the fast path took the frame.
    fn check(text: &str) -> bool {
        let fast = parse(text);
        let serde = Command::parse_serde(text);
        let both = Command::parse(text);
        assert_eq!(format!("{both:?}"), format!("{serde:?}"), "{text}");
        match (fast, serde) {
            (None, _) => false,
            (Some(f), Ok(s)) => {
                assert_eq!(f, s, "{text}");
                true
            }
            (Some(f), Err(e)) => {
                let e = match e {
                    ParseError::Json(e) => e.to_string(),
                    ParseError::Decode(e) => e.message(),
                };
                panic!("fast path took a frame serde rejects ({e}): {text}\n{f:?}")
            }
        }
    }

    use super::super::test_rng::Rng;

    /// Text made of pieces that stress JSON escaping and UTF-8.
    fn text(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "req-", "span", "/", "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}",
            "é", "日本", "😀", "\u{2028}", "\u{ffff}", " ", "{", "}", "[", "]", ":", ",", "null",
            "\\u0041", "𝄞",
        ];
        let n = rng.below(12);
        (0..n).map(|_| *rng.pick(PIECES)).collect()
    }

    /// scout-core's commands, batched as its `Batch` encoder does.
    enum Cmd<'a> {
        StartRequest(core_cmd::StartRequest<'a>),
        TagRequest(core_cmd::TagRequest<'a>),
        StartSpan(core_cmd::StartSpan<'a>),
        TagSpan(core_cmd::TagSpan<'a>),
        StopSpan(core_cmd::StopSpan<'a>),
        FinishRequest(core_cmd::FinishRequest<'a>),
        Event(core_cmd::ApplicationEvent<'a, scout_core::Value<'a>>),
    }

    impl Encode for Cmd<'_> {
        fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
            match self {
                Self::StartRequest(c) => c.encode(out),
                Self::TagRequest(c) => c.encode(out),
                Self::StartSpan(c) => c.encode(out),
                Self::TagSpan(c) => c.encode(out),
                Self::StopSpan(c) => c.encode(out),
                Self::FinishRequest(c) => c.encode(out),
                Self::Event(c) => c.encode(out),
            }
        }
    }

    fn encode(c: &impl Encode) -> String {
        let mut v = Vec::new();
        let _ = c.encode(&mut FnSink(|b: &[u8]| v.extend_from_slice(b)));
        String::from_utf8(v).unwrap()
    }

    const RAW_JSON: &[&str] = &[
        r#"{"a": [1, 2.5, -3, true, null, "x\u00e9"], "b": {"c": {}}}"#,
        "[]",
        r#"[[[[["deep"]]]]]"#,
        r#"{"dup": 1, "dup": 2}"#,
        r#"{"n": 1e5, "m": -0, "big": 123456789012345678901234567890}"#,
        r#""just a string \ud83d\ude00""#,
        "  7  ",
    ];

    fn core_value<'a>(rng: &mut Rng, text: &'a str) -> scout_core::Value<'a> {
        use scout_core::Value as V;
        match rng.below(8) {
            0 => V::Str(text),
            1 => V::Int(*rng.pick(&[
                0,
                1,
                -1,
                17,
                61245,
                i64::MAX,
                i64::MIN,
                999_999_999_999_999_999,
                -1_000_000_000_000_000_000,
            ])),
            2 => V::Float(*rng.pick(&[
                0.07,
                -0.0,
                0.0,
                1e300,
                -1e-300,
                5e-324,
                f64::NAN,
                f64::INFINITY,
                0.1 + 0.2,
                123456789.0,
                2.5e15,
            ])),
            3 => V::Bool(rng.below(2) == 0),
            4 => V::Null,
            5 => {
                let raw: &&str = rng.pick(RAW_JSON);
                V::Json(scout_core::RawJson::new(raw).unwrap())
            }
            6 => V::Static("static"),
            _ => V::Int(rng.next() as i64),
        }
    }

    /// A random request's commands, encoded by scout-core, one string per command.
    fn core_commands(rng: &mut Rng) -> Vec<String> {
        let texts: Vec<String> = (0..8).map(|_| text(rng)).collect();
        let t = |rng: &mut Rng| {
            scout_core::Timestamp::from_secs_micros(
                rng.next() % 4_000_000_000,
                (rng.next() % 1_000_000) as u32,
            )
        };
        let rid = &texts[0];
        let sid = &texts[1];
        let mut out = Vec::new();
        for _ in 0..6 {
            let ts = t(rng);
            let c = match rng.below(7) {
                0 => Cmd::StartRequest(core_cmd::StartRequest {
                    timestamp: ts,
                    request_id: rid,
                }),
                1 => Cmd::TagRequest(core_cmd::TagRequest {
                    timestamp: ts,
                    request_id: rid,
                    tag: &texts[2],
                    value: core_value(rng, &texts[3]),
                }),
                2 => Cmd::StartSpan(core_cmd::StartSpan {
                    timestamp: ts,
                    request_id: rid,
                    span_id: sid,
                    parent_id: (rng.below(2) == 0).then_some(texts[4].as_str()),
                    operation: &texts[5],
                }),
                3 => Cmd::TagSpan(core_cmd::TagSpan {
                    timestamp: ts,
                    request_id: rid,
                    span_id: sid,
                    tag: &texts[6],
                    value: core_value(rng, &texts[7]),
                }),
                4 => Cmd::StopSpan(core_cmd::StopSpan {
                    timestamp: ts,
                    request_id: rid,
                    span_id: sid,
                }),
                5 => Cmd::FinishRequest(core_cmd::FinishRequest {
                    timestamp: ts,
                    request_id: rid,
                }),
                _ => Cmd::Event(core_cmd::ApplicationEvent {
                    timestamp: ts,
                    event_type: &texts[2],
                    event_value: core_value(rng, &texts[3]),
                    source: &texts[4],
                }),
            };
            out.push(encode(&c));
        }
        out
    }

    /// Python's `json.dumps` layout: `", "` and `": "`, non-ASCII as `\uXXXX` (surrogate pairs).
    fn python_style(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        ' '..='~' => out.push(ch),
                        _ => {
                            let mut units = [0u16; 2];
                            for u in ch.encode_utf16(&mut units) {
                                out.push_str(&format!("\\u{u:04x}"));
                            }
                        }
                    }
                }
                out.push('"');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_style(x, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_style(&Value::String(k.clone()), out);
                    out.push_str(": ");
                    python_style(x, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// The same value with every object's keys in a shuffled order.
    fn shuffled(v: &Value, rng: &mut Rng) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.iter().map(|x| shuffled(x, rng)).collect()),
            Value::Object(m) => {
                let mut entries: Vec<_> = m.iter().collect();
                for i in (1..entries.len()).rev() {
                    entries.swap(i, rng.below(i + 1));
                }
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, x)| (k.clone(), shuffled(x, rng)))
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }

    /// Re-serialisations of a valid frame: compact, pretty, Python-style, keys shuffled.
    fn layouts(text: &str, rng: &mut Rng) -> Vec<String> {
        let v: Value = serde_json::from_str(text).unwrap();
        let mut py = String::new();
        python_style(&v, &mut py);
        let mut shuffled_py = String::new();
        python_style(&shuffled(&v, rng), &mut shuffled_py);
        vec![
            text.to_owned(),
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap(),
            py,
            shuffled_py,
            serde_json::to_string(&shuffled(&v, rng)).unwrap(),
            format!(" \r\n\t{text}\n "),
        ]
    }

    const TOKENS: &[&str] = &[
        "\"request_id\"",
        "\"span_id\"",
        "\"parent_id\"",
        "\"operation\"",
        "\"tag\"",
        "\"value\"",
        "\"timestamp\"",
        "\"commands\"",
        "\"event_value\"",
        "null",
        ": ",
        ",",
        "[",
        "{",
        "}",
        "]",
        "StartSpan",
        "TagSpan",
        "\"",
        "\\",
        "+00:00",
        "0",
    ];
    const REPLACEMENTS: &[&str] = &[
        "\"x\"",
        "5",
        "null",
        "\"request\\u005fid\"",
        "1e400",
        "[]",
        "{}",
        "-0",
        "01",
        "\"\\ud800\"",
        "\"\\udc00\\ud800\"",
        "\"ok\", \"request_id\": 7",
        "true",
        "1.5",
        "\"2026-02-30T00:00:00Z\"",
        "\"Register\"",
        "\"BatchCommand\"",
        "",
        " ",
        "\u{0}",
        "é",
        "\"\\u00\"",
        "\"\\x\"",
        "}}",
        "{\"StopSpan\": {}}",
        "123456789012345678901",
        "-",
        "[[[[[[[[[[[[[[[[[[[[",
        "\"tag\", \"tag\": \"t2\"",
    ];

    /// Random malformed or unusual variants of a valid frame.
    fn mutations(text: &str, rng: &mut Rng, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut s = text.to_owned();
            for _ in 0..1 + rng.below(2) {
                match rng.below(5) {
                    0 => {
                        // Truncate at a char boundary.
                        let mut at = rng.below(s.len() + 1);
                        while !s.is_char_boundary(at) {
                            at -= 1;
                        }
                        s.truncate(at);
                    }
                    1 | 2 => {
                        // Replace one occurrence of a token.
                        let tok = rng.pick(TOKENS);
                        let hits: Vec<usize> = s.match_indices(tok).map(|(i, _)| i).collect();
                        if !hits.is_empty() {
                            let at = *rng.pick(&hits);
                            let with: &&str = rng.pick(REPLACEMENTS);
                            s.replace_range(at..at + tok.len(), with);
                        }
                    }
                    3 => {
                        // Insert a piece anywhere.
                        let mut at = rng.below(s.len() + 1);
                        while !s.is_char_boundary(at) {
                            at -= 1;
                        }
                        let piece = if rng.below(2) == 0 {
                            rng.pick(REPLACEMENTS)
                        } else {
                            rng.pick(TOKENS)
                        };
                        s.insert_str(at, piece);
                    }
                    _ => {
                        // Delete a char.
                        if let Some((at, ch)) =
                            s.char_indices().nth(rng.below(s.chars().count().max(1)))
                        {
                            s.replace_range(at..at + ch.len_utf8(), "");
                        }
                    }
                }
            }
            out.push(s);
        }
        out
    }

    fn python_messages() -> Vec<Value> {
        let v: Value = serde_json::from_str(PY_FRAMES).unwrap();
        v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["message"].clone())
            .collect()
    }

    fn fast_kind(v: &Value) -> bool {
        let name = v
            .as_object()
            .and_then(|m| m.keys().next())
            .map(String::as_str);
        matches!(
            name,
            Some(
                "BatchCommand"
                    | "ApplicationEvent"
                    | "StartRequest"
                    | "TagRequest"
                    | "StartSpan"
                    | "TagSpan"
                    | "StopSpan"
                    | "FinishRequest"
            )
        )
    }

    #[test]
    fn python_capture_frames_take_the_fast_path_in_every_layout() {
        let mut rng = Rng::new(0x5eed_1234_abcd_0001);
        let mut fast = 0;
        for msg in python_messages() {
            let base = serde_json::to_string(&msg).unwrap();
            for text in layouts(&base, &mut rng) {
                let took = check(&text);
                assert_eq!(took, fast_kind(&msg), "{text}");
                fast += usize::from(took);
            }
            for m in mutations(&base, &mut rng, 40) {
                check(&m);
            }
        }
        assert!(fast > 20, "{fast}");
    }

    #[test]
    fn scout_core_frames_agree_with_serde() {
        let mut rng = Rng::new(0x0dd_ba11_cafe_f00d);
        let (mut fast, mut total) = (0usize, 0usize);
        for _ in 0..300 {
            let cmds = core_commands(&mut rng);
            let batch = format!(
                "{{\"BatchCommand\": {{\"commands\": [{}]}}}}",
                cmds.join(", ")
            );
            let mut frames = cmds.clone();
            frames.push(batch);
            for frame in &frames {
                let v: Value = serde_json::from_str(frame).expect(frame);
                for text in layouts(frame, &mut rng) {
                    let took = check(&text);
                    // Every scout-core frame is taken, unless a name is too long or the raw JSON
                    // tag holds a number the scanner leaves to serde (none is: all are values).
                    assert!(took, "not taken: {text}");
                    fast += usize::from(took);
                    total += 1;
                }
                for m in mutations(frame, &mut rng, 6) {
                    check(&m);
                }
                assert!(fast_kind(&v));
            }
        }
        assert_eq!(fast, total);
    }

    /// A batch's command vector is handed to the next batch with its allocation.
    #[test]
    fn command_vectors_are_reused() {
        let frame = r#"{"BatchCommand": {"commands": [{"StartRequest": {"request_id": "r"}}]}}"#;
        let Some(Command::Batch(v)) = parse(frame) else {
            panic!("not taken")
        };
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        assert!(cap > 0);
        recycle_commands(v);
        let Some(Command::Batch(w)) = parse(frame) else {
            panic!("not taken")
        };
        assert_eq!((w.as_ptr() as usize, w.capacity()), (ptr, cap));
    }

    /// Timestamps that share their first 19 bytes take the remembered-prefix path; every
    /// fraction and zone form gives what the full parse gives, or the frame goes to serde.
    #[test]
    fn timestamps_with_a_shared_prefix_agree_with_serde() {
        let mut rng = Rng::new(0x7157_a3b0_5eed_0042);
        // Valid forms first; the last `BAD` of each list are not timestamps.
        const BAD: usize = 3;
        const FRACTIONS: &[&str] = &[
            "",
            ".1",
            ".123",
            ".123456",
            ".000000",
            ".999999",
            ".1234567",
            ".123456789",
            ".1234567890",
            ".12a456",
            ".12345\\u0036",
        ];
        const ZONES: &[&str] = &[
            "", "Z", "z", "+00:00", "-00:00", "+05:30", "-05:30", "+23:59", "+24:00", "+00:60",
            "+00:0",
        ];
        let form = |rng: &mut Rng, list: &[&'static str]| -> &'static str {
            let n = if rng.below(8) == 0 {
                list.len()
            } else {
                list.len() - BAD
            };
            list[rng.below(n)]
        };
        let mut taken = 0;
        for _ in 0..400 {
            let second = format!("2026-11-24T20:59:{:02}", rng.below(61));
            let commands: Vec<String> = (0..6)
                .map(|k| {
                    let ts = format!(
                        "{second}{}{}",
                        form(&mut rng, FRACTIONS),
                        form(&mut rng, ZONES)
                    );
                    match k % 3 {
                        0 => format!(
                            r#"{{"StartSpan": {{"timestamp": "{ts}", "request_id": "r", "span_id": "s{k}", "parent_id": null, "operation": "Job/x"}}}}"#
                        ),
                        1 => format!(
                            r#"{{"TagSpan": {{"timestamp": "{ts}", "request_id": "r", "span_id": "s{k}", "tag": "t", "value": 1}}}}"#
                        ),
                        _ => format!(
                            r#"{{"StopSpan":{{"timestamp":"{ts}","request_id":"r","span_id":"s{k}"}}}}"#
                        ),
                    }
                })
                .collect();
            let frame = format!(
                r#"{{"BatchCommand": {{"commands": [{}]}}}}"#,
                commands.join(", ")
            );
            taken += usize::from(check(&frame));
            for c in &commands {
                check(c);
            }
        }
        assert!(taken > 50, "{taken}");
    }

    #[test]
    fn random_bytes_and_token_soup_never_disagree() {
        let mut rng = Rng::new(0xfeed_face_0bad_c0de);
        const SOUP: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"",
            "\\",
            "\"BatchCommand\"",
            "\"commands\"",
            "\"StartRequest\"",
            "\"TagSpan\"",
            "\"request_id\"",
            "\"span_id\"",
            "\"tag\"",
            "\"value\"",
            "\"r\"",
            "null",
            "true",
            "1",
            "-2",
            "0.5",
            "\"2026-11-24T20:59:25.383953+00:00\"",
            "\"timestamp\"",
            "é",
            "\\u0041",
            "\n",
        ];
        for _ in 0..4000 {
            let n = rng.below(40);
            let text: String = if rng.below(3) == 0 {
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..n).map(|_| *rng.pick(SOUP)).collect()
            };
            check(&text);
        }
        // Valid frames from the soup's point of view, checked for agreement.
        for text in [
            r#"{"StartRequest":{"request_id":"r"}}"#,
            r#"{"TagSpan":{"span_id":"s","tag":"t","value":{"k":[1,{"x":null}]},"request_id":"r","extra":[true,false,{}]}}"#,
            r#"{"BatchCommand":{"other":[1,"x"],"commands":[]}}"#,
            r#"{"StartSpan":{"request_id":"r","span_id":"s","operation":"o","parent_id":null,"timestamp":null}}"#,
            r#"{"StartSpan":{"request_id":"r","request_id":"r2","span_id":"s","operation":"o"}}"#,
            r#"{"TagRequest":{"request_id":"r","tag":"t","value":"\ud83d\ude00 \u00e9\n\/"}}"#,
        ] {
            assert!(check(text), "{text}");
        }
        assert!(!check(
            r#"{"TagRequest":{"request_id":"r","tag":"t","value":"\ud83d"}}"#
        ));
        assert!(!check(&format!(
            r#"{{"StartRequest":{{"request_id":"{}"}}}}"#,
            "x".repeat(MAX_NAME_LEN + 1)
        )));
        assert!(check(&format!(
            r#"{{"StartRequest":{{"request_id":"{}"}}}}"#,
            "x".repeat(MAX_NAME_LEN)
        )));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!check(&format!(
            r#"{{"TagSpan":{{"request_id":"r","span_id":"s","tag":"t","value":{deep}}}}}"#
        )));
        assert!(!check(&format!(
            r#"{{"TagSpan":{{"request_id":"r","span_id":"s","tag":"t","other":{deep}}}}}"#
        )));
        let _ = json!(null);
    }
}
