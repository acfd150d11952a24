//! The messages of the device protocol (see the [module docs](super)).

use serde::{Deserialize, Serialize};

/// The protocol version a device announces in [`Hello::version`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Most spans one device request can carry (the parent index is one byte).
pub const MAX_SPANS: usize = 255;
/// Most tags one device request can carry.
pub const MAX_TAGS: usize = 255;

/// `parent` of a root span (other spans carry their parent's index plus one).
pub const ROOT: u8 = 0;
/// The name id that means "no name" (a name table that was full); the gateway substitutes
/// [`UNNAMED`].
pub const NO_NAME: u16 = 0;
/// The operation the gateway uses for [`NO_NAME`].
pub const UNNAMED: &str = "Device/unnamed";

/// A message from a device to the gateway.
///
/// A decoded request holds its spans and tags inline (no allocation), which makes this enum
/// about 12 KiB: decode it on a task or thread stack, not in small interrupt stacks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Up<'a> {
    /// First message of every connection (variant 0).
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Defines a name id for this connection (variant 1).
    #[serde(borrow)]
    Name(NameDef<'a>),
    /// A finished request (variant 2).
    #[serde(borrow)]
    Request(WireRequest<'a>),
    /// Cumulative drop counters since boot (variant 3).
    Drops(DeviceDrops),
    /// The device's answer to [`Down::TimeSync`] (variant 4).
    TimeSync(TimeSyncReply),
}

/// A message from the gateway to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Down {
    /// The hello was accepted (variant 0).
    Welcome {
        /// The gateway's protocol version.
        version: u8,
    },
    /// The hello was refused; the gateway closes the link (variant 1).
    Reject {
        /// Why, see [`RejectReason`].
        reason: RejectReason,
    },
    /// Asks for the device's uptime now (variant 2); answered by [`Up::TimeSync`].
    TimeSync {
        /// Echoed in the reply.
        id: u32,
    },
}

/// Why the gateway refused a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RejectReason {
    /// Unknown device or wrong token.
    Unauthorized,
    /// Protocol version not supported.
    Version,
    /// The first message was not a hello.
    Protocol,
}

/// First message of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello<'a> {
    /// [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Stable device id (serial number, MAC, …).
    pub device_id: &'a str,
    /// Firmware revision.
    pub firmware: &'a str,
    /// Device or fleet token the gateway authenticates (never the Scout key).
    pub token: &'a str,
    /// Ticks per second of every time in [`WireRequest`] and [`TimeSyncReply`].
    pub tick_hz: u32,
    /// Ticks since boot when the hello was written.
    pub uptime: u64,
}

/// Defines `id` as `name` for the rest of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NameDef<'a> {
    /// The id (never [`NO_NAME`]).
    pub id: u16,
    /// Operation name or tag key.
    pub name: &'a str,
}

/// A finished request: one root span and its descendants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRequest<'a> {
    /// Per-boot sequence number (gaps mean lost requests).
    pub seq: u32,
    /// Ticks since boot at the request start.
    pub start: u64,
    /// Ticks from start to finish.
    pub duration: u32,
    /// Spans in start order; span 0 is the root.
    pub spans: heapless::Vec<WireSpan, MAX_SPANS>,
    /// Request and span tags.
    #[serde(borrow)]
    pub tags: heapless::Vec<WireTag<'a>, MAX_TAGS>,
    /// Spans and tags the device could not record in this request.
    pub dropped: u32,
}

/// One span: 4 fields, 4 to 14 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WireSpan {
    /// [`ROOT`], or the parent's index plus one (the parent always comes earlier).
    pub parent: u8,
    /// Name id of the operation.
    pub name: u16,
    /// Ticks from the parent's start (the request's start for the root).
    pub start: u32,
    /// Ticks from start to stop.
    pub duration: u32,
}

/// One tag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WireTag<'a> {
    /// 0 for a request tag, or the span's index plus one.
    pub target: u8,
    /// Name id of the key.
    pub key: u16,
    /// The value.
    #[serde(borrow)]
    pub value: WireValue<'a>,
}

/// A tag value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireValue<'a> {
    /// JSON `null` (variant 0).
    Null,
    /// A boolean (variant 1).
    Bool(bool),
    /// An integer, zigzag varint (variant 2).
    Int(i64),
    /// A float, 8 bytes little-endian (variant 3).
    Float(f64),
    /// Text (variant 4).
    Str(&'a str),
}

/// Cumulative counts since boot of what the device dropped. All saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceDrops {
    /// Finished requests dropped because the send queue was full.
    pub queue_full: u32,
    /// Finished requests dropped because no link was attached.
    pub no_link: u32,
    /// Finished requests dropped because they did not fit one frame.
    pub too_large: u32,
    /// Transactions not recorded because every request slot was busy.
    pub no_slot: u32,
    /// Spans and tags not recorded inside requests (capacity, depth, span limit).
    pub items: u32,
    /// Names that did not fit the name table (sent as [`NO_NAME`]).
    pub names: u32,
    /// Frames lost because the link failed while writing them.
    pub link_errors: u32,
}

impl DeviceDrops {
    /// The counts in wire order (the order of the fields).
    pub fn counts(&self) -> [u32; 7] {
        [
            self.queue_full,
            self.no_link,
            self.too_large,
            self.no_slot,
            self.items,
            self.names,
            self.link_errors,
        ]
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.counts().iter().map(|&v| u64::from(v)).sum()
    }
}

/// The device's answer to [`Down::TimeSync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimeSyncReply {
    /// The request's id.
    pub id: u32,
    /// Ticks since boot when the request was handled.
    pub uptime: u64,
}
