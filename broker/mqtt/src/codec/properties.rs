//! MQTT 5.0 properties (spec section 2.2.2): where each may appear, how often, and its value rules.

use bytes::{BufMut, Bytes, BytesMut};

use super::decode::{Reader, check_response_topic};
use super::{DecodeError, EncodeError, MAX_REMAINING_LENGTH};
use crate::packet::Properties;
use crate::user_properties::UserProperties;

/// Where a property block sits: a bit for the allowed-packets masks and a name for error messages.
#[derive(Clone, Copy)]
pub(super) struct Ctx {
    bit: u16,
    name: &'static str,
}

impl Ctx {
    pub(super) const CONNECT: Ctx = Ctx {
        bit: 1 << 0,
        name: "CONNECT",
    };
    pub(super) const CONNACK: Ctx = Ctx {
        bit: 1 << 1,
        name: "CONNACK",
    };
    pub(super) const PUBLISH: Ctx = Ctx {
        bit: 1 << 2,
        name: "PUBLISH",
    };
    pub(super) const WILL: Ctx = Ctx {
        bit: 1 << 3,
        name: "CONNECT Will properties",
    };
    pub(super) const PUB_RESPONSE: Ctx = Ctx {
        bit: 1 << 4,
        name: "PUBACK",
    };
    pub(super) const SUBSCRIBE: Ctx = Ctx {
        bit: 1 << 5,
        name: "SUBSCRIBE",
    };
    pub(super) const SUBACK: Ctx = Ctx {
        bit: 1 << 6,
        name: "SUBACK",
    };
    pub(super) const UNSUBSCRIBE: Ctx = Ctx {
        bit: 1 << 7,
        name: "UNSUBSCRIBE",
    };
    pub(super) const UNSUBACK: Ctx = Ctx {
        bit: 1 << 8,
        name: "UNSUBACK",
    };
    pub(super) const DISCONNECT: Ctx = Ctx {
        bit: 1 << 9,
        name: "DISCONNECT",
    };
    pub(super) const AUTH: Ctx = Ctx {
        bit: 1 << 10,
        name: "AUTH",
    };
}

const CONNECT: u16 = Ctx::CONNECT.bit;
const CONNACK: u16 = Ctx::CONNACK.bit;
const PUBLISH: u16 = Ctx::PUBLISH.bit;
const WILL: u16 = Ctx::WILL.bit;
const ACKS: u16 = Ctx::PUB_RESPONSE.bit | Ctx::SUBACK.bit | Ctx::UNSUBACK.bit;
const SUBSCRIBE: u16 = Ctx::SUBSCRIBE.bit;
const DISCONNECT: u16 = Ctx::DISCONNECT.bit;
const AUTH: u16 = Ctx::AUTH.bit;
const ALL: u16 = (1 << 11) - 1;

/// Name and allowed contexts of a property identifier; `None` for an undefined identifier.
fn info(id: u32) -> Option<(&'static str, u16)> {
    Some(match id {
        0x01 => ("Payload Format Indicator", PUBLISH | WILL),
        0x02 => ("Message Expiry Interval", PUBLISH | WILL),
        0x03 => ("Content Type", PUBLISH | WILL),
        0x08 => ("Response Topic", PUBLISH | WILL),
        0x09 => ("Correlation Data", PUBLISH | WILL),
        0x0B => ("Subscription Identifier", PUBLISH | SUBSCRIBE),
        0x11 => ("Session Expiry Interval", CONNECT | CONNACK | DISCONNECT),
        0x12 => ("Assigned Client Identifier", CONNACK),
        0x13 => ("Server Keep Alive", CONNACK),
        0x15 => ("Authentication Method", CONNECT | CONNACK | AUTH),
        0x16 => ("Authentication Data", CONNECT | CONNACK | AUTH),
        0x17 => ("Request Problem Information", CONNECT),
        0x18 => ("Will Delay Interval", WILL),
        0x19 => ("Request Response Information", CONNECT),
        0x1A => ("Response Information", CONNACK),
        0x1C => ("Server Reference", CONNACK | DISCONNECT),
        0x1F => ("Reason String", CONNACK | ACKS | DISCONNECT | AUTH),
        0x21 => ("Receive Maximum", CONNECT | CONNACK),
        0x22 => ("Topic Alias Maximum", CONNECT | CONNACK),
        0x23 => ("Topic Alias", PUBLISH),
        0x24 => ("Maximum QoS", CONNACK),
        0x25 => ("Retain Available", CONNACK),
        0x26 => ("User Property", ALL),
        0x27 => ("Maximum Packet Size", CONNECT | CONNACK),
        0x28 => ("Wildcard Subscription Available", CONNACK),
        0x29 => ("Subscription Identifier Available", CONNACK),
        0x2A => ("Shared Subscription Available", CONNACK),
        _ => return None,
    })
}

/// Decodes a property block (length and properties) from `r`.
pub(super) fn decode(r: &mut Reader, ctx: Ctx) -> Result<Properties, DecodeError> {
    let len = r.varint("property length")? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Malformed {
            packet: r.packet,
            reason: "property length exceeds the packet",
        });
    }
    // Error messages name the packet being decoded, or the Will properties inside CONNECT.
    let ctx = if ctx.bit == WILL {
        ctx
    } else {
        Ctx {
            bit: ctx.bit,
            name: r.packet,
        }
    };
    let mut p = Reader {
        buf: r.buf.split_to(len),
        packet: ctx.name,
    };
    let mut props = Properties::default();
    let mut seen: u64 = 0;
    let mut user: Option<UserRun> = None;
    while p.remaining() > 0 {
        // Where this property starts, counted from the block's end; a User Property's identifier (0x26)
        // is one byte, so the first one is recognised before it is read.
        let from = p.remaining();
        if user.is_none() && p.buf.first() == Some(&0x26) {
            user = Some(UserRun::new(p.buf.clone()));
        }
        let id = p.varint("property identifier")?;
        let Some((name, allowed)) = info(id) else {
            return Err(DecodeError::UnknownProperty {
                packet: ctx.name,
                id,
            });
        };
        let id = id as u8;
        if allowed & ctx.bit == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                packet: ctx.name,
                id,
                name,
            });
        }
        let repeatable = id == 0x26 || (id == 0x0B && ctx.bit == PUBLISH);
        if !repeatable && seen & (1 << id) != 0 {
            return Err(DecodeError::DuplicateProperty {
                packet: ctx.name,
                id,
                name,
            });
        }
        seen |= 1 << id;
        let invalid = |value: u32| DecodeError::InvalidPropertyValue {
            packet: ctx.name,
            id,
            name,
            value,
        };
        let boolean = |v: u8| {
            if v <= 1 {
                Ok(v)
            } else {
                Err(invalid(v.into()))
            }
        };
        let nonzero16 = |v: u16| if v != 0 { Ok(v) } else { Err(invalid(0)) };
        match id {
            0x01 => props.payload_format_indicator = Some(boolean(p.u8(name)?)?),
            0x02 => props.message_expiry_interval = Some(p.u32(name)?),
            0x03 => props.content_type = Some(p.byte_string(name)?),
            0x08 => {
                let topic = p.byte_string(name)?;
                check_response_topic(ctx.name, &topic)?;
                props.response_topic = Some(topic);
            }
            0x09 => props.correlation_data = Some(p.binary(name)?),
            0x0B => {
                let v = p.varint(name)?;
                if v == 0 {
                    return Err(invalid(0));
                }
                props.subscription_identifiers.push(v);
            }
            0x11 => props.session_expiry_interval = Some(p.u32(name)?),
            0x12 => props.assigned_client_identifier = Some(p.string(name)?),
            0x13 => props.server_keep_alive = Some(p.u16(name)?),
            0x15 => props.authentication_method = Some(p.string(name)?),
            0x16 => props.authentication_data = Some(p.binary(name)?),
            0x17 => props.request_problem_information = Some(boolean(p.u8(name)?)?),
            0x18 => props.will_delay_interval = Some(p.u32(name)?),
            0x19 => props.request_response_information = Some(boolean(p.u8(name)?)?),
            0x1A => props.response_information = Some(p.string(name)?),
            0x1C => props.server_reference = Some(p.string(name)?),
            0x1F => props.reason_string = Some(p.string(name)?),
            0x21 => props.receive_maximum = Some(nonzero16(p.u16(name)?)?),
            0x22 => props.topic_alias_maximum = Some(p.u16(name)?),
            0x23 => props.topic_alias = Some(nonzero16(p.u16(name)?)?),
            0x24 => props.maximum_qos = Some(boolean(p.u8(name)?)?),
            0x25 => props.retain_available = Some(boolean(p.u8(name)?)?),
            0x26 => {
                p.with_str("User Property name", |_| ())?;
                p.with_str("User Property value", |_| ())?;
                if let Some(user) = &mut user {
                    user.add(from, p.remaining());
                }
            }
            0x27 => {
                let v = p.u32(name)?;
                if v == 0 {
                    return Err(invalid(0));
                }
                props.maximum_packet_size = Some(v);
            }
            0x28 => props.wildcard_subscription_available = Some(boolean(p.u8(name)?)?),
            0x29 => props.subscription_identifier_available = Some(boolean(p.u8(name)?)?),
            _ => props.shared_subscription_available = Some(boolean(p.u8(name)?)?),
        }
    }
    if let Some(user) = user {
        props.user_properties = user.finish();
    }
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::ProtocolError {
            packet: ctx.name,
            reason: "Authentication Data without an Authentication Method",
        });
    }
    Ok(props)
}

/// The User Properties of a property block being decoded, in their wire form: a slice of the block while
/// they are consecutive in it (as clients write them), a copy once another property comes between two.
struct UserRun {
    /// The block from the first User Property on.
    block: Bytes,
    /// The bytes of `block` the consecutive properties take.
    run: usize,
    /// The copy, once they are not consecutive.
    copy: Option<BytesMut>,
}

impl UserRun {
    fn new(block: Bytes) -> Self {
        Self {
            block,
            run: 0,
            copy: None,
        }
    }

    /// Adds the (validated) User Property that starts `from` bytes and ends `to` bytes before the end of
    /// the property block.
    fn add(&mut self, from: usize, to: usize) {
        let (start, end) = (self.block.len() - from, self.block.len() - to);
        match &mut self.copy {
            None if start == self.run => self.run = end,
            None => {
                let mut copy = BytesMut::from(&self.block[..self.run]);
                copy.extend_from_slice(&self.block[start..end]);
                self.copy = Some(copy);
            }
            Some(copy) => copy.extend_from_slice(&self.block[start..end]),
        }
    }

    fn finish(self) -> UserProperties {
        let wire = match self.copy {
            Some(copy) => copy.freeze(),
            None => {
                let mut block = self.block;
                block.truncate(self.run);
                block
            }
        };
        UserProperties::from_validated_wire(wire)
    }
}

/// Size of a Variable Byte Integer encoding of `v` (which must be at most 268,435,455).
pub(super) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(super) fn put_varint(buf: &mut BytesMut, mut v: usize) {
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Size of a length-prefixed field, or an error when it is over 65,535 bytes.
pub(super) fn field_len(
    packet: &'static str,
    field: &'static str,
    len: usize,
) -> Result<usize, EncodeError> {
    if len > u16::MAX as usize {
        return Err(EncodeError::FieldTooLong { packet, field, len });
    }
    Ok(2 + len)
}

pub(super) fn put_field(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// How a PUBLISH's properties are changed on their way to one subscriber (5.0), applied while encoding so
/// that a message shared by several subscribers is not copied for each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Replaces the Message Expiry Interval when `Some`: `Some(None)` leaves it out.
    pub message_expiry_interval: Option<Option<u32>>,
    /// Added after the Subscription Identifiers.
    pub subscription_identifier: Option<u32>,
}

/// Length of the properties (without their own length prefix), validating every field.
pub(super) fn encoded_len(props: &Properties, packet: &'static str) -> Result<usize, EncodeError> {
    encoded_len_with(props, Changes::default(), packet)
}

/// [`encoded_len`] of `props` with `changes`.
pub(super) fn encoded_len_with(
    props: &Properties,
    changes: Changes,
    packet: &'static str,
) -> Result<usize, EncodeError> {
    let s = |field, v: Option<&str>| {
        v.map_or(Ok(0), |v| field_len(packet, field, v.len()).map(|n| n + 1))
    };
    let b = |field, v: &Option<bytes::Bytes>| {
        v.as_ref()
            .map_or(Ok(0), |v| field_len(packet, field, v.len()).map(|n| n + 1))
    };
    let fixed = |present: bool, n: usize| if present { 1 + n } else { 0 };
    let mut len = 0;
    len += fixed(props.payload_format_indicator.is_some(), 1);
    let expiry = changes
        .message_expiry_interval
        .unwrap_or(props.message_expiry_interval);
    len += fixed(expiry.is_some(), 4);
    len += s("Content Type", props.content_type.as_deref())?;
    len += s("Response Topic", props.response_topic.as_deref())?;
    len += b("Correlation Data", &props.correlation_data)?;
    for &id in props
        .subscription_identifiers
        .iter()
        .chain(&changes.subscription_identifier)
    {
        if id as usize > MAX_REMAINING_LENGTH {
            return Err(EncodeError::SubscriptionIdentifierTooLarge { packet, value: id });
        }
        len += 1 + varint_len(id as usize);
    }
    len += fixed(props.session_expiry_interval.is_some(), 4);
    len += s(
        "Assigned Client Identifier",
        props.assigned_client_identifier.as_deref(),
    )?;
    len += fixed(props.server_keep_alive.is_some(), 2);
    len += s(
        "Authentication Method",
        props.authentication_method.as_deref(),
    )?;
    len += b("Authentication Data", &props.authentication_data)?;
    len += fixed(props.request_problem_information.is_some(), 1);
    len += fixed(props.will_delay_interval.is_some(), 4);
    len += fixed(props.request_response_information.is_some(), 1);
    len += s(
        "Response Information",
        props.response_information.as_deref(),
    )?;
    len += s("Server Reference", props.server_reference.as_deref())?;
    len += s("Reason String", props.reason_string.as_deref())?;
    len += fixed(props.receive_maximum.is_some(), 2);
    len += fixed(props.topic_alias_maximum.is_some(), 2);
    len += fixed(props.topic_alias.is_some(), 2);
    len += fixed(props.maximum_qos.is_some(), 1);
    len += fixed(props.retain_available.is_some(), 1);
    // Their lengths were checked when they were made.
    len += props.user_properties.wire().len();
    len += fixed(props.maximum_packet_size.is_some(), 4);
    len += fixed(props.wildcard_subscription_available.is_some(), 1);
    len += fixed(props.subscription_identifier_available.is_some(), 1);
    len += fixed(props.shared_subscription_available.is_some(), 1);
    if len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLong {
            packet,
            field: "property length",
            len,
        });
    }
    Ok(len)
}

/// Writes a property block: its length `len` (from [`encoded_len`]) then the properties.
pub(super) fn put(buf: &mut BytesMut, props: &Properties, len: usize) {
    put_with(buf, props, Changes::default(), len);
}

/// [`put`] of `props` with `changes` (`len` from [`encoded_len_with`] with the same changes).
pub(super) fn put_with(buf: &mut BytesMut, props: &Properties, changes: Changes, len: usize) {
    put_varint(buf, len);
    if len == 0 {
        return;
    }
    let u8p = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    };
    let u16p = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    };
    let u32p = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    };
    let bytesp = |buf: &mut BytesMut, id: u8, v: Option<&[u8]>| {
        if let Some(v) = v {
            buf.put_u8(id);
            put_field(buf, v);
        }
    };
    let strp = |buf: &mut BytesMut, id: u8, v: Option<&str>| bytesp(buf, id, v.map(str::as_bytes));
    u8p(buf, 0x01, props.payload_format_indicator);
    u32p(
        buf,
        0x02,
        changes
            .message_expiry_interval
            .unwrap_or(props.message_expiry_interval),
    );
    strp(buf, 0x03, props.content_type.as_deref());
    strp(buf, 0x08, props.response_topic.as_deref());
    bytesp(buf, 0x09, props.correlation_data.as_deref());
    for &id in props
        .subscription_identifiers
        .iter()
        .chain(&changes.subscription_identifier)
    {
        buf.put_u8(0x0B);
        put_varint(buf, id as usize);
    }
    u32p(buf, 0x11, props.session_expiry_interval);
    strp(buf, 0x12, props.assigned_client_identifier.as_deref());
    u16p(buf, 0x13, props.server_keep_alive);
    strp(buf, 0x15, props.authentication_method.as_deref());
    bytesp(buf, 0x16, props.authentication_data.as_deref());
    u8p(buf, 0x17, props.request_problem_information);
    u32p(buf, 0x18, props.will_delay_interval);
    u8p(buf, 0x19, props.request_response_information);
    strp(buf, 0x1A, props.response_information.as_deref());
    strp(buf, 0x1C, props.server_reference.as_deref());
    strp(buf, 0x1F, props.reason_string.as_deref());
    u16p(buf, 0x21, props.receive_maximum);
    u16p(buf, 0x22, props.topic_alias_maximum);
    u16p(buf, 0x23, props.topic_alias);
    u8p(buf, 0x24, props.maximum_qos);
    u8p(buf, 0x25, props.retain_available);
    buf.put_slice(props.user_properties.wire());
    u32p(buf, 0x27, props.maximum_packet_size);
    u8p(buf, 0x28, props.wildcard_subscription_available);
    u8p(buf, 0x29, props.subscription_identifier_available);
    u8p(buf, 0x2A, props.shared_subscription_available);
}
