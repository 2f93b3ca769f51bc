//! MQTT 5.0 User Properties (identifier 0x26) kept in their wire form.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::EncodeError;

/// The User Properties of a packet, in order, repeats allowed, kept as they are on the wire: for each, the
/// identifier 0x26 and two length-prefixed UTF-8 strings (name, value), back to back in one buffer.
///
/// A decoded packet's are one slice of it (when they are consecutive in its property block, as clients
/// write them), and the encoder writes them as they are: forwarding a message's user properties takes one
/// reference to a buffer and one copy of its bytes, however many properties there are. Every value of this
/// type is valid (names and values within 65,535 bytes, UTF-8 as the decoder checked or as `&str` gave
/// them): it is made only by the decoder and by [`UserPropertiesWriter`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UserProperties {
    wire: Bytes,
}

impl UserProperties {
    /// No user properties.
    pub const fn new() -> Self {
        Self { wire: Bytes::new() }
    }

    /// These `(name, value)` pairs, in order; `Err` when one is over 65,535 bytes.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, EncodeError> {
        let mut buf = BytesMut::new();
        let mut writer = UserPropertiesWriter::new(&mut buf);
        for (key, value) in pairs {
            writer.push(key.as_ref(), value.as_ref())?;
        }
        Ok(writer.finish())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    /// How many there are (counted by walking them).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The `(name, value)` pairs, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.wire }
    }

    /// Their wire form: what the encoder writes into a property block.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// A copy in a buffer of its own, which keeps no packet's read buffer (or shared chunk) alive.
    pub fn to_owned_copy(&self) -> Self {
        Self {
            wire: Bytes::copy_from_slice(&self.wire),
        }
    }

    /// From the wire form the decoder has validated: consecutive User Properties of a property block.
    pub(crate) fn from_validated_wire(wire: Bytes) -> Self {
        Self { wire }
    }
}

impl fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a UserProperties {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> PartialEq<[(K, V)]> for UserProperties {
    fn eq(&self, other: &[(K, V)]) -> bool {
        let mut theirs = other.iter();
        for (key, value) in self {
            match theirs.next() {
                Some((k, v)) if k.as_ref() == key && v.as_ref() == value => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> PartialEq<[(K, V); N]> for UserProperties {
    fn eq(&self, other: &[(K, V); N]) -> bool {
        *self == other[..]
    }
}

/// The `(name, value)` pairs of [`UserProperties`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // Skips the identifier byte; every value is valid (see `UserProperties`), so nothing here fails.
        let (_, rest) = self.rest.split_first()?;
        let (key, rest) = split_string(rest);
        let (value, rest) = split_string(rest);
        self.rest = rest;
        Some((key, value))
    }
}

/// The length of the length-prefixed string at the start of `wire`.
fn string_len(wire: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([wire[0], wire[1]]))
}

/// A length-prefixed string at the start of `wire`, and what follows it.
fn split_string(wire: &[u8]) -> (&str, &[u8]) {
    let (text, rest) = wire[2..].split_at(string_len(wire));
    (
        std::str::from_utf8(text).expect("user properties are UTF-8 by construction"),
        rest,
    )
}

/// Writes [`UserProperties`] into a buffer that several sets of them may share, one after another: each
/// set is split off it by [`UserPropertiesWriter::finish`] (as a packet's are a slice of its read buffer),
/// so a chunk allocated once serves many messages.
#[derive(Debug)]
pub struct UserPropertiesWriter<'b> {
    buf: &'b mut BytesMut,
}

impl<'b> UserPropertiesWriter<'b> {
    /// A writer appending to `buf`, which it empties first (its spare capacity is kept).
    pub fn new(buf: &'b mut BytesMut) -> Self {
        buf.clear();
        Self { buf }
    }

    /// Appends a property; `Err` (nothing appended) when the name or value is over 65,535 bytes.
    pub fn push(&mut self, key: &str, value: &str) -> Result<(), EncodeError> {
        self.push_display(key, value)
    }

    /// Appends a property whose value is `value`'s text, written straight into the buffer (a number, a
    /// time stamp); `Err` (nothing appended) when the name or the text is over 65,535 bytes. Panics if
    /// `value`'s `Display` fails, as `ToString` does.
    pub fn push_display(&mut self, key: &str, value: impl fmt::Display) -> Result<(), EncodeError> {
        let key_len = u16::try_from(key.len()).map_err(|_| too_long("name", key.len()))?;
        let start = self.buf.len();
        self.buf.put_u8(0x26);
        self.buf.put_u16(key_len);
        self.buf.put_slice(key.as_bytes());
        self.push_value(start, value)
    }

    /// Appends `source`'s properties in order, each whose place (0, 1, ...) `value_at` answers with
    /// `Some(text)` with that text as its value instead of its own; `Err` (nothing of that property
    /// appended) when a new value is over 65,535 bytes. The others are copied as they are on the wire,
    /// without going through `&str` (a reused transform outcome's properties on each message, its stamps
    /// made anew).
    pub fn push_replacing<D: fmt::Display>(
        &mut self,
        source: &UserProperties,
        mut value_at: impl FnMut(usize) -> Option<D>,
    ) -> Result<(), EncodeError> {
        let mut rest = &source.wire[..];
        let mut place = 0;
        while !rest.is_empty() {
            // The identifier, the name's length and the name; then the value's length and the value.
            let name_end = 3 + string_len(&rest[1..]);
            let end = name_end + 2 + string_len(&rest[name_end..]);
            match value_at(place) {
                None => self.buf.extend_from_slice(&rest[..end]),
                Some(value) => {
                    let start = self.buf.len();
                    self.buf.extend_from_slice(&rest[..name_end]);
                    self.push_value(start, value)?;
                }
            }
            rest = &rest[end..];
            place += 1;
        }
        Ok(())
    }

    /// Appends the length-prefixed text of `value` to the property begun at `start`; `Err` (the buffer
    /// truncated back to `start`) when it is over 65,535 bytes.
    fn push_value(&mut self, start: usize, value: impl fmt::Display) -> Result<(), EncodeError> {
        let len_at = self.buf.len();
        self.buf.put_u16(0);
        fmt::write(&mut Text(self.buf), format_args!("{value}"))
            .expect("a Display implementation returned an error unexpectedly");
        let len = self.buf.len() - len_at - 2;
        let Ok(value_len) = u16::try_from(len) else {
            self.buf.truncate(start);
            return Err(too_long("value", len));
        };
        self.buf[len_at..len_at + 2].copy_from_slice(&value_len.to_be_bytes());
        Ok(())
    }

    /// The properties pushed, split off the buffer (which keeps its spare capacity for the next set).
    pub fn finish(self) -> UserProperties {
        UserProperties {
            wire: self.buf.split().freeze(),
        }
    }
}

/// A User Property's name or value (`field`) of `len` bytes, over the 65,535 a length prefix holds.
fn too_long(field: &'static str, len: usize) -> EncodeError {
    EncodeError::FieldTooLong {
        packet: "User Property",
        field,
        len,
    }
}

/// `fmt::Write` into a `BytesMut`: only text goes in.
struct Text<'a>(&'a mut BytesMut);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_replacing_copies_all_but_the_places_given_new_values() {
        let source =
            UserProperties::from_pairs([("a", "1"), ("stamp", "old"), ("", ""), ("b", "2")])
                .expect("short");
        let mut buf = BytesMut::new();
        let mut writer = UserPropertiesWriter::new(&mut buf);
        writer
            .push_replacing(&source, |at| (at == 1 || at == 2).then(|| at * 100))
            .expect("short values");
        let replaced = writer.finish();
        assert_eq!(
            replaced,
            [("a", "1"), ("stamp", "100"), ("", "200"), ("b", "2")]
        );
        // Replacing nothing copies the wire form as it is.
        let mut writer = UserPropertiesWriter::new(&mut buf);
        writer
            .push_replacing(&source, |_| None::<&str>)
            .expect("nothing new");
        assert_eq!(writer.finish().wire(), source.wire());
        // A value over 65,535 bytes is refused and leaves nothing of its property behind.
        let long = "x".repeat(65_536);
        let mut writer = UserPropertiesWriter::new(&mut buf);
        let refused = writer.push_replacing(&source, |at| (at == 3).then_some(long.as_str()));
        assert!(matches!(
            refused,
            Err(EncodeError::FieldTooLong {
                field: "value",
                len: 65_536,
                ..
            })
        ));
        assert_eq!(writer.finish(), [("a", "1"), ("stamp", "old"), ("", "")]);
    }

    #[test]
    fn pairs_go_in_and_come_out_in_order_with_repeats() {
        let props = UserProperties::from_pairs([("a", "1"), ("", ""), ("a", "2")]).expect("short");
        assert_eq!(
            props.iter().collect::<Vec<_>>(),
            [("a", "1"), ("", ""), ("a", "2")]
        );
        assert_eq!(props.len(), 3);
        assert_eq!(props, [("a", "1"), ("", ""), ("a", "2")]);
        assert_ne!(props, [("a", "1"), ("", "")]);
        assert_ne!(props, [("a", "1"), ("", ""), ("a", "2"), ("b", "3")]);
        assert_eq!(
            props.wire(),
            b"\x26\x00\x01a\x00\x011\x26\x00\x00\x00\x00\x26\x00\x01a\x00\x012"
        );
        assert!(UserProperties::new().is_empty());
        assert_eq!(
            format!("{props:?}"),
            r#"[("a", "1"), ("", ""), ("a", "2")]"#
        );
    }

    #[test]
    fn a_writer_refuses_fields_over_the_limit_and_keeps_what_it_had() {
        let mut buf = BytesMut::new();
        let mut writer = UserPropertiesWriter::new(&mut buf);
        writer.push("k", "v").expect("short");
        let long = "x".repeat(65_536);
        assert!(matches!(
            writer.push(&long, "v"),
            Err(EncodeError::FieldTooLong {
                field: "name",
                len: 65_536,
                ..
            })
        ));
        assert!(matches!(
            writer.push("k", &long),
            Err(EncodeError::FieldTooLong {
                field: "value",
                len: 65_536,
                ..
            })
        ));
        writer
            .push(&long[1..], &long[1..])
            .expect("65,535 bytes fit");
        writer.push_display("n", 42).expect("short");
        let props = writer.finish();
        let pairs: Vec<_> = props.iter().collect();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], ("k", "v"));
        assert_eq!(pairs[1], (&long[1..], &long[1..]));
        assert_eq!(pairs[2], ("n", "42"));
    }

    #[test]
    fn sets_written_one_after_another_share_the_buffer_and_keep_their_own_values() {
        let mut buf = BytesMut::with_capacity(64);
        let sets: Vec<_> = (0..3)
            .map(|n| {
                let mut writer = UserPropertiesWriter::new(&mut buf);
                writer.push("n", &n.to_string()).expect("short");
                writer.finish()
            })
            .collect();
        for (n, set) in sets.iter().enumerate() {
            assert_eq!(*set, [("n", n.to_string())]);
        }
        assert_eq!(
            sets[1].wire().as_ptr(),
            sets[0].wire().as_ptr_range().end,
            "one buffer"
        );
        assert_eq!(sets[0].to_owned_copy(), sets[0]);
    }
}
