//! Where a request keeps its spans, tags and strings: fixed-capacity by default, pluggable.
//!
//! [`Fixed`] keeps everything inline in `heapless` vectors, with capacities as const generics.
//! The std adapter plugs in pooled vectors instead, so that one request can still record
//! thousands of spans while a thousand small requests stay small (see `scout-std`).

use crate::request::{SpanRecord, TagRecord};

/// A buffer had no room for what was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CapacityError;

impl core::fmt::Display for CapacityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("buffer capacity exceeded")
    }
}

impl core::error::Error for CapacityError {}

/// A growable-up-to-a-limit vector.
///
/// Implementations must never panic; `try_push` and `try_extend` report a full buffer by
/// returning an error and leaving the contents unchanged.
pub trait Buffer<T>: Default {
    /// The elements.
    fn as_slice(&self) -> &[T];
    /// The elements, mutably.
    fn as_mut_slice(&mut self) -> &mut [T];
    /// Appends one element.
    fn try_push(&mut self, value: T) -> Result<(), T>;
    /// Removes and returns the last element.
    fn pop(&mut self) -> Option<T>;
    /// Appends all of `values`, or nothing.
    fn try_extend(&mut self, values: &[T]) -> Result<(), CapacityError>
    where
        T: Copy;
    /// Shortens to `len` elements (no effect if already shorter).
    fn truncate(&mut self, len: usize);
    /// Removes all elements (keeping any reserved memory).
    fn clear(&mut self);
    /// Number of elements.
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Buffer<T> for heapless::Vec<T, N> {
    #[inline]
    fn as_slice(&self) -> &[T] {
        self
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }
    #[inline]
    fn try_push(&mut self, value: T) -> Result<(), T> {
        self.push(value)
    }
    #[inline]
    fn pop(&mut self) -> Option<T> {
        Self::pop(self)
    }
    #[inline]
    fn try_extend(&mut self, values: &[T]) -> Result<(), CapacityError>
    where
        T: Copy,
    {
        if self.capacity() - Self::len(self) < values.len() {
            return Err(CapacityError);
        }
        for v in values {
            // Cannot fail: capacity checked above.
            let _ = self.push(*v);
        }
        Ok(())
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        Self::truncate(self, len)
    }
    #[inline]
    fn clear(&mut self) {
        Self::clear(self)
    }
}

/// The four buffers of a request.
pub trait Storage {
    /// Spans, in start order.
    type Spans: Buffer<SpanRecord>;
    /// Span and request tags.
    type Tags: Buffer<TagRecord>;
    /// Bytes of copied strings (operation names, tag keys and string values).
    type Arena: Buffer<u8>;
    /// The stack of open spans.
    type Stack: Buffer<u16>;
}

/// Inline, fixed-capacity storage: `SPANS` spans, `TAGS` tags, `ARENA` bytes of strings and
/// `DEPTH` levels of nesting. Nothing here allocates.
///
/// Memory per request is about `SPANS * 48 + TAGS * 48 + ARENA + DEPTH * 2` bytes
/// (`size_of::<Request<Fixed<..>>>()` is exact); the defaults take about 11 KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed<
    const SPANS: usize = 64,
    const TAGS: usize = 128,
    const ARENA: usize = 4096,
    const DEPTH: usize = 32,
>;

impl<const SPANS: usize, const TAGS: usize, const ARENA: usize, const DEPTH: usize> Storage
    for Fixed<SPANS, TAGS, ARENA, DEPTH>
{
    type Spans = heapless::Vec<SpanRecord, SPANS>;
    type Tags = heapless::Vec<TagRecord, TAGS>;
    type Arena = heapless::Vec<u8, ARENA>;
    type Stack = heapless::Vec<u16, DEPTH>;
}
