//! Encoding: [`Packet`] to bytes, in two passes: sizes (validating everything) and then writing, so a
//! failed encode leaves the buffer untouched and a successful one reserves exactly once.

use bytes::{BufMut, BytesMut};

use super::properties::{self, Changes, field_len, put_field, put_varint, varint_len};
use super::{EncodeError, MAX_REMAINING_LENGTH};
use crate::packet::*;
use crate::reason::ReasonCode;

/// Sizes computed by the first pass.
struct Plan {
    /// Remaining length.
    body: usize,
    /// Property length of the packet's properties (5.0).
    props: usize,
    /// Property length of the Will properties (5.0 CONNECT).
    will_props: usize,
}

/// Size of a property block with its length prefix.
fn block(len: usize) -> usize {
    varint_len(len) + len
}

/// A PUBLISH as the encoder sees it: borrowed parts, and changes to its properties (5.0) for one
/// subscriber. Every PUBLISH is encoded through it.
#[derive(Debug, Clone, Copy)]
pub struct PublishParts<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// Packet identifier; present exactly when QoS > 0.
    pub packet_id: Option<u16>,
    /// The properties (5.0), before `changes`.
    pub properties: &'a Properties,
    /// What this PUBLISH changes in `properties`.
    pub changes: Changes,
    /// Application payload.
    pub payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    /// `publish` as it is.
    fn of(publish: &'a Publish) -> Self {
        Self {
            dup: publish.dup,
            qos: publish.qos,
            retain: publish.retain,
            topic: &publish.topic,
            packet_id: publish.packet_id,
            properties: &publish.properties,
            changes: Changes::default(),
            payload: &publish.payload,
        }
    }

    fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }
}

pub(super) fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    let name = packet.name();
    let plan = plan(packet, version, name)?;
    let size = checked_size(name, &plan, max_packet_size)?;
    buf.reserve(size);
    let start = buf.len();
    write(packet, version, &plan, buf);
    debug_assert_eq!(
        buf.len() - start,
        size,
        "{name}: size pass and write pass disagree"
    );
    Ok(size)
}

/// [`encode`] for a PUBLISH given in parts.
pub(super) fn encode_publish(
    publish: &PublishParts<'_>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    let name = "PUBLISH";
    let mut props = 0;
    let body = publish_len(publish, version.is_v5(), name, &mut props)?;
    let plan = Plan {
        body,
        props,
        will_props: 0,
    };
    let size = checked_size(name, &plan, max_packet_size)?;
    buf.reserve(size);
    let start = buf.len();
    buf.put_u8((3 << 4) | publish.flags());
    put_varint(buf, plan.body);
    write_publish(publish, version.is_v5(), &plan, buf);
    debug_assert_eq!(
        buf.len() - start,
        size,
        "{name}: size pass and write pass disagree"
    );
    Ok(size)
}

/// The whole packet's size for `plan`, or the error when it is too long or over `max_packet_size`.
fn checked_size(
    name: &'static str,
    plan: &Plan,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    if plan.body > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLong {
            packet: name,
            field: "remaining length",
            len: plan.body,
        });
    }
    let size = 1 + varint_len(plan.body) + plan.body;
    if size > max_packet_size as usize {
        return Err(EncodeError::PacketTooLarge {
            packet: name,
            size,
            max: max_packet_size,
        });
    }
    Ok(size)
}

/// Remaining length of a PUBLISH; sets `props` to its property length (5.0).
fn publish_len(
    p: &PublishParts<'_>,
    v5: bool,
    name: &'static str,
    props: &mut usize,
) -> Result<usize, EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::PacketIdMismatch(
                "a QoS 0 message cannot carry a packet identifier",
            ));
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::PacketIdMismatch(
                "a QoS 1 or 2 message needs a packet identifier",
            ));
        }
        _ => {}
    }
    let mut len = field_len(name, "topic name", p.topic.len())?;
    if p.packet_id.is_some() {
        len += 2;
    }
    if v5 {
        *props = properties::encoded_len_with(p.properties, p.changes, name)?;
        len += block(*props);
    }
    Ok(len + p.payload.len())
}

/// Writes a PUBLISH after its fixed header.
fn write_publish(p: &PublishParts<'_>, v5: bool, plan: &Plan, buf: &mut BytesMut) {
    put_field(buf, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        buf.put_u16(id);
    }
    if v5 {
        properties::put_with(buf, p.properties, p.changes, plan.props);
    }
    buf.put_slice(p.payload);
}

fn props_len(v5: bool, props: &Properties, packet: &'static str) -> Result<usize, EncodeError> {
    if v5 {
        properties::encoded_len(props, packet)
    } else {
        Ok(0)
    }
}

/// Remaining length of a 5.0 packet made of `fixed` bytes, an optional reason code and properties, where
/// the reason and properties may be left out when the reason is Success and there are no properties.
fn short_form_len(fixed: usize, reason: ReasonCode, props: usize, props_empty: bool) -> usize {
    if props_empty {
        if reason == ReasonCode::Success {
            fixed
        } else {
            fixed + 1
        }
    } else {
        fixed + 1 + block(props)
    }
}

fn plan(
    packet: &Packet,
    version: ProtocolVersion,
    name: &'static str,
) -> Result<Plan, EncodeError> {
    let v5 = version.is_v5();
    let mut props = 0;
    let mut will_props = 0;
    let body = match packet {
        Packet::Connect(c) => {
            if c.protocol != version {
                return Err(EncodeError::ConnectVersionMismatch {
                    connect: c.protocol,
                    version,
                });
            }
            let protocol_name = if version == ProtocolVersion::V31 {
                6
            } else {
                4
            };
            let mut len = 2 + protocol_name + 1 + 1 + 2;
            if v5 {
                props = properties::encoded_len(&c.properties, name)?;
                len += block(props);
            }
            len += field_len(name, "client identifier", c.client_id.len())?;
            if let Some(w) = &c.will {
                if v5 {
                    will_props = properties::encoded_len(&w.properties, "CONNECT Will properties")?;
                    len += block(will_props);
                }
                len += field_len(name, "Will Topic", w.topic.len())?;
                len += field_len(name, "Will Payload", w.payload.len())?;
            }
            if let Some(u) = &c.username {
                len += field_len(name, "User Name", u.len())?;
            }
            if let Some(p) = &c.password {
                len += field_len(name, "Password", p.len())?;
            }
            len
        }
        Packet::ConnAck(c) => {
            if v5 {
                props = properties::encoded_len(&c.properties, name)?;
                2 + block(props)
            } else {
                2
            }
        }
        Packet::Publish(p) => publish_len(&PublishParts::of(p), v5, name, &mut props)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            if v5 {
                props = properties::encoded_len(&r.properties, name)?;
                short_form_len(2, r.reason, props, props == 0)
            } else {
                2
            }
        }
        Packet::Subscribe(s) => {
            props = props_len(v5, &s.properties, name)?;
            let mut len = 2 + if v5 { block(props) } else { 0 };
            for (f, _) in &s.filters {
                len += field_len(name, "topic filter", f.len())? + 1;
            }
            len
        }
        Packet::SubAck(s) => {
            props = props_len(v5, &s.properties, name)?;
            2 + if v5 { block(props) } else { 0 } + s.reason_codes.len()
        }
        Packet::Unsubscribe(u) => {
            props = props_len(v5, &u.properties, name)?;
            let mut len = 2 + if v5 { block(props) } else { 0 };
            for f in &u.filters {
                len += field_len(name, "topic filter", f.len())?;
            }
            len
        }
        Packet::UnsubAck(u) => {
            if v5 {
                props = properties::encoded_len(&u.properties, name)?;
                2 + block(props) + u.reason_codes.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                props = properties::encoded_len(&d.properties, name)?;
                short_form_len(0, d.reason, props, props == 0)
            } else {
                0
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInVersion {
                    packet: name,
                    version,
                });
            }
            props = properties::encoded_len(&a.properties, name)?;
            // Short form only for Success without properties; otherwise always reason + property length.
            if a.reason == ReasonCode::Success && props == 0 {
                0
            } else {
                1 + block(props)
            }
        }
    };
    Ok(Plan {
        body,
        props,
        will_props,
    })
}

fn write(packet: &Packet, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    let v5 = version.is_v5();
    let flags = match packet {
        Packet::Publish(p) => PublishParts::of(p).flags(),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    buf.put_u8((packet.packet_type() << 4) | flags);
    put_varint(buf, plan.body);
    match packet {
        Packet::Connect(c) => {
            if version == ProtocolVersion::V31 {
                put_field(buf, b"MQIsdp");
            } else {
                put_field(buf, b"MQTT");
            }
            buf.put_u8(version.level());
            let mut flags = u8::from(c.clean_start) << 1;
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            buf.put_u8(flags);
            buf.put_u16(c.keep_alive);
            if v5 {
                properties::put(buf, &c.properties, plan.props);
            }
            put_field(buf, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                if v5 {
                    properties::put(buf, &w.properties, plan.will_props);
                }
                put_field(buf, w.topic.as_bytes());
                put_field(buf, &w.payload);
            }
            if let Some(u) = &c.username {
                put_field(buf, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_field(buf, p);
            }
        }
        Packet::ConnAck(c) => {
            buf.put_u8(u8::from(c.session_present));
            if v5 {
                buf.put_u8(c.reason.as_u8());
                properties::put(buf, &c.properties, plan.props);
            } else {
                buf.put_u8(c.reason.v3_connack_code());
            }
        }
        Packet::Publish(p) => write_publish(&PublishParts::of(p), v5, plan, buf),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id);
            if v5 && plan.body > 2 {
                buf.put_u8(r.reason.as_u8());
                if plan.body > 3 {
                    properties::put(buf, &r.properties, plan.props);
                }
            }
        }
        Packet::Subscribe(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                properties::put(buf, &s.properties, plan.props);
            }
            for (f, o) in &s.filters {
                put_field(buf, f.as_bytes());
                let mut options = o.qos as u8;
                if v5 {
                    options |= (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | ((o.retain_handling as u8) << 4);
                }
                buf.put_u8(options);
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                properties::put(buf, &s.properties, plan.props);
                for r in &s.reason_codes {
                    buf.put_u8(r.as_u8());
                }
            } else {
                for r in &s.reason_codes {
                    buf.put_u8(match r {
                        ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => {
                            r.as_u8()
                        }
                        _ => 0x80,
                    });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                properties::put(buf, &u.properties, plan.props);
            }
            for f in &u.filters {
                put_field(buf, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                properties::put(buf, &u.properties, plan.props);
                for r in &u.reason_codes {
                    buf.put_u8(r.as_u8());
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect {
            reason,
            properties: props,
        })
        | Packet::Auth(Auth {
            reason,
            properties: props,
        }) => {
            if v5 && plan.body > 0 {
                buf.put_u8(reason.as_u8());
                if plan.body > 1 {
                    properties::put(buf, props, plan.props);
                }
            }
        }
    }
}
