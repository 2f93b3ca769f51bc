//! Pure MQTT for the Wasp broker: the packets of MQTT 3.1, 3.1.1 and 5.0, their codec, reason codes and the
//! rules of topic names and filters.
//!
//! Nothing here performs I/O or knows about tokio: bytes go in, packets come out (and the reverse), so the
//! codec can be unit-tested, property-tested and fuzzed on its own.
//!
//! - [`packet`]: the packets as plain data, one type for every protocol version.
//! - [`reason`]: MQTT 5.0 reason codes and the 3.x return codes they map to.
//! - [`codec`]: [`decode`] a packet from a buffer (incrementally, enforcing a maximum packet size) and
//!   [`encode`] one for a given protocol version (honouring the peer's maximum packet size).
//! - [`user_properties`]: MQTT 5.0 User Properties in their wire form.
//! - [`topic`]: validation of topic names and filters, shared-subscription filters, and filter matching
//!   (one filter with [`topic::matches`], a set of them with [`topic::FilterTree`]).

#![deny(missing_docs)]

pub mod codec;
mod filter_tree;
pub mod packet;
pub mod reason;
pub mod topic;
pub mod user_properties;

/// A UTF-8 string backed by [`bytes::Bytes`] (Content Type, Response Topic): cloning or slicing it copies
/// nothing.
pub use bytestring::ByteString;
pub use codec::{Changes, DecodeError, EncodeError, PublishParts, decode, encode, encode_publish};
pub use packet::*;
pub use reason::ReasonCode;
pub use user_properties::{UserProperties, UserPropertiesWriter};
