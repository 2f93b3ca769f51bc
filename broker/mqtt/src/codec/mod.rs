//! The MQTT wire format: [`decode`] one packet from the front of a buffer and [`encode`] one into a buffer.
//!
//! The decoder enforces the normative rules of MQTT 3.1, 3.1.1 and 5.0 that can be checked on a single
//! packet (fixed header flags, string encoding, property placement and multiplicity, value ranges, ...) and
//! reports a [`DecodeError`] whose [`DecodeError::reason_code`] is the code the spec names for the
//! failure. State-dependent rules (topic alias ranges, packet identifiers in flight, ...) belong to the
//! broker.
//!
//! The encoder writes what it is given: it only refuses what cannot be represented on the wire (a string
//! over 65,535 bytes, a packet over the size limit, AUTH for 3.x, ...), so test clients can also produce
//! packets the broker must reject.
//!
//! Decoding is zero-copy for payloads and binary data: they are [`bytes::Bytes`] slices of the input.

mod decode;
mod encode;
mod properties;

pub use encode::PublishParts;
pub use properties::Changes;

use bytes::BytesMut;
use thiserror::Error;

use crate::packet::{Packet, ProtocolVersion};
use crate::reason::ReasonCode;

/// The largest Remaining Length (and any Variable Byte Integer): 268,435,455.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why a packet could not be decoded. Every variant names the packet (and field) that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The packet is larger than the maximum packet size (reason code 0x95).
    #[error("{packet}: packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The packet type.
        packet: &'static str,
        /// Total size: fixed header plus remaining length.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A packet other than CONNECT arrived before CONNECT (reason code 0x82).
    #[error("{packet} received before CONNECT: the first packet must be CONNECT")]
    ExpectedConnect {
        /// The packet type received.
        packet: &'static str,
    },
    /// CONNECT carries a protocol name or level this codec does not implement (reason code 0x84). The
    /// broker should answer CONNACK 0x01 (3.x) / 0x84 (5.0) before closing the connection.
    #[error("CONNECT: unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// The protocol name (lossily decoded if it is not UTF-8).
        name: String,
        /// The protocol level byte.
        level: u8,
    },
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.0 (reason code 0x81).
    #[error("reserved packet type {packet_type}{}", if *.packet_type == 15 { " (AUTH exists only in MQTT 5.0)" } else { "" })]
    ReservedPacketType {
        /// The packet type nibble.
        packet_type: u8,
    },
    /// The flags nibble of the fixed header has a value the packet type does not allow (reason code 0x81).
    #[error("{packet}: invalid fixed header flags {flags:#06b}")]
    InvalidFlags {
        /// The packet type.
        packet: &'static str,
        /// The flags nibble.
        flags: u8,
    },
    /// A Variable Byte Integer has a fifth continuation byte (reason code 0x81).
    #[error("{packet}: {field}: variable byte integer longer than 4 bytes")]
    VarIntTooLong {
        /// The packet type.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },
    /// The packet (or its property block) ends inside a field (reason code 0x81).
    #[error("{packet}: packet ends inside {field}")]
    Truncated {
        /// The packet type.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },
    /// Bytes remain after the last field of a packet (reason code 0x81).
    #[error("{packet}: {count} unexpected bytes after the end of the packet")]
    TrailingBytes {
        /// The packet type.
        packet: &'static str,
        /// How many bytes are left.
        count: usize,
    },
    /// A UTF-8 string field is not valid UTF-8 (reason code 0x81).
    #[error("{packet}: {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The packet type.
        packet: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A UTF-8 string field contains U+0000 (reason code 0x81).
    #[error("{packet}: {field} contains the null character U+0000")]
    NullCharacter {
        /// The packet type.
        packet: &'static str,
        /// The field.
        field: &'static str,
    },
    /// Any other malformed packet (reason code 0x81).
    #[error("{packet}: {reason}")]
    Malformed {
        /// The packet type.
        packet: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Any other protocol error (reason code 0x82).
    #[error("{packet}: {reason}")]
    ProtocolError {
        /// The packet type.
        packet: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A topic name (PUBLISH, Will, Response Topic) breaks the topic name rules (reason code 0x90).
    #[error("{packet}: {field} {reason}")]
    InvalidTopicName {
        /// The packet type.
        packet: &'static str,
        /// The field holding the topic name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A reason code (or 3.x CONNACK return code) that this packet cannot carry (reason code 0x82; in
    /// 3.x the connection is simply closed).
    #[error("{packet}: reason code {code:#04x} is not valid in this packet")]
    InvalidReasonCode {
        /// The packet type.
        packet: &'static str,
        /// The byte on the wire.
        code: u8,
    },
    /// A property identifier the spec does not define (reason code 0x81).
    #[error("{packet}: unknown property identifier {id:#04x}")]
    UnknownProperty {
        /// The packet type (or "CONNECT Will properties").
        packet: &'static str,
        /// The identifier.
        id: u32,
    },
    /// A property the spec does not allow in this packet (reason code 0x81).
    #[error("property {id:#04x} {name} is not allowed in {packet}")]
    PropertyNotAllowed {
        /// The packet type (or "CONNECT Will properties").
        packet: &'static str,
        /// The identifier.
        id: u8,
        /// The property name.
        name: &'static str,
    },
    /// A property that may appear at most once appears again (reason code 0x82).
    #[error("property {id:#04x} {name} appears twice in {packet}")]
    DuplicateProperty {
        /// The packet type (or "CONNECT Will properties").
        packet: &'static str,
        /// The identifier.
        id: u8,
        /// The property name.
        name: &'static str,
    },
    /// A property value outside the range the spec allows (reason code 0x82).
    #[error("property {id:#04x} {name} has invalid value {value} in {packet}")]
    InvalidPropertyValue {
        /// The packet type (or "CONNECT Will properties").
        packet: &'static str,
        /// The identifier.
        id: u8,
        /// The property name.
        name: &'static str,
        /// The value received.
        value: u32,
    },
}

impl DecodeError {
    /// The reason code the spec names for this failure: what the broker sends in CONNACK/DISCONNECT (5.0)
    /// before closing the connection.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
            Self::InvalidTopicName { .. } => ReasonCode::TopicNameInvalid,
            Self::ExpectedConnect { .. }
            | Self::ProtocolError { .. }
            | Self::InvalidReasonCode { .. }
            | Self::DuplicateProperty { .. }
            | Self::InvalidPropertyValue { .. } => ReasonCode::ProtocolError,
            Self::ReservedPacketType { .. }
            | Self::InvalidFlags { .. }
            | Self::VarIntTooLong { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::InvalidUtf8 { .. }
            | Self::NullCharacter { .. }
            | Self::Malformed { .. }
            | Self::UnknownProperty { .. }
            | Self::PropertyNotAllowed { .. } => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded. Nothing is written to the buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The encoded packet is larger than the peer's maximum packet size.
    #[error(
        "{packet}: encoded size of {size} bytes exceeds the maximum packet size of {max} bytes"
    )]
    PacketTooLarge {
        /// The packet type.
        packet: &'static str,
        /// Total encoded size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// The remaining length (or a property block) exceeds 268,435,455 bytes.
    #[error(
        "{packet}: {field} of {len} bytes exceeds the variable byte integer maximum of 268,435,455"
    )]
    TooLong {
        /// The packet type.
        packet: &'static str,
        /// "remaining length" or "property length".
        field: &'static str,
        /// The length.
        len: usize,
    },
    /// A UTF-8 string or binary field longer than 65,535 bytes.
    #[error(
        "{packet}: {field} of {len} bytes exceeds the 65,535-byte limit of a length-prefixed field"
    )]
    FieldTooLong {
        /// The packet type.
        packet: &'static str,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A Subscription Identifier above 268,435,455.
    #[error("{packet}: subscription identifier {value} exceeds 268,435,455")]
    SubscriptionIdentifierTooLarge {
        /// The packet type.
        packet: &'static str,
        /// The value.
        value: u32,
    },
    /// A PUBLISH whose packet identifier does not match its QoS: one is needed exactly when QoS > 0.
    #[error("PUBLISH: {0}")]
    PacketIdMismatch(&'static str),
    /// A packet that does not exist in the protocol version (AUTH for 3.x).
    #[error("{packet} cannot be encoded for {version:?}: it exists only in MQTT 5.0")]
    NotInVersion {
        /// The packet type.
        packet: &'static str,
        /// The version asked for.
        version: ProtocolVersion,
    },
    /// A CONNECT whose `protocol` differs from the version it is encoded for.
    #[error("CONNECT for {connect:?} cannot be encoded as {version:?}")]
    ConnectVersionMismatch {
        /// `Connect::protocol`.
        connect: ProtocolVersion,
        /// The version asked for.
        version: ProtocolVersion,
    },
}

/// Whether an MQTT 5.0 packet of type `packet_type` (2 = CONNACK, 4..=7 = PUBACK..PUBCOMP, 9 = SUBACK,
/// 11 = UNSUBACK, 14 = DISCONNECT, 15 = AUTH) may carry `reason`; false for other packet types. The decoder
/// rejects any other code with [`DecodeError::InvalidReasonCode`].
pub fn reason_code_allowed(packet_type: u8, reason: ReasonCode) -> bool {
    decode::allowed_reasons(packet_type).is_some_and(|codes| codes.contains(&reason.as_u8()))
}

/// The name of a packet type nibble, as used in error messages.
pub(crate) fn packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved packet type",
    }
}

impl Packet {
    /// The packet type name ("CONNECT", "PUBLISH", ...).
    pub fn name(&self) -> &'static str {
        packet_name(self.packet_type())
    }

    /// The packet type nibble of the fixed header (1 = CONNECT ... 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: the packet is incomplete and `buf` is untouched; call again once more bytes arrived.
/// - `Ok(Some(p))`: exactly that packet's bytes were consumed from `buf`.
/// - `Err(e)`: the stream is unusable (the connection must be closed, after a CONNACK/DISCONNECT with
///   [`DecodeError::reason_code`] in 5.0); `buf` may have been partly consumed.
///
/// `version` is `None` until CONNECT has been decoded on this connection; then only CONNECT can be
/// decoded (anything else is [`DecodeError::ExpectedConnect`]). A CONNECT is always decoded according to
/// its own protocol level.
///
/// `max_packet_size` is the maximum total packet size in bytes (fixed header + remaining length); a larger
/// packet is [`DecodeError::PacketTooLarge`] as soon as its fixed header is complete.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    decode::decode(buf, version, max_packet_size)
}

/// Appends the encoding of `packet` for `version` to `buf`; returns the number of bytes written.
///
/// If the encoded size exceeds `max_packet_size` returns [`EncodeError::PacketTooLarge`] and leaves `buf`
/// unchanged (as does every other error). For 3.x, properties and 5.0-only fields are not written; a
/// CONNACK reason is written as [`ReasonCode::v3_connack_code`], SUBACK failures as 0x80.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    encode::encode(packet, version, buf, max_packet_size)
}

/// [`encode`] for a PUBLISH given in borrowed parts, with [`Changes`] to its properties: how a broker
/// sends one stored message to a subscriber (the time left in its Message Expiry Interval, the
/// subscription's identifier) without copying the message's properties. The same bytes as [`encode`] of
/// the PUBLISH with the changed properties.
pub fn encode_publish(
    publish: &PublishParts<'_>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    encode::encode_publish(publish, version, buf, max_packet_size)
}
