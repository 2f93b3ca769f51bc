//! Decoding: bytes to [`Packet`].

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::properties::{self, Ctx};
use super::{DecodeError, packet_name};
use crate::packet::*;
use crate::reason::ReasonCode;

/// A cursor over the body of one packet (after the fixed header). Slices of it are zero-copy.
pub(super) struct Reader {
    pub(super) buf: Bytes,
    pub(super) packet: &'static str,
}

impl Reader {
    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            })
        } else {
            Ok(())
        }
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer: at most 4 bytes, in its shortest form.
    pub(super) fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf) {
            VarInt::Value { value, len } => {
                self.buf.advance(len);
                Ok(value as u32)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            }),
            VarInt::TooLong => Err(DecodeError::VarIntTooLong {
                packet: self.packet,
                field,
            }),
            VarInt::NotShortest => Err(DecodeError::Malformed {
                packet: self.packet,
                reason: "variable byte integer not encoded in its shortest form",
            }),
        }
    }

    /// `n` bytes, zero-copy.
    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left, zero-copy.
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Length-prefixed binary data, zero-copy.
    pub(super) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field)
    }

    /// A length-prefixed UTF-8 string, validated (valid UTF-8, no U+0000) and handed to `f`.
    pub(super) fn with_str<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&str) -> T,
    ) -> Result<T, DecodeError> {
        let len = self.u16(field)? as usize;
        self.need(len, field)?;
        let raw = &self.buf[..len];
        let s = std::str::from_utf8(raw).map_err(|_| self.invalid_utf8(field))?;
        self.no_null(raw, field)?;
        let out = f(s);
        self.buf.advance(len);
        Ok(out)
    }

    /// A length-prefixed UTF-8 string, validated like [`Reader::with_str`], zero-copy: a slice of the
    /// packet, as payloads are.
    pub(super) fn byte_string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let len = self.u16(field)? as usize;
        self.need(len, field)?;
        let s =
            ByteString::try_from(self.buf.slice(..len)).map_err(|_| self.invalid_utf8(field))?;
        self.no_null(s.as_bytes(), field)?;
        self.buf.advance(len);
        Ok(s)
    }

    fn invalid_utf8(&self, field: &'static str) -> DecodeError {
        DecodeError::InvalidUtf8 {
            packet: self.packet,
            field,
        }
    }

    /// A UTF-8 string must not contain U+0000.
    fn no_null(&self, raw: &[u8], field: &'static str) -> Result<(), DecodeError> {
        if raw.contains(&0) {
            Err(DecodeError::NullCharacter {
                packet: self.packet,
                field,
            })
        } else {
            Ok(())
        }
    }

    pub(super) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.with_str(field, str::to_owned)
    }

    fn arc_str(&mut self, field: &'static str) -> Result<Arc<str>, DecodeError> {
        self.with_str(field, |s| Arc::from(s))
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(DecodeError::ProtocolError {
                packet: self.packet,
                reason: "packet identifier is 0",
            });
        }
        Ok(id)
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                count: self.buf.len(),
            })
        }
    }

    fn malformed<T>(&self, reason: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError::Malformed {
            packet: self.packet,
            reason,
        })
    }

    fn protocol_error<T>(&self, reason: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError::ProtocolError {
            packet: self.packet,
            reason,
        })
    }

    fn reason(&mut self, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
        let code = self.u8("reason code")?;
        check_reason(self.packet, code, allowed)
    }
}

fn check_reason(packet: &'static str, code: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    match ReasonCode::from_u8(code) {
        Some(r) if allowed.contains(&code) => Ok(r),
        _ => Err(DecodeError::InvalidReasonCode { packet, code }),
    }
}

/// Outcome of parsing a Variable Byte Integer from the front of a slice.
pub(super) enum VarInt {
    Value { value: usize, len: usize },
    Incomplete,
    TooLong,
    NotShortest,
}

pub(super) fn parse_varint(bytes: &[u8]) -> VarInt {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = bytes.get(i) else {
            return VarInt::Incomplete;
        };
        value |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            // A final byte of 0 after a continuation adds nothing: a longer encoding than needed.
            if i > 0 && b == 0 {
                return VarInt::NotShortest;
            }
            return VarInt::Value { value, len: i + 1 };
        }
    }
    VarInt::TooLong
}

// Reason codes each 5.0 packet may carry (spec sections 3.x.2.1).
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];
const V3_SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];

/// The reason codes a 5.0 packet type may carry; `None` for types without a reason code.
pub(super) fn allowed_reasons(packet_type: u8) -> Option<&'static [u8]> {
    Some(match packet_type {
        2 => CONNACK_REASONS,
        4 | 5 => PUBACK_REASONS,
        6 | 7 => PUBREL_REASONS,
        9 => SUBACK_REASONS,
        11 => UNSUBACK_REASONS,
        14 => DISCONNECT_REASONS,
        15 => AUTH_REASONS,
        _ => return None,
    })
}

pub(super) fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    let packet = packet_name(packet_type);

    // Everything the first byte alone can tell, checked before waiting for more.
    match (packet_type, version) {
        (0, _) => return Err(DecodeError::ReservedPacketType { packet_type }),
        (1, _) => {}
        (_, None) => return Err(DecodeError::ExpectedConnect { packet }),
        (15, Some(v)) if !v.is_v5() => return Err(DecodeError::ReservedPacketType { packet_type }),
        _ => {}
    }
    let expected_flags = match packet_type {
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::Malformed {
                    packet,
                    reason: "QoS 3 in the fixed header",
                });
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed {
                    packet,
                    reason: "DUP flag set on a QoS 0 message",
                });
            }
            flags
        }
        6 | 8 | 10 => 0b0010,
        _ => 0b0000,
    };
    if flags != expected_flags {
        return Err(DecodeError::InvalidFlags { packet, flags });
    }

    let (remaining, len_bytes) = match parse_varint(&buf[1..]) {
        VarInt::Value { value, len } => (value, len),
        VarInt::Incomplete => return Ok(None),
        VarInt::TooLong => {
            return Err(DecodeError::VarIntTooLong {
                packet,
                field: "remaining length",
            });
        }
        VarInt::NotShortest => {
            return Err(DecodeError::Malformed {
                packet,
                reason: "remaining length not encoded in its shortest form",
            });
        }
    };
    let header = 1 + len_bytes;
    let size = header + remaining;
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            packet,
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(header);
    let mut r = Reader { buf: body, packet };

    let version = version.unwrap_or(ProtocolVersion::V5);
    let v5 = version.is_v5();
    let p = match packet_type {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r, v5)?),
        3 => Packet::Publish(publish(&mut r, flags, v5)?),
        4 => Packet::PubAck(pub_response(&mut r, v5, PUBACK_REASONS)?),
        5 => Packet::PubRec(pub_response(&mut r, v5, PUBACK_REASONS)?),
        6 => Packet::PubRel(pub_response(&mut r, v5, PUBREL_REASONS)?),
        7 => Packet::PubComp(pub_response(&mut r, v5, PUBREL_REASONS)?),
        8 => Packet::Subscribe(subscribe(&mut r, v5)?),
        9 => Packet::SubAck(suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v5)?),
        12 => {
            r.end()?;
            Packet::PingReq
        }
        13 => {
            r.end()?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(disconnect(&mut r, v5)?),
        _ => Packet::Auth(auth(&mut r)?),
    };
    Ok(Some(p))
}

/// Checks a topic name that is not empty: no wildcard characters.
fn check_topic_name(
    packet: &'static str,
    field: &'static str,
    topic: &str,
) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::InvalidTopicName {
            packet,
            field,
            reason: "is empty",
        });
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(DecodeError::InvalidTopicName {
            packet,
            field,
            reason: "contains a wildcard",
        });
    }
    Ok(())
}

pub(super) fn check_response_topic(packet: &'static str, topic: &str) -> Result<(), DecodeError> {
    check_topic_name(packet, "Response Topic", topic)
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name_len = r.u16("protocol name")? as usize;
    let name = r.take(name_len, "protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        _ => {
            return Err(DecodeError::UnsupportedProtocol {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            });
        }
    };
    let v5 = protocol.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return r.malformed("reserved connect flag is set");
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let Some(will_qos) = QoS::from_u8(will_qos_bits) else {
        return r.malformed("Will QoS 3");
    };
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return r.malformed("Will QoS or Will Retain set without the Will Flag");
    }
    if !v5 && password_flag && !username_flag {
        return r.malformed("Password Flag set without the User Name Flag");
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if v5 {
        properties::decode(r, Ctx::CONNECT)?
    } else {
        Properties::default()
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            properties::decode(r, Ctx::WILL)?
        } else {
            Properties::default()
        };
        let topic = r.arc_str("Will Topic")?;
        check_topic_name(r.packet, "Will Topic", &topic)?;
        let payload = r.binary("Will Payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("User Name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("Password")?)
    } else {
        None
    };
    r.end()?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connect acknowledge flags")?;
    if flags & 0xFE != 0 {
        return r.malformed("reserved connect acknowledge flags are set");
    }
    let session_present = flags & 0x01 != 0;
    let (reason, properties) = if v5 {
        let reason = r.reason(CONNACK_REASONS)?;
        (reason, properties::decode(r, Ctx::CONNACK)?)
    } else {
        let code = r.u8("return code")?;
        let reason =
            ReasonCode::from_v3_connack_code(code).ok_or(DecodeError::InvalidReasonCode {
                packet: r.packet,
                code,
            })?;
        (reason, Properties::default())
    };
    if session_present && reason != ReasonCode::Success {
        return r.protocol_error("Session Present set with a non-zero reason code");
    }
    r.end()?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    // Validated by the fixed header check.
    let qos = QoS::from_u8((flags >> 1) & 0b11).unwrap_or_default();
    let topic = r.arc_str("topic name")?;
    if !topic.is_empty() || !v5 {
        check_topic_name(r.packet, "topic name", &topic)?;
    }
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let properties = if v5 {
        properties::decode(r, Ctx::PUBLISH)?
    } else {
        Properties::default()
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return r.protocol_error("topic name is empty and there is no Topic Alias");
    }
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn pub_response(r: &mut Reader, v5: bool, allowed: &[u8]) -> Result<PubResponse, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::default();
    if v5 && r.remaining() > 0 {
        reason = r.reason(allowed)?;
        if r.remaining() > 0 {
            properties = properties::decode(r, Ctx::PUB_RESPONSE)?;
        }
    }
    r.end()?;
    Ok(PubResponse {
        packet_id,
        reason,
        properties,
    })
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        properties::decode(r, Ctx::SUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let options = r.u8("subscription options")?;
        let opts = if v5 {
            if options & 0xC0 != 0 {
                return r.malformed("reserved bits of the subscription options are set");
            }
            let Some(qos) = QoS::from_u8(options & 0b11) else {
                return r.protocol_error("subscription options request QoS 3");
            };
            let retain_handling = match (options >> 4) & 0b11 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return r.protocol_error("Retain Handling 3 in the subscription options"),
            };
            let no_local = options & 0x04 != 0;
            if no_local && filter.starts_with("$share/") {
                return r.protocol_error("No Local set on a shared subscription");
            }
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            }
        } else {
            if options & 0xFC != 0 {
                return r.malformed("reserved bits of the requested QoS byte are set");
            }
            let Some(qos) = QoS::from_u8(options) else {
                return r.malformed("requested QoS 3");
            };
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            }
        };
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return r.protocol_error("no topic filter");
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        properties::decode(r, Ctx::SUBACK)?
    } else {
        Properties::default()
    };
    let allowed = if v5 { SUBACK_REASONS } else { V3_SUBACK_CODES };
    let reason_codes = r
        .rest()
        .iter()
        .map(|&code| check_reason(r.packet, code, allowed))
        .collect::<Result<Vec<_>, _>>()?;
    if reason_codes.is_empty() {
        return r.protocol_error("no reason code");
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        properties::decode(r, Ctx::UNSUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return r.protocol_error("no topic filter");
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        r.end()?;
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = properties::decode(r, Ctx::UNSUBACK)?;
    let reason_codes = r
        .rest()
        .iter()
        .map(|&code| check_reason(r.packet, code, UNSUBACK_REASONS))
        .collect::<Result<Vec<_>, _>>()?;
    if reason_codes.is_empty() {
        return r.protocol_error("no reason code");
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut reason = ReasonCode::NORMAL_DISCONNECTION;
    let mut properties = Properties::default();
    if v5 && r.remaining() > 0 {
        reason = r.reason(DISCONNECT_REASONS)?;
        if r.remaining() > 0 {
            properties = properties::decode(r, Ctx::DISCONNECT)?;
        }
    }
    r.end()?;
    Ok(Disconnect { reason, properties })
}

fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    if r.remaining() == 0 {
        return Ok(Auth {
            reason: ReasonCode::Success,
            properties: Properties::default(),
        });
    }
    let reason = r.reason(AUTH_REASONS)?;
    let properties = if r.remaining() > 0 {
        properties::decode(r, Ctx::AUTH)?
    } else {
        Properties::default()
    };
    r.end()?;
    if properties.authentication_method.is_none() {
        return r.protocol_error("Authentication Method is missing");
    }
    Ok(Auth { reason, properties })
}
