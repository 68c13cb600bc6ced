//! The protobuf wire format: a reader over one message's bytes that yields its fields.

use super::ProtobufError;

/// The wire type of a field, the low three bits of its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireType {
    /// A base-128 varint (int32, int64, bool, enum).
    Varint,
    /// Eight little-endian bytes (fixed64, sfixed64, double).
    Fixed64,
    /// A varint length and that many bytes (string, bytes, messages, packed repeated).
    LengthDelimited,
    /// Four little-endian bytes (fixed32, sfixed32, float).
    Fixed32,
}

impl WireType {
    /// The name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "64-bit",
            WireType::LengthDelimited => "length-delimited",
            WireType::Fixed32 => "32-bit",
        }
    }
}

/// The payload of one field as read from the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WireValue<'a> {
    /// A varint's value.
    Varint(u64),
    /// A 64-bit value's bits.
    Fixed64(u64),
    /// The bytes of a length-delimited field.
    Bytes(&'a [u8]),
    /// A 32-bit value's bits.
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire type this value was read with.
    pub(crate) fn wire_type(&self) -> WireType {
        match self {
            WireValue::Varint(_) => WireType::Varint,
            WireValue::Fixed64(_) => WireType::Fixed64,
            WireValue::Bytes(_) => WireType::LengthDelimited,
            WireValue::Fixed32(_) => WireType::Fixed32,
        }
    }
}

/// Reads fields, in wire order, from the bytes of one message.
pub(crate) struct FieldReader<'a, 'm> {
    data: &'a [u8],
    position: usize,
    /// The message being read, for error messages.
    message: &'m str,
}

impl<'a, 'm> FieldReader<'a, 'm> {
    /// A reader over `data`, the encoding of a message called `message`.
    pub(crate) fn new(data: &'a [u8], message: &'m str) -> Self {
        FieldReader {
            data,
            position: 0,
            message,
        }
    }

    /// The next field as (field number, value), or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, ProtobufError> {
        if self.position >= self.data.len() {
            return Ok(None);
        }
        let tag = self.read_varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(ProtobufError::InvalidFieldNumber {
                number,
                message: self.message.to_string(),
            });
        }
        // Checked just above: the number fits in 29 bits.
        let number = number as u32;
        let value = match tag & 7 {
            0 => WireValue::Varint(self.read_varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.read_array::<8>(number)?)),
            2 => {
                let length = self.read_varint()?;
                let remaining = self.data.len() - self.position;
                if length > remaining as u64 {
                    return Err(ProtobufError::TruncatedField {
                        number,
                        message: self.message.to_string(),
                        length,
                        remaining,
                    });
                }
                // length <= remaining, so it fits in usize.
                let length = length as usize;
                let bytes = &self.data[self.position..self.position + length];
                self.position += length;
                WireValue::Bytes(bytes)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.read_array::<4>(number)?)),
            other => {
                return Err(ProtobufError::UnsupportedWireType {
                    wire_type: other as u8,
                    number,
                    message: self.message.to_string(),
                })
            }
        };
        Ok(Some((number, value)))
    }

    fn read_varint(&mut self) -> Result<u64, ProtobufError> {
        let (value, used) =
            read_varint(&self.data[self.position..]).map_err(|error| match error {
                VarintError::Truncated => ProtobufError::TruncatedVarint {
                    message: self.message.to_string(),
                    offset: self.position,
                },
                VarintError::Overflow => ProtobufError::VarintOverflow {
                    message: self.message.to_string(),
                    offset: self.position,
                },
            })?;
        self.position += used;
        Ok(value)
    }

    fn read_array<const N: usize>(&mut self, number: u32) -> Result<[u8; N], ProtobufError> {
        let remaining = self.data.len() - self.position;
        let mut out = [0u8; N];
        if remaining < N {
            return Err(ProtobufError::TruncatedField {
                number,
                message: self.message.to_string(),
                length: N as u64,
                remaining,
            });
        }
        out.copy_from_slice(&self.data[self.position..self.position + N]);
        self.position += N;
        Ok(out)
    }
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The bytes ended inside the varint.
    Truncated,
    /// The varint has more than ten bytes or does not fit in 64 bits.
    Overflow,
}

/// Reads one varint from the start of `data`: its value and how many bytes it used.
pub(crate) fn read_varint(data: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (index, byte) in data.iter().enumerate() {
        if index == 9 && *byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    if data.len() >= 10 {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Reads every varint of a packed repeated field.
pub(crate) fn read_packed_varints(data: &[u8], message: &str) -> Result<Vec<u64>, ProtobufError> {
    let mut values = Vec::new();
    let mut position = 0;
    while position < data.len() {
        let (value, used) = read_varint(&data[position..]).map_err(|error| match error {
            VarintError::Truncated => ProtobufError::TruncatedVarint {
                message: message.to_string(),
                offset: position,
            },
            VarintError::Overflow => ProtobufError::VarintOverflow {
                message: message.to_string(),
                offset: position,
            },
        })?;
        values.push(value);
        position += used;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_report_truncation_and_overflow() {
        assert_eq!(read_varint(&[0x00]), Ok((0, 1)));
        assert_eq!(read_varint(&[0x96, 0x01]), Ok((150, 2)));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Ok((u64::MAX, 10))
        );
        assert_eq!(read_varint(&[0x96]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overflow)
        );
        assert_eq!(read_varint(&[0x80; 11]), Err(VarintError::Overflow));
    }

    #[test]
    fn fields_are_read_in_order_with_their_wire_types() {
        // field 1 varint 150, field 2 "hi", field 3 fixed32 1, field 4 fixed64 2
        let data = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d, 1, 0, 0, 0, 0x21, 2, 0, 0, 0, 0, 0, 0,
            0,
        ];
        let mut reader = FieldReader::new(&data, "Test");
        assert!(matches!(
            reader.next_field(),
            Ok(Some((1, WireValue::Varint(150))))
        ));
        assert!(matches!(
            reader.next_field(),
            Ok(Some((2, WireValue::Bytes(b"hi"))))
        ));
        assert!(matches!(
            reader.next_field(),
            Ok(Some((3, WireValue::Fixed32(1))))
        ));
        assert!(matches!(
            reader.next_field(),
            Ok(Some((4, WireValue::Fixed64(2))))
        ));
        assert!(matches!(reader.next_field(), Ok(None)));
    }

    #[test]
    fn a_length_past_the_end_is_an_error() {
        let data = [0x12, 0x05, b'h'];
        let mut reader = FieldReader::new(&data, "Test");
        let error = reader.next_field().unwrap_err();
        assert_eq!(
            error.to_string(),
            "field 2 of message Test claims 5 bytes but only 1 remain"
        );
    }

    #[test]
    fn groups_are_rejected() {
        let mut reader = FieldReader::new(&[0x0b], "Test");
        assert!(matches!(
            reader.next_field(),
            Err(ProtobufError::UnsupportedWireType {
                wire_type: 3,
                number: 1,
                ..
            })
        ));
    }
}
