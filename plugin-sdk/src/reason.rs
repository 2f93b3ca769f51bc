//! MQTT 5 reason codes for denials and dropped messages (MQTT 5.0 section 2.4), as the `u8` the WIT takes.
//!
//! MQTT 3.x clients get the closest 3.x return code instead (the broker maps them; on CONNECT,
//! [`BAD_USERNAME_OR_PASSWORD`] and [`NOT_AUTHORIZED`] have direct 3.x equivalents).
//!
//! ```
//! use wasp_plugin_sdk::{AuthVerdict, reason};
//!
//! let verdict = AuthVerdict::deny(reason::BAD_USERNAME_OR_PASSWORD, "unknown user");
//! assert_eq!(reason::NOT_AUTHORIZED, 0x87);
//! ```

use wasp_mqtt::ReasonCode;

/// Unspecified error: a refusal with no better code.
pub const UNSPECIFIED_ERROR: u8 = ReasonCode::UnspecifiedError as u8;

/// Implementation specific error.
pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = ReasonCode::ImplementationSpecificError as u8;

/// Client identifier not valid (CONNACK).
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = ReasonCode::ClientIdentifierNotValid as u8;

/// Bad user name or password (CONNACK).
pub const BAD_USERNAME_OR_PASSWORD: u8 = ReasonCode::BadUserNameOrPassword as u8;

/// Not authorized (CONNACK, PUBACK/PUBREC, SUBACK).
pub const NOT_AUTHORIZED: u8 = ReasonCode::NotAuthorized as u8;

/// Server unavailable (CONNACK).
pub const SERVER_UNAVAILABLE: u8 = ReasonCode::ServerUnavailable as u8;

/// Server busy (CONNACK).
pub const SERVER_BUSY: u8 = ReasonCode::ServerBusy as u8;

/// Banned (CONNACK).
pub const BANNED: u8 = ReasonCode::Banned as u8;

/// Bad authentication method (CONNACK): the plugin does not speak the client's Authentication Method.
pub const BAD_AUTHENTICATION_METHOD: u8 = ReasonCode::BadAuthenticationMethod as u8;

/// Topic filter invalid (SUBACK).
pub const TOPIC_FILTER_INVALID: u8 = ReasonCode::TopicFilterInvalid as u8;

/// Topic name invalid (CONNACK for a Will, PUBACK/PUBREC).
pub const TOPIC_NAME_INVALID: u8 = ReasonCode::TopicNameInvalid as u8;

/// Packet too large (PUBACK/PUBREC when a transformer drops an oversized message).
pub const PACKET_TOO_LARGE: u8 = ReasonCode::PacketTooLarge as u8;

/// Message rate too high.
pub const MESSAGE_RATE_TOO_HIGH: u8 = ReasonCode::MessageRateTooHigh as u8;

/// Quota exceeded (CONNACK, PUBACK/PUBREC, SUBACK): rate limits and quotas.
pub const QUOTA_EXCEEDED: u8 = ReasonCode::QuotaExceeded as u8;

/// Payload format invalid (PUBACK/PUBREC): a transformer refusing a payload.
pub const PAYLOAD_FORMAT_INVALID: u8 = ReasonCode::PayloadFormatInvalid as u8;

/// Retain not supported (CONNACK).
pub const RETAIN_NOT_SUPPORTED: u8 = ReasonCode::RetainNotSupported as u8;

/// QoS not supported (CONNACK).
pub const QOS_NOT_SUPPORTED: u8 = ReasonCode::QoSNotSupported as u8;

/// Connection rate exceeded (CONNACK).
pub const CONNECTION_RATE_EXCEEDED: u8 = ReasonCode::ConnectionRateExceeded as u8;

/// Shared subscriptions not supported (SUBACK).
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 =
    ReasonCode::SharedSubscriptionsNotSupported as u8;

/// Wildcard subscriptions not supported (SUBACK).
pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 =
    ReasonCode::WildcardSubscriptionsNotSupported as u8;

/// No matching subscribers (0x10, not an error): drop a message quietly; the publisher sees success.
pub const NO_MATCHING_SUBSCRIBERS: u8 = ReasonCode::NoMatchingSubscribers as u8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_spec_values() {
        assert_eq!(
            [
                NOT_AUTHORIZED,
                BAD_USERNAME_OR_PASSWORD,
                QUOTA_EXCEEDED,
                UNSPECIFIED_ERROR,
                NO_MATCHING_SUBSCRIBERS
            ],
            [0x87, 0x86, 0x97, 0x80, 0x10]
        );
    }
}
