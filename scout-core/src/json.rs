//! A streaming JSON writer over a byte [`Sink`], with no allocation.
//!
//! The output style matches the Python agent's `json.dumps` defaults byte for byte: `", "` between
//! items, `": "` after keys, and `ensure_ascii` (every non-ASCII character and every control
//! character written as a `\uXXXX` escape, characters outside the Basic Multilingual Plane as a
//! surrogate pair). The output is therefore pure ASCII and always valid JSON. Floats that JSON
//! cannot represent (NaN, +/- infinity) are written as `null` (Python would emit the invalid
//! tokens `NaN` / `Infinity`).

use core::convert::Infallible;
use core::fmt::Write as _;

/// A destination for encoded bytes.
///
/// Implementations must either accept all bytes or return an error; a partial write followed by
/// an error leaves the sink in an unspecified state (the caller discards it).
pub trait Sink {
    /// Error returned when the bytes cannot be accepted.
    type Error;
    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

impl<S: Sink + ?Sized> Sink for &mut S {
    type Error = S::Error;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).write(bytes)
    }
}

/// The caller's buffer was too small for the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferFull;

impl core::fmt::Display for BufferFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("output buffer full")
    }
}

impl core::error::Error for BufferFull {}

/// A sink writing into a caller-provided byte slice.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// A sink that writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }
    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Consumes the sink, returning the written part of the buffer.
    pub fn into_written(self) -> &'a mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Sink for SliceSink<'_> {
    type Error = BufferFull;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferFull)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BufferFull)?;
        copy_small(dst, bytes);
        self.len = end;
        Ok(())
    }
}

/// Copies without a `memcpy` call for the short pieces JSON encoding produces.
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    if src.len() <= 16 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// A sink that only counts bytes (used to compute frame lengths without buffering).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink {
    /// Bytes counted so far.
    pub count: usize,
}

impl Sink for CountingSink {
    type Error = Infallible;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.count = self.count.saturating_add(bytes.len());
        Ok(())
    }
}

impl<const N: usize> Sink for heapless::Vec<u8, N> {
    type Error = BufferFull;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        self.extend_from_slice(bytes).map_err(|_| BufferFull)
    }
}

/// Adapts any `FnMut(&[u8])` (for instance `|b| vec.extend_from_slice(b)` in std code) as a sink
/// that cannot fail.
pub struct FnSink<F>(pub F);

impl<F> core::fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FnSink")
    }
}

impl<F: FnMut(&[u8])> Sink for FnSink<F> {
    type Error = Infallible;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        (self.0)(bytes);
        Ok(())
    }
}

/// Adapts an [`embedded_io::Write`] as a sink (blocking writes; use with buffered or in-memory
/// writers on the hot path).
#[derive(Debug)]
pub struct IoSink<W>(pub W);

impl<W: embedded_io::Write> Sink for IoSink<W> {
    type Error = W::Error;
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), W::Error> {
        self.0.write_all(bytes)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `true` for bytes written as they are: printable ASCII except `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Writes text known to need no escaping (ids, timestamps) between quotes... without quotes.
#[inline]
pub(crate) fn write_plain<S: Sink + ?Sized>(out: &mut S, s: &str) -> Result<(), S::Error> {
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        out.write(s.as_bytes())
    } else {
        write_escaped_body(out, s)
    }
}

/// Writes `s` as a quoted JSON string with Python's `ensure_ascii` escaping.
pub fn write_str<S: Sink + ?Sized>(out: &mut S, s: &str) -> Result<(), S::Error> {
    out.write(b"\"")?;
    write_escaped_body(out, s)?;
    out.write(b"\"")
}

/// The escaped content of a JSON string, without the quotes.
fn write_escaped_body<S: Sink + ?Sized>(out: &mut S, s: &str) -> Result<(), S::Error> {
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if PLAIN[usize::from(b)] {
            i += 1;
            continue;
        }
        if run_start < i {
            out.write(&bytes[run_start..i])?;
        }
        if b < 0x80 {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => {
                    write_u_escape(out, u16::from(b))?;
                    i += 1;
                    run_start = i;
                    continue;
                }
            };
            out.write(esc)?;
            i += 1;
        } else {
            // Decode one UTF-8 scalar (the input is a valid &str).
            let width = utf8_width(b);
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write_u_escape(out, *unit)?;
            }
            i += width;
        }
        run_start = i;
    }
    if run_start < bytes.len() {
        out.write(&bytes[run_start..])?;
    }
    Ok(())
}

#[inline]
fn utf8_width(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

fn write_u_escape<S: Sink + ?Sized>(out: &mut S, unit: u16) -> Result<(), S::Error> {
    let buf = [
        b'\\',
        b'u',
        HEX[usize::from(unit >> 12)],
        HEX[usize::from((unit >> 8) & 0xf)],
        HEX[usize::from((unit >> 4) & 0xf)],
        HEX[usize::from(unit & 0xf)],
    ];
    out.write(&buf)
}

/// Writes a signed integer.
pub fn write_i64<S: Sink + ?Sized>(out: &mut S, v: i64) -> Result<(), S::Error> {
    if v < 0 {
        out.write(b"-")?;
    }
    write_u64(out, v.unsigned_abs())
}

/// Writes an unsigned integer.
pub fn write_u64<S: Sink + ?Sized>(out: &mut S, mut v: u64) -> Result<(), S::Error> {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.write(&buf[pos..])
}

/// Fixed-size text buffer for `core::fmt` output.
struct FmtBuf {
    buf: [u8; 40],
    len: usize,
}

impl core::fmt::Write for FmtBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a float as the shortest text that reads back to the same value (like Python's
/// `repr`, e.g. `0.5`, `1.0`, `1e-07`, `5.2e+54`); NaN and infinities become `null`.
pub fn write_f64<S: Sink + ?Sized>(out: &mut S, v: f64) -> Result<(), S::Error> {
    if !v.is_finite() {
        return out.write(b"null");
    }
    let mut fb = FmtBuf {
        buf: [0; 40],
        len: 0,
    };
    // `{:?}` prints the shortest round-trip form, always with a `.` or an exponent. It never
    // exceeds 40 bytes for a finite f64 (at most 17 significant digits plus sign and exponent).
    if write!(fb, "{v:?}").is_err() {
        return out.write(b"null");
    }
    let text = &fb.buf[..fb.len];
    // Python writes exponents with a sign and at least two digits (`1e-05`, `5.2e+54`).
    match text.iter().position(|&b| b == b'e') {
        None => out.write(text),
        Some(e) => {
            out.write(&text[..=e])?;
            let (sign, digits) = match text.get(e + 1) {
                Some(b'-') => (b"-", &text[e + 2..]),
                _ => (b"+", &text[e + 1..]),
            };
            out.write(sign)?;
            if digits.len() < 2 {
                out.write(b"0")?;
            }
            out.write(digits)
        }
    }
}

/// Writes `true` or `false`.
#[inline]
pub fn write_bool<S: Sink + ?Sized>(out: &mut S, v: bool) -> Result<(), S::Error> {
    out.write(if v { b"true" } else { b"false" })
}

/// Writes `"key": ` (a quoted key followed by Python's `": "` separator).
#[inline]
pub fn write_key<S: Sink + ?Sized>(out: &mut S, key: &str) -> Result<(), S::Error> {
    write_str(out, key)?;
    out.write(b": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> heapless::String<256> {
        let mut v: heapless::Vec<u8, 256> = heapless::Vec::new();
        write_str(&mut v, s).unwrap();
        heapless::String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_like_python_ensure_ascii() {
        assert_eq!(enc("plain"), "\"plain\"");
        assert_eq!(enc("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(enc("\n\r\t\u{8}\u{c}"), "\"\\n\\r\\t\\b\\f\"");
        assert_eq!(enc("\u{1}\u{1f}\u{7f}"), "\"\\u0001\\u001f\\u007f\"");
        assert_eq!(enc("é"), "\"\\u00e9\"");
        assert_eq!(enc("€x"), "\"\\u20acx\"");
        assert_eq!(enc("😀"), "\"\\ud83d\\ude00\"");
        assert_eq!(enc(""), "\"\"");
    }

    #[test]
    fn numbers() {
        let mut v: heapless::Vec<u8, 64> = heapless::Vec::new();
        write_i64(&mut v, i64::MIN).unwrap();
        v.extend_from_slice(b" ").unwrap();
        write_u64(&mut v, 0).unwrap();
        v.extend_from_slice(b" ").unwrap();
        write_f64(&mut v, 0.5).unwrap();
        v.extend_from_slice(b" ").unwrap();
        write_f64(&mut v, 1.0).unwrap();
        v.extend_from_slice(b" ").unwrap();
        write_f64(&mut v, f64::NAN).unwrap();
        v.extend_from_slice(b" ").unwrap();
        write_f64(&mut v, f64::NEG_INFINITY).unwrap();
        assert_eq!(&v[..], b"-9223372036854775808 0 0.5 1.0 null null");
        // Python's repr: exponent with a sign and two digits at least.
        for (x, py) in [
            (1e-5, "1e-05"),
            (5.2e54, "5.2e+54"),
            (1e16, "1e+16"),
            (1.5e-300, "1.5e-300"),
            (0.0001, "0.0001"),
            (-2e22, "-2e+22"),
        ] {
            let mut v: heapless::Vec<u8, 64> = heapless::Vec::new();
            write_f64(&mut v, x).unwrap();
            assert_eq!(core::str::from_utf8(&v).unwrap(), py);
        }
    }

    #[test]
    fn slice_sink_reports_full() {
        let mut buf = [0u8; 4];
        let mut s = SliceSink::new(&mut buf);
        assert_eq!(write_str(&mut s, "abcdef"), Err(BufferFull));
    }
}
