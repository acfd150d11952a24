//! Request and span ids (`req-<uuid4>`, `span-<uuid4>`), formatted without allocation.
//!
//! A request draws 32 random bytes once, from an [`Entropy`] source, when it starts: 16 for its
//! own UUID and 16 as a seed for its spans. Span ids are derived at encoding time from the seed
//! and the span's index through a bijective mixer, so they are distinct within a request, random
//! looking across requests, and starting a span never touches the entropy source.

/// A source of random bytes.
pub trait Entropy {
    /// Fills `buf` with random bytes. Must not block or panic.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A small, fast, non-cryptographic generator (SplitMix64), for ids.
///
/// Seed it from a real entropy source (hardware RNG, OS randomness, the device id and boot
/// time) so that ids of different processes or devices do not collide.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }
}

impl Entropy for SplitMix64 {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SplitMix64's finaliser: a bijection on `u64`.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Random material of one request: its UUID and the seed of its span ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestIds {
    uuid: [u8; 16],
    span_seed: [u64; 2],
}

/// Length of `req-` plus a hyphenated UUID.
pub const REQUEST_ID_LEN: usize = 40;
/// Length of `span-` plus a hyphenated UUID.
pub const SPAN_ID_LEN: usize = 41;

impl RequestIds {
    /// Draws fresh ids.
    pub fn generate<E: Entropy + ?Sized>(entropy: &mut E) -> Self {
        let mut b = [0u8; 32];
        entropy.fill(&mut b);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[..16]);
        let lo = u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]);
        let hi = u64::from_le_bytes([b[24], b[25], b[26], b[27], b[28], b[29], b[30], b[31]]);
        Self {
            uuid,
            span_seed: [lo, hi],
        }
    }

    /// Builds ids from explicit values (for tests and for relaying ids received from devices).
    pub const fn from_parts(uuid: [u8; 16], span_seed: [u64; 2]) -> Self {
        Self { uuid, span_seed }
    }

    /// The request id, `req-<uuid4>`.
    pub fn request_id(&self) -> IdStr<REQUEST_ID_LEN> {
        IdStr::format(b"req-", self.uuid)
    }

    /// The id of the span with index `index` in this request, `span-<uuid4>`.
    pub fn span_id(&self, index: u16) -> IdStr<SPAN_ID_LEN> {
        let i = u64::from(index);
        let lo = mix64(self.span_seed[0] ^ i);
        let hi = mix64(self.span_seed[1].wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        IdStr::format(b"span-", b)
    }
}

/// A formatted id held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdStr<const N: usize> {
    buf: [u8; N],
}

impl<const N: usize> IdStr<N> {
    fn format(prefix: &[u8], mut uuid: [u8; 16]) -> Self {
        uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
        uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
        let mut buf = [b'-'; N];
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut pos = prefix.len();
        for (i, byte) in uuid.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                pos += 1; // keep the '-'
            }
            buf[pos] = HEX[usize::from(byte >> 4)];
            buf[pos + 1] = HEX[usize::from(byte & 0xf)];
            pos += 2;
        }
        Self { buf }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits, '-' and an ASCII prefix are ever written.
        core::str::from_utf8(&self.buf).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Debug for IdStr<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> core::fmt::Display for IdStr<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid4_format() {
        let ids = RequestIds::from_parts([0xff; 16], [1, 2]);
        assert_eq!(
            ids.request_id().as_str(),
            "req-ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        let s = ids.span_id(0);
        let s = s.as_str();
        assert_eq!(s.len(), SPAN_ID_LEN);
        assert!(s.starts_with("span-"));
        assert_eq!(&s[19..20], "4");
        assert!(matches!(&s[24..25], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn span_ids_distinct_within_request() {
        let mut rng = SplitMix64::new(7);
        let ids = RequestIds::generate(&mut rng);
        let mut seen: heapless::Vec<IdStr<SPAN_ID_LEN>, 512> = heapless::Vec::new();
        for i in 0..512u16 {
            let id = ids.span_id(i);
            assert!(!seen.contains(&id));
            seen.push(id).unwrap();
        }
    }
}
