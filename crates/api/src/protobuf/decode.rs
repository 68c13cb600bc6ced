//! Turns the bytes of one message into the JSON value upstream's JSON encoding gives.

use serde_json::{Map, Number, Value};

use super::format::{base64, go_duration, rfc3339, GO_ZERO_TIME_SECONDS};
use super::schema::{Field, FieldType, Label, Scalar, Schema};
use super::wire::{read_packed_varints, FieldReader, WireType, WireValue};
use super::ProtobufError;

/// How deeply messages may nest; far beyond any served kind, it bounds crafted input.
pub(crate) const MAX_DEPTH: usize = 64;

const TIME: &str = "apis.meta.v1.Time";
const MICRO_TIME: &str = "apis.meta.v1.MicroTime";
const DURATION: &str = "apis.meta.v1.Duration";
const FIELDS_V1: &str = "apis.meta.v1.FieldsV1";
const QUANTITY: &str = "api.resource.Quantity";
const INT_OR_STRING: &str = "util.intstr.IntOrString";
const RAW_EXTENSION: &str = "runtime.RawExtension";

/// Decodes messages against one schema.
pub(crate) struct Decoder<'s> {
    pub(crate) schema: &'s Schema,
}

impl Decoder<'_> {
    /// Decodes the message `name` from `data` into a JSON object.
    pub(crate) fn message(
        &self,
        data: &[u8],
        name: &str,
        depth: usize,
    ) -> Result<Map<String, Value>, ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep { limit: MAX_DEPTH });
        }
        let fields = self.schema.message(name).ok_or_else(|| {
            ProtobufError::Schema(format!("no message {name} in the schema table"))
        })?;
        let mut object = Map::new();
        let mut reader = FieldReader::new(data, name);
        while let Some((number, value)) = reader.next_field()? {
            // Unknown fields are skipped, as upstream's generated unmarshalers do.
            let Some(field) = fields.get(&number) else {
                continue;
            };
            let context = Context {
                number,
                message: name,
                depth,
            };
            match field.label {
                Label::Map => {
                    let entry = expect_bytes(value, context)?;
                    let (key, item) = self.map_entry(entry, field, context)?;
                    let map = object
                        .entry(field.json_name.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(map) = map {
                        map.insert(key, item);
                    }
                }
                Label::Repeated => {
                    let items = self.repeated(value, &field.field_type, context)?;
                    let list = object
                        .entry(field.json_name.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.extend(items);
                    }
                }
                Label::Optional => {
                    let Some(item) = self.single(value, &field.field_type, context)? else {
                        continue;
                    };
                    if field.inline {
                        if let Value::Object(inner) = item {
                            object.extend(inner);
                        }
                    } else if is_dropped(&item, field) {
                        object.remove(&field.json_name);
                    } else {
                        object.insert(field.json_name.clone(), item);
                    }
                }
            }
        }
        Ok(object)
    }

    /// One value of type `field_type`; `None` when its JSON form is absent (a zero time, an
    /// empty raw extension).
    fn single(
        &self,
        value: WireValue<'_>,
        field_type: &FieldType,
        context: Context<'_>,
    ) -> Result<Option<Value>, ProtobufError> {
        let name = match field_type {
            FieldType::Scalar(scalar) => return scalar_value(value, *scalar, context).map(Some),
            FieldType::Message(name) => name.as_str(),
        };
        let data = expect_bytes(value, context)?;
        let depth = context.depth + 1;
        match name {
            TIME => {
                let seconds = special_fields(data, name)?.int(1, name)?;
                if data.is_empty() || seconds == GO_ZERO_TIME_SECONDS {
                    return Ok(None);
                }
                // Upstream drops the nanoseconds of a Time read from protobuf.
                timestamp(seconds, None, name).map(Some)
            }
            MICRO_TIME => {
                let fields = special_fields(data, name)?;
                let seconds = fields.int(1, name)?;
                if data.is_empty() || seconds == GO_ZERO_TIME_SECONDS {
                    return Ok(None);
                }
                let nanos = fields.int(2, name)?.clamp(0, 999_999_999);
                // Clamped to 0..1e9 just above.
                timestamp(seconds, Some((nanos / 1000) as u32), name).map(Some)
            }
            DURATION => {
                let nanos = special_fields(data, name)?.int(1, name)?;
                Ok(Some(Value::String(go_duration(nanos))))
            }
            QUANTITY => {
                let text = special_fields(data, name)?.string(1, name)?;
                let text = if text.is_empty() { "0" } else { text };
                Ok(Some(Value::String(text.to_string())))
            }
            INT_OR_STRING => {
                let fields = special_fields(data, name)?;
                if fields.int(1, name)? == 1 {
                    Ok(Some(Value::String(fields.string(3, name)?.to_string())))
                } else {
                    // intVal is an int32 on the wire.
                    Ok(Some(Value::from(fields.int(2, name)? as i32)))
                }
            }
            RAW_EXTENSION | FIELDS_V1 => {
                let raw = special_fields(data, name)?.bytes(1, name)?;
                self.embedded(raw, context, depth)
            }
            _ => self
                .message(data, name, depth)
                .map(|m| Some(Value::Object(m))),
        }
    }

    /// The object inside a `RawExtension` or `FieldsV1`: JSON, or a nested protobuf envelope.
    fn embedded(
        &self,
        raw: &[u8],
        context: Context<'_>,
        depth: usize,
    ) -> Result<Option<Value>, ProtobufError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.starts_with(super::MAGIC) {
            return super::decode_envelope(self, raw, depth).map(Some);
        }
        serde_json::from_slice(raw)
            .map(Some)
            .map_err(|error| ProtobufError::InvalidEmbeddedJson {
                number: context.number,
                message: context.message.to_string(),
                reason: error.to_string(),
            })
    }

    /// The values of one occurrence of a repeated field: one value, or several when packed.
    fn repeated(
        &self,
        value: WireValue<'_>,
        field_type: &FieldType,
        context: Context<'_>,
    ) -> Result<Vec<Value>, ProtobufError> {
        if let (FieldType::Scalar(scalar), WireValue::Bytes(data)) = (field_type, value) {
            let packed = match scalar {
                Scalar::String | Scalar::Bytes => None,
                Scalar::Double => Some(fixed_chunks::<8>(data, context)?),
                Scalar::Float => Some(fixed_chunks::<4>(data, context)?),
                _ => Some(
                    read_packed_varints(data, context.message)?
                        .into_iter()
                        .map(WireValue::Varint)
                        .collect(),
                ),
            };
            if let Some(values) = packed {
                return values
                    .into_iter()
                    .map(|value| scalar_value(value, *scalar, context))
                    .collect();
            }
        }
        Ok(vec![self
            .single(value, field_type, context)?
            .unwrap_or(Value::Null)])
    }

    /// The key and value of one map entry (a message with key = 1, value = 2).
    fn map_entry(
        &self,
        entry: &[u8],
        field: &Field,
        context: Context<'_>,
    ) -> Result<(String, Value), ProtobufError> {
        let mut key = String::new();
        let mut item = None;
        let mut reader = FieldReader::new(entry, context.message);
        while let Some((number, value)) = reader.next_field()? {
            match number {
                1 => {
                    key = utf8(expect_bytes(value, context)?, context)?.to_string();
                }
                2 => item = Some(value),
                _ => {}
            }
        }
        let item = item.unwrap_or(match &field.field_type {
            FieldType::Scalar(Scalar::String | Scalar::Bytes) | FieldType::Message(_) => {
                WireValue::Bytes(&[])
            }
            FieldType::Scalar(Scalar::Double) => WireValue::Fixed64(0),
            FieldType::Scalar(Scalar::Float) => WireValue::Fixed32(0),
            FieldType::Scalar(_) => WireValue::Varint(0),
        });
        let item = self
            .single(item, &field.field_type, context)?
            .unwrap_or(Value::Null);
        Ok((key, item))
    }
}

/// Where a value is being decoded, for error messages.
#[derive(Debug, Clone, Copy)]
struct Context<'a> {
    number: u32,
    message: &'a str,
    depth: usize,
}

/// Whether a decoded optional field is left out of the JSON object. See the module docs.
fn is_dropped(item: &Value, field: &Field) -> bool {
    match item {
        Value::String(text) => text.is_empty() && !field.pointer,
        Value::Number(number) => field.omit_empty && !field.pointer && number.as_f64() == Some(0.0),
        Value::Bool(flag) => field.omit_empty && !field.pointer && !flag,
        _ => false,
    }
}

fn mismatch(expected: WireType, found: WireType, context: Context<'_>) -> ProtobufError {
    ProtobufError::WireTypeMismatch {
        number: context.number,
        message: context.message.to_string(),
        expected: expected.name(),
        found: found.name(),
    }
}

fn expect_bytes<'a>(value: WireValue<'a>, context: Context<'_>) -> Result<&'a [u8], ProtobufError> {
    match value {
        WireValue::Bytes(data) => Ok(data),
        other => Err(mismatch(
            WireType::LengthDelimited,
            other.wire_type(),
            context,
        )),
    }
}

fn utf8<'a>(data: &'a [u8], context: Context<'_>) -> Result<&'a str, ProtobufError> {
    std::str::from_utf8(data).map_err(|_| ProtobufError::InvalidUtf8 {
        number: context.number,
        message: context.message.to_string(),
    })
}

fn scalar_value(
    value: WireValue<'_>,
    scalar: Scalar,
    context: Context<'_>,
) -> Result<Value, ProtobufError> {
    let found = value.wire_type();
    let expected = match scalar {
        Scalar::String | Scalar::Bytes => WireType::LengthDelimited,
        Scalar::Double => WireType::Fixed64,
        Scalar::Float => WireType::Fixed32,
        _ => WireType::Varint,
    };
    let json = match (scalar, value) {
        (Scalar::String, WireValue::Bytes(data)) => Value::String(utf8(data, context)?.to_string()),
        (Scalar::Bytes, WireValue::Bytes(data)) => Value::String(base64(data)),
        // Negative int32s are sign-extended to 64 bits on the wire; truncation restores them.
        (Scalar::Int32, WireValue::Varint(bits)) => Value::from(bits as i64 as i32),
        (Scalar::Int64, WireValue::Varint(bits)) => Value::from(bits as i64),
        (Scalar::Uint32, WireValue::Varint(bits)) => Value::from(bits as u32),
        (Scalar::Uint64, WireValue::Varint(bits)) => Value::from(bits),
        (Scalar::Bool, WireValue::Varint(bits)) => Value::Bool(bits != 0),
        (Scalar::Double, WireValue::Fixed64(bits)) => float(f64::from_bits(bits), context)?,
        (Scalar::Float, WireValue::Fixed32(bits)) => {
            float(f64::from(f32::from_bits(bits)), context)?
        }
        _ => return Err(mismatch(expected, found, context)),
    };
    Ok(json)
}

fn float(value: f64, context: Context<'_>) -> Result<Value, ProtobufError> {
    Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| ProtobufError::InvalidFloat {
            number: context.number,
            message: context.message.to_string(),
        })
}

fn fixed_chunks<'a, const N: usize>(
    data: &'a [u8],
    context: Context<'_>,
) -> Result<Vec<WireValue<'a>>, ProtobufError> {
    let chunks = data.chunks_exact(N);
    if !chunks.remainder().is_empty() {
        return Err(ProtobufError::InvalidPacked {
            number: context.number,
            message: context.message.to_string(),
        });
    }
    Ok(chunks
        .map(|chunk| {
            let mut bits = [0u8; 8];
            bits[..N].copy_from_slice(chunk);
            let bits = u64::from_le_bytes(bits);
            if N == 8 {
                WireValue::Fixed64(bits)
            } else {
                WireValue::Fixed32(bits as u32)
            }
        })
        .collect())
}

fn timestamp(seconds: i64, micros: Option<u32>, message: &str) -> Result<Value, ProtobufError> {
    rfc3339(seconds, micros)
        .map(Value::String)
        .ok_or_else(|| ProtobufError::InvalidTimestamp {
            seconds,
            message: message.to_string(),
        })
}

/// The last value of each field of a small special message (Time, Quantity, IntOrString, ...).
struct SpecialFields<'a> {
    values: Vec<(u32, WireValue<'a>)>,
}

fn special_fields<'a>(data: &'a [u8], message: &str) -> Result<SpecialFields<'a>, ProtobufError> {
    let mut values = Vec::new();
    let mut reader = FieldReader::new(data, message);
    while let Some(field) = reader.next_field()? {
        values.push(field);
    }
    Ok(SpecialFields { values })
}

impl<'a> SpecialFields<'a> {
    fn last(&self, number: u32) -> Option<WireValue<'a>> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == number)
            .map(|(_, value)| *value)
    }

    fn context<'m>(number: u32, message: &'m str) -> Context<'m> {
        Context {
            number,
            message,
            depth: 0,
        }
    }

    /// A varint field as a signed 64-bit integer; 0 when absent.
    fn int(&self, number: u32, message: &str) -> Result<i64, ProtobufError> {
        match self.last(number) {
            None => Ok(0),
            Some(WireValue::Varint(bits)) => Ok(bits as i64),
            Some(other) => Err(mismatch(
                WireType::Varint,
                other.wire_type(),
                Self::context(number, message),
            )),
        }
    }

    /// A bytes field; empty when absent.
    fn bytes(&self, number: u32, message: &str) -> Result<&'a [u8], ProtobufError> {
        match self.last(number) {
            None => Ok(&[]),
            Some(value) => expect_bytes(value, Self::context(number, message)),
        }
    }

    /// A string field; empty when absent.
    fn string(&self, number: u32, message: &str) -> Result<&'a str, ProtobufError> {
        let data = self.bytes(number, message)?;
        utf8(data, Self::context(number, message))
    }
}
