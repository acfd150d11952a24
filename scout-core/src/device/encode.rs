//! The name table that gives names their small ids on the wire.

use super::wire::NO_NAME;

/// Ticks per second of the times `scout-embassy` records (microseconds, like
/// [`crate::Timestamp`]).
pub const MICROS_HZ: u32 = 1_000_000;

/// Maps names to the small ids sent on the wire.
pub trait NameLookup {
    /// The id of `name`, or [`NO_NAME`].
    fn id_of(&self, name: &str) -> u16;
}

/// A fixed table of up to `N` `'static` names, append-only; name `i` has id `i + 1`.
///
/// Ids are stable for the life of the table, so requests encoded before a connection exists
/// stay valid; a forwarder sends the definitions of all names at the start of each connection
/// and of new names before the first frame that uses them.
#[derive(Debug)]
pub struct NameTable<const N: usize> {
    names: heapless::Vec<&'static str, N>,
}

impl<const N: usize> Default for NameTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> NameTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            names: heapless::Vec::new(),
        }
    }

    /// The id of `name`, adding it if new; `None` when the table is full.
    pub fn intern(&mut self, name: &'static str) -> Option<u16> {
        let id = self.id_of(name);
        if id != NO_NAME {
            return Some(id);
        }
        if self.names.len() >= usize::from(u16::MAX - 1) {
            return None;
        }
        self.names.push(name).ok()?;
        Some(self.names.len() as u16)
    }

    /// The name with id `id`.
    pub fn get(&self, id: u16) -> Option<&'static str> {
        self.names.get(usize::from(id).checked_sub(1)?).copied()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl<const N: usize> NameLookup for NameTable<N> {
    fn id_of(&self, name: &str) -> u16 {
        for (i, n) in self.names.iter().enumerate() {
            if same(n, name) {
                return (i + 1) as u16;
            }
        }
        NO_NAME
    }
}

/// String equality byte by byte (no `memcmp`/`bcmp` on a device).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a.get(i) != b.get(i) {
            return false;
        }
        i += 1;
    }
    true
}
