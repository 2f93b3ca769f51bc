//! The packets of MQTT 3.1, 3.1.1 and 5.0 as plain data.
//!
//! One type serves every protocol version: fields that only exist in 5.0 (properties, reason codes on
//! acknowledgements) are ignored when encoding for 3.x and take their neutral value when decoding 3.x.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::reason::ReasonCode;
use crate::user_properties::UserProperties;

/// The protocol level carried in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (protocol name `MQTT`, level 4).
    V311,
    /// MQTT 5.0 (protocol name `MQTT`, level 5).
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a 0..=2 value; `None` for 3 and above (a malformed packet).
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Every MQTT 5.0 property, flat. Absent properties are `None` / empty.
///
/// The decoder accepts a property only in the packets where the spec allows it and only once (except User
/// Property and, in PUBLISH, Subscription Identifier); the encoder writes whatever is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01 Payload Format Indicator (PUBLISH, Will).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds (PUBLISH, Will).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type (PUBLISH, Will). A slice of the packet, like the user properties.
    pub content_type: Option<ByteString>,
    /// 0x08 Response Topic (PUBLISH, Will). A slice of the packet, like the user properties.
    pub response_topic: Option<ByteString>,
    /// 0x09 Correlation Data (PUBLISH, Will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s): one in SUBSCRIBE, any number in PUBLISH sent to a client.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier (CONNACK).
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (CONNECT).
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval, seconds (Will).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (CONNECT).
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information (CONNACK).
    pub response_information: Option<String>,
    /// 0x1C Server Reference (CONNACK, DISCONNECT).
    pub server_reference: Option<String>,
    /// 0x1F Reason String (acknowledgements, CONNACK, DISCONNECT, AUTH).
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum (CONNECT, CONNACK).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (PUBLISH).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (CONNACK).
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (CONNACK).
    pub retain_available: Option<u8>,
    /// 0x26 User Property, in order, repeats allowed (every packet with properties), in their wire
    /// form: decoded as one slice of the packet, like the payload, and encoded as they are.
    pub user_properties: UserProperties,
    /// 0x27 Maximum Packet Size (CONNECT, CONNACK).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (CONNACK).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (CONNACK).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (CONNACK).
    pub shared_subscription_available: Option<u8>,
}

/// A Will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will topic (a topic name: no wildcards).
    pub topic: Arc<str>,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version from the protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive, seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: String,
    /// The Will, when the Will Flag is set.
    pub will: Option<Will>,
    /// User name, when its flag is set.
    pub username: Option<String>,
    /// Password, when its flag is set.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The reason code (5.0); for 3.x it is mapped to a return code by the encoder (see
    /// [`ReasonCode::v3_connack_code`]).
    pub reason: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name. May be empty in 5.0 when a Topic Alias property stands for it.
    pub topic: Arc<str>,
    /// Packet identifier; present (non-zero) exactly when QoS > 0.
    pub packet_id: Option<u16>,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// Packet identifier being acknowledged.
    pub packet_id: u16,
    /// Reason code (5.0); `Success` for 3.x.
    pub reason: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties,
}

impl PubResponse {
    /// A success response with no properties.
    pub fn success(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }
    }
}

/// Retain Handling subscription option (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not already exist.
    SendIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options of one topic filter. For 3.x only `qos` is meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS requested.
    pub qos: QoS,
    /// No Local (5.0): do not send the subscriber's own publications back to it.
    pub no_local: bool,
    /// Retain As Published (5.0): keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// Properties (5.0): Subscription Identifier and User Properties.
    pub properties: Properties,
    /// At least one topic filter with its options.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One code per filter: a granted QoS (0x00-0x02) or a failure (>= 0x80). For 3.x every failure is
    /// written as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// At least one topic filter.
    pub filters: Vec<String>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One code per filter (5.0 only; not written for 3.x).
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (5.0); `NormalDisconnection` for 3.x.
    pub reason: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties,
}

/// AUTH (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `Success`, `ContinueAuthentication` or `ReAuthenticate`.
    pub reason: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, User Properties.
    pub properties: Properties,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Publish),
    /// PUBACK (4).
    PubAck(PubResponse),
    /// PUBREC (5).
    PubRec(PubResponse),
    /// PUBREL (6).
    PubRel(PubResponse),
    /// PUBCOMP (7).
    PubComp(PubResponse),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect),
    /// AUTH (15, 5.0 only).
    Auth(Auth),
}
