//! The messages of the device protocol (see the [module docs](super)).

use serde::{Deserialize, Serialize};

/// The protocol version a device announces in [`Hello::version`].
pub const PROTOCOL_VERSION: u8 = 2;

/// The name id that means "no name" (a name table that was full); the gateway substitutes
/// [`UNNAMED`].
pub const NO_NAME: u16 = 0;
/// The operation the gateway uses for [`NO_NAME`].
pub const UNNAMED: &str = "Device/unnamed";

/// A message from a device to the gateway.
///
/// Hello, names, drops and time-sync replies are postcard values; a request is a postcard
/// header followed by a stream of postcard [`Event`]s (see [`Journal`]), so this enum is
/// written by [`super::FrameWriter`] and read by [`super::decode_up`], not by serde.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Up<'a> {
    /// First message of every connection (variant 0).
    Hello(Hello<'a>),
    /// Defines a name id for this connection (variant 1).
    Name(NameDef<'a>),
    /// A finished request (variant 2).
    Request(Journal<'a>),
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
    /// Ticks per second of every time in a [`Journal`] and a [`TimeSyncReply`].
    pub tick_hz: u32,
    /// Ticks since boot when the hello was written.
    pub uptime: u64,
    /// Completed spans per request after which the gateway drops new spans (the device's
    /// `span_limit`; the gateway applies it while replaying each request).
    pub span_limit: u32,
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

/// A finished request as it travels: its sequence number and start, and its [`Event`]s in
/// the order the device recorded them, ending with [`Event::End`].
///
/// On the wire (variant 2 of [`Up`]): `seq` and `start` as postcard varints, then each event
/// as a postcard value, back to back (no count: a device appends events while it records and
/// never rewrites what it wrote), the last one `End`. [`super::decode_up`] checks every event
/// before returning a journal; [`Journal::events`] then reads them again without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journal<'a> {
    /// Per-boot sequence number, in finishing order (gaps mean lost requests).
    pub seq: u32,
    /// Ticks since boot at the request start.
    pub start: u64,
    /// The encoded events (postcard, without COBS), `End` last.
    pub events: &'a [u8],
}

/// One recorded step of a request. Times are deltas in ticks from the previous timed event
/// (`Start`, `StartWith`, `Stop`, `End`), the first from the request start, so they are never
/// negative and usually one or two bytes.
///
/// The gateway replays the events into a [`crate::Request`] with the same calls, so ignore
/// flags, the span limit, tag replacement and nesting follow the core's rules exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// Stops the innermost open span (variant 0). The root is stopped by `End` only.
    Stop {
        /// Ticks since the previous timed event.
        delta: u32,
    },
    /// Opens a span under the innermost open span (variant 1); the first one is the root.
    Start {
        /// Name id of the operation.
        name: u16,
        /// Ticks since the previous timed event.
        delta: u32,
    },
    /// `Start` with [`crate::SpanFlags`] bits (variant 2): 1 ignore, 2 ignore children.
    StartWith {
        /// Name id of the operation.
        name: u16,
        /// The flag bits.
        flags: u8,
        /// Ticks since the previous timed event.
        delta: u32,
    },
    /// Tags the innermost open span (variant 3).
    SpanTag {
        /// Name id of the key.
        key: u16,
        /// The value.
        #[serde(borrow)]
        value: WireValue<'a>,
    },
    /// Tags the request (variant 4).
    RequestTag {
        /// Name id of the key.
        key: u16,
        /// The value.
        #[serde(borrow)]
        value: WireValue<'a>,
    },
    /// Stops every open span and finishes the request (variant 5): the last event.
    End {
        /// Ticks since the previous timed event.
        delta: u32,
        /// Spans and tags the device could not record in this request.
        dropped: u32,
    },
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

impl<'a> From<crate::Value<'a>> for WireValue<'a> {
    /// A core tag value as it travels (JSON text as a string).
    fn from(v: crate::Value<'a>) -> Self {
        use crate::Value;
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Int(i) => Self::Int(i),
            Value::Float(f) => Self::Float(f),
            Value::Str(s) | Value::Static(s) => Self::Str(s),
            Value::Json(j) => Self::Str(j.as_str()),
        }
    }
}

impl<'a> From<WireValue<'a>> for crate::Value<'a> {
    /// A tag value as the gateway passes it to a core request.
    fn from(v: WireValue<'a>) -> Self {
        use crate::Value;
        match v {
            WireValue::Null => Value::Null,
            WireValue::Bool(b) => Value::Bool(b),
            WireValue::Int(i) => Value::Int(i),
            WireValue::Float(f) => Value::Float(f),
            WireValue::Str(s) => Value::Str(s),
        }
    }
}

/// Cumulative counts since boot of what the device dropped. All saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceDrops {
    /// Transactions not recorded because the request slots held finished requests waiting for
    /// the link (the send queue was full).
    pub queue_full: u32,
    /// As `queue_full`, before any link had attached since boot.
    pub no_link: u32,
    /// Requests not sent because even their root span did not fit a slot.
    pub too_large: u32,
    /// Transactions not recorded because every request slot was recording.
    pub no_slot: u32,
    /// Spans and tags not recorded inside requests (no room left in the slot).
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
