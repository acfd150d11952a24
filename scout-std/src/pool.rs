//! Pooled request storage: what one request may hold is large (span limit 1 500), what most
//! hold is small. Requests use growable vectors with hard limits, taken from a pool and given
//! back after sending, so after warm-up no span, tag or request allocates.

use scout_core::request::{SpanRecord, TagRecord};
use scout_core::storage::{Buffer, CapacityError, Storage};
use scout_core::{Request, RequestIds, Timestamp};
use std::sync::Mutex;

/// A vector that grows up to `MAX` elements, then refuses.
#[derive(Debug)]
pub struct LimitedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> Default for LimitedVec<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const MAX: usize> LimitedVec<T, MAX> {
    fn shrink(&mut self, keep: usize) {
        if self.0.capacity() > keep {
            self.0.clear();
            self.0.shrink_to(keep);
        }
    }
    fn reserve_base(&mut self, n: usize) {
        self.0.reserve(n.min(MAX));
    }
    fn bytes(&self) -> usize {
        self.0.capacity() * size_of::<T>()
    }
}

impl<T, const MAX: usize> Buffer<T> for LimitedVec<T, MAX> {
    fn as_slice(&self) -> &[T] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
    fn try_push(&mut self, value: T) -> Result<(), T> {
        if self.0.len() >= MAX {
            return Err(value);
        }
        self.0.push(value);
        Ok(())
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn try_extend(&mut self, values: &[T]) -> Result<(), CapacityError>
    where
        T: Copy,
    {
        if self.0.len() + values.len() > MAX {
            return Err(CapacityError);
        }
        self.0.extend_from_slice(values);
        Ok(())
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }
    fn clear(&mut self) {
        self.0.clear()
    }
}

/// Most spans one request can store (the span limit applies first; default 1 500).
pub const MAX_SPANS: usize = 16_384;
/// Most tags one request can store.
pub const MAX_TAGS: usize = 32_768;
/// Most bytes of copied strings one request can store.
pub const MAX_ARENA: usize = 4 << 20;
/// Deepest nesting of open spans.
pub const MAX_DEPTH: usize = 256;

/// Heap storage with the limits above.
#[derive(Debug, Clone, Copy, Default)]
pub struct PooledStorage;

impl Storage for PooledStorage {
    type Spans = LimitedVec<SpanRecord, MAX_SPANS>;
    type Tags = LimitedVec<TagRecord, MAX_TAGS>;
    type Arena = LimitedVec<u8, MAX_ARENA>;
    type Stack = LimitedVec<u16, MAX_DEPTH>;
}

/// A request as the std agent stores it.
pub type StdRequest = Request<PooledStorage>;

/// Capacities kept when a request returns to the pool (larger ones are trimmed to these, so a
/// rare 1 500-span request does not keep its memory forever).
const KEEP_SPANS: usize = 64;
const KEEP_TAGS: usize = 128;
const KEEP_ARENA: usize = 8 * 1024;
const KEEP_DEPTH: usize = 32;
/// Capacities reserved for a new pooled request (it grows beyond them by doubling).
const BASE_SPANS: usize = 16;
const BASE_TAGS: usize = 32;
const BASE_ARENA: usize = 1024;
const BASE_DEPTH: usize = 16;
/// Requests kept for reuse.
const POOL_SIZE: usize = 1024;

/// A pool of boxed requests.
#[derive(Debug, Default)]
// The boxes are what the pool hands out and takes back: no extra indirection.
#[allow(clippy::vec_box)]
pub(crate) struct Pool {
    free: Mutex<Vec<Box<StdRequest>>>,
}

impl Pool {
    /// A request begun with `ids` at `now`.
    pub(crate) fn take(&self, ids: RequestIds, now: Timestamp, span_limit: u32) -> Box<StdRequest> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut req = reused.unwrap_or_else(|| {
            let mut fresh: Box<StdRequest> = Box::default();
            let (spans, tags, arena, stack) = fresh.storage_mut();
            spans.reserve_base(BASE_SPANS);
            tags.reserve_base(BASE_TAGS);
            arena.reserve_base(BASE_ARENA);
            stack.reserve_base(BASE_DEPTH);
            fresh
        });
        req.begin(ids, now, span_limit);
        req
    }

    /// Gives a request back for reuse.
    pub(crate) fn give(&self, mut req: Box<StdRequest>) {
        trim(&mut req);
        if let Ok(mut f) = self.free.lock()
            && f.len() < POOL_SIZE
        {
            f.push(req);
        }
    }
}

fn trim(req: &mut StdRequest) {
    let (spans, tags, arena, stack) = req.storage_mut();
    spans.shrink(KEEP_SPANS);
    tags.shrink(KEEP_TAGS);
    arena.shrink(KEEP_ARENA);
    stack.shrink(KEEP_DEPTH);
}

/// Bytes of heap a request holds (its buffers' capacities plus the box).
pub fn request_bytes(req: &StdRequest) -> usize {
    let (spans, tags, arena, stack) = req.storage();
    size_of::<StdRequest>() + spans.bytes() + tags.bytes() + arena.bytes() + stack.bytes()
}
