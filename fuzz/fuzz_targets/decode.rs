//! Feeds arbitrary bytes to `wasp_mqtt::decode` for every connection state (before CONNECT, 3.1, 3.1.1,
//! 5.0). The decoder must never panic, and every packet it accepts must survive a round trip: encoded again
//! for its version, it decodes to an equal packet and consumes exactly the encoded bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wasp_mqtt::{Packet, ProtocolVersion, decode, encode};

const VERSIONS: [Option<ProtocolVersion>; 4] =
    [None, Some(ProtocolVersion::V31), Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)];

fuzz_target!(|data: &[u8]| {
    for version in VERSIONS {
        let mut buf = BytesMut::from(data);
        let mut version = version;
        // Decode packets one after another until the input is exhausted or invalid.
        while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
            let encode_version = match &packet {
                // After CONNECT the connection speaks its version.
                Packet::Connect(c) => {
                    let v = c.protocol;
                    version = Some(v);
                    v
                }
                _ => version.expect("only CONNECT decodes before CONNECT"),
            };
            let decode_version = if matches!(packet, Packet::Connect(_)) { None } else { Some(encode_version) };
            let mut out = BytesMut::new();
            let n = encode(&packet, encode_version, &mut out, u32::MAX)
                .unwrap_or_else(|e| panic!("decoded {packet:?} but cannot encode it: {e}"));
            assert_eq!(n, out.len());
            let again = decode(&mut out, decode_version, u32::MAX);
            assert_eq!(again, Ok(Some(packet)), "round trip changed the packet");
            assert!(out.is_empty(), "round trip left {} bytes", out.len());
        }
    }
});
