//! The `/openapi/v2` document in protobuf form: a swagger 2.0 JSON document encoded as the
//! gnostic `openapi.v2.Document` message (github.com/google/gnostic-models,
//! `openapiv2/OpenAPIv2.proto`), which kubectl asks for with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`.
//!
//! The mapping follows gnostic's own JSON-to-message conversion (`openapi_v2.ParseDocument`):
//! keys starting with `x-` become `NamedAny` vendor extensions, and every free-form value
//! (`default`, `enum`, `example`, extensions) becomes an `Any` whose `yaml` field holds the
//! value as YAML text (`value` stays unset), which is what kube-openapi's reader
//! `yaml.Unmarshal`s. Keys the message has no field for are dropped, as gnostic does.

use serde_json::{Map, Value};

/// Wire type of varint fields (bool, int64).
const WIRE_VARINT: u64 = 0;
/// Wire type of 64-bit fixed fields (double).
const WIRE_FIXED64: u64 = 1;
/// Wire type of length-delimited fields (string, message).
const WIRE_LEN: u64 = 2;

/// Encodes a swagger 2.0 document (as served at `/openapi/v2` in JSON) as the gnostic
/// `openapi.v2.Document` protobuf message. Parts of the document that are not in swagger
/// 2.0 shape (e.g. a schema that is not an object) are encoded as empty messages.
pub fn openapi_v2_protobuf(doc: &Value) -> Vec<u8> {
    let Value::Object(doc) = doc else {
        return Vec::new();
    };
    let mut out = Fields::new(doc);
    out.string("swagger", 1);
    out.message("info", 2, info);
    out.string("host", 3);
    out.string("basePath", 4);
    out.strings("schemes", 5);
    out.strings("consumes", 6);
    out.strings("produces", 7);
    out.message("paths", 8, paths);
    out.message("definitions", 9, |v| named_map(v, schema));
    out.message("parameters", 10, |v| named_map(v, parameter));
    out.message("responses", 11, |v| named_map(v, response));
    out.messages("security", 12, security_requirement);
    out.message("securityDefinitions", 13, |v| {
        named_map(v, security_definitions_item)
    });
    out.messages("tags", 14, tag);
    out.message("externalDocs", 15, external_docs);
    out.extensions(16);
    out.finish()
}

/// A protobuf message under construction.
#[derive(Debug, Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            // Low seven bits with the continuation bit; truncation is the point.
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u64) {
        self.varint((u64::from(field) << 3) | wire_type);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, WIRE_LEN);
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    fn message(&mut self, field: u32, message: Writer) {
        self.bytes(field, &message.buf);
    }

    fn bool(&mut self, field: u32, value: bool) {
        self.tag(field, WIRE_VARINT);
        self.varint(u64::from(value));
    }

    fn int64(&mut self, field: u32, value: i64) {
        self.tag(field, WIRE_VARINT);
        // int64 is encoded as the two's complement bit pattern.
        self.varint(value as u64);
    }

    fn double(&mut self, field: u32, value: f64) {
        self.tag(field, WIRE_FIXED64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// Writes the fields of one message from the keys of one JSON object. Scalars equal to the
/// proto3 default are left out (as proto3 encoders do); present objects and arrays are
/// always written, so that e.g. an empty `properties` still decodes to a set message.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    out: Writer,
}

impl<'a> Fields<'a> {
    fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            out: Writer::default(),
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out.buf
    }

    fn into_writer(self) -> Writer {
        self.out
    }

    fn string(&mut self, key: &str, field: u32) {
        if let Some(Value::String(value)) = self.object.get(key) {
            if !value.is_empty() {
                self.out.string(field, value);
            }
        }
    }

    /// A `repeated string`; a single string counts as a one-element list.
    fn strings(&mut self, key: &str, field: u32) {
        match self.object.get(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::String(item) = item {
                        self.out.string(field, item);
                    }
                }
            }
            Some(Value::String(item)) => self.out.string(field, item),
            _ => {}
        }
    }

    fn bool(&mut self, key: &str, field: u32) {
        if let Some(Value::Bool(true)) = self.object.get(key) {
            self.out.bool(field, true);
        }
    }

    fn int64(&mut self, key: &str, field: u32) {
        if let Some(value) = self.object.get(key).and_then(Value::as_i64) {
            if value != 0 {
                self.out.int64(field, value);
            }
        }
    }

    fn double(&mut self, key: &str, field: u32) {
        if let Some(value) = self.object.get(key).and_then(Value::as_f64) {
            if value != 0.0 {
                self.out.double(field, value);
            }
        }
    }

    /// An `Any` holding the value as YAML.
    fn any(&mut self, key: &str, field: u32) {
        if let Some(value) = self.object.get(key) {
            self.out.message(field, any(value));
        }
    }

    /// A `repeated Any`, one per array element.
    fn anys(&mut self, key: &str, field: u32) {
        if let Some(Value::Array(items)) = self.object.get(key) {
            for item in items {
                self.out.message(field, any(item));
            }
        }
    }

    fn message(&mut self, key: &str, field: u32, encode: impl FnOnce(&Value) -> Writer) {
        if let Some(value) = self.object.get(key) {
            self.out.message(field, encode(value));
        }
    }

    /// A repeated message, one per array element.
    fn messages(&mut self, key: &str, field: u32, encode: impl Fn(&Value) -> Writer) {
        if let Some(Value::Array(items)) = self.object.get(key) {
            for item in items {
                self.out.message(field, encode(item));
            }
        }
    }

    /// `repeated NamedAny vendor_extension`: every `x-` key of the object.
    fn extensions(&mut self, field: u32) {
        for (key, value) in self.object {
            if key.starts_with("x-") {
                self.out.message(field, named(key, any(value)));
            }
        }
    }
}

/// Encodes `value` as an object message with `write`; a non-object is an empty message.
fn object(value: &Value, write: impl FnOnce(&mut Fields)) -> Writer {
    match value {
        Value::Object(object) => {
            let mut fields = Fields::new(object);
            write(&mut fields);
            fields.into_writer()
        }
        _ => Writer::default(),
    }
}

/// The YAML text of a value, as gnostic stores it in `Any.yaml`: block style like
/// gnostic's, with every string that could read as anything else in YAML 1.1 (what
/// kube-openapi's `yaml.v2` speaks: `on`, `y`, `1.0`, `2001-12-14`, ...) or 1.2 quoted.
fn yaml_text(value: &Value) -> String {
    let mut out = String::new();
    yaml_block(value, 0, &mut out);
    out
}

/// Writes `value` as a block node whose lines are indented by `indent` spaces.
fn yaml_block(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(entries) if !entries.is_empty() => {
            for (key, entry) in entries {
                push_indent(indent, out);
                yaml_scalar_string(key, out);
                out.push(':');
                yaml_nested(entry, indent + 2, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                push_indent(indent, out);
                out.push('-');
                yaml_nested(item, indent + 2, out);
            }
        }
        _ => {
            push_indent(indent, out);
            yaml_flow_scalar(value, out);
            out.push('\n');
        }
    }
}

/// Writes the value after `key:` or `-`: a scalar on the same line, a mapping on the next
/// lines, a sequence item's mapping starting on the same line.
fn yaml_nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(entries) if !entries.is_empty() => {
            if out.ends_with('-') {
                // `- key: value` with the following keys aligned under the first.
                let mut block = String::new();
                yaml_block(value, indent, &mut block);
                out.push(' ');
                out.push_str(&block[indent..]);
            } else {
                out.push('\n');
                yaml_block(value, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            yaml_block(value, indent, out);
        }
        _ => {
            out.push(' ');
            yaml_flow_scalar(value, out);
            out.push('\n');
        }
    }
}

fn push_indent(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar, or an empty mapping or sequence, in flow form.
fn yaml_flow_scalar(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => yaml_scalar_string(text, out),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A string: plain when it is a word that no YAML version reads as another type, else
/// double-quoted with JSON-style escapes (which YAML's double-quoted style shares).
fn yaml_scalar_string(text: &str, out: &mut String) {
    const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let mut chars = text.chars();
    let plain = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !RESERVED.iter().any(|word| word.eq_ignore_ascii_case(text));
    if plain {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Control characters and the characters YAML treats as line breaks or BOM.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `Any { yaml = 2 }`.
fn any(value: &Value) -> Writer {
    let mut out = Writer::default();
    out.string(2, &yaml_text(value));
    out
}

/// A `Named*` message: `name = 1`, `value = 2`.
fn named(name: &str, value: Writer) -> Writer {
    let mut out = Writer::default();
    out.string(1, name);
    out.message(2, value);
    out
}

/// A message with `repeated Named* additional_properties = 1`, one entry per key.
fn named_map(value: &Value, encode: impl Fn(&Value) -> Writer) -> Writer {
    let mut out = Writer::default();
    if let Value::Object(entries) = value {
        for (name, entry) in entries {
            out.message(1, named(name, encode(entry)));
        }
    }
    out
}

fn info(value: &Value) -> Writer {
    object(value, |f| {
        f.string("title", 1);
        f.string("version", 2);
        f.string("description", 3);
        f.string("termsOfService", 4);
        f.message("contact", 5, |v| {
            object(v, |f| {
                f.string("name", 1);
                f.string("url", 2);
                f.string("email", 3);
                f.extensions(4);
            })
        });
        f.message("license", 6, |v| {
            object(v, |f| {
                f.string("name", 1);
                f.string("url", 2);
                f.extensions(3);
            })
        });
        f.extensions(7);
    })
}

fn external_docs(value: &Value) -> Writer {
    object(value, |f| {
        f.string("description", 1);
        f.string("url", 2);
        f.extensions(3);
    })
}

fn tag(value: &Value) -> Writer {
    object(value, |f| {
        f.string("name", 1);
        f.string("description", 2);
        f.message("externalDocs", 3, external_docs);
        f.extensions(4);
    })
}

/// `Paths`: vendor extensions = 1, `NamedPathItem path` = 2 for keys starting with `/`.
fn paths(value: &Value) -> Writer {
    let mut out = Writer::default();
    if let Value::Object(entries) = value {
        for (name, entry) in entries {
            if name.starts_with("x-") {
                out.message(1, named(name, any(entry)));
            } else if name.starts_with('/') {
                out.message(2, named(name, path_item(entry)));
            }
        }
    }
    out
}

fn path_item(value: &Value) -> Writer {
    object(value, |f| {
        f.string("$ref", 1);
        for (method, field) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("options", 6),
            ("head", 7),
            ("patch", 8),
        ] {
            f.message(method, field, operation);
        }
        f.messages("parameters", 9, parameters_item);
        f.extensions(10);
    })
}

fn operation(value: &Value) -> Writer {
    object(value, |f| {
        f.strings("tags", 1);
        f.string("summary", 2);
        f.string("description", 3);
        f.message("externalDocs", 4, external_docs);
        f.string("operationId", 5);
        f.strings("produces", 6);
        f.strings("consumes", 7);
        f.messages("parameters", 8, parameters_item);
        f.message("responses", 9, responses);
        f.strings("schemes", 10);
        f.bool("deprecated", 11);
        f.messages("security", 12, security_requirement);
        f.extensions(13);
    })
}

/// `JsonReference { _ref = 1, description = 2 }`.
fn json_reference(value: &Value) -> Writer {
    object(value, |f| {
        f.string("$ref", 1);
        f.string("description", 2);
    })
}

fn has_ref(value: &Value) -> bool {
    value.get("$ref").is_some()
}

/// `ParametersItem`: oneof `parameter = 1`, `json_reference = 2`.
fn parameters_item(value: &Value) -> Writer {
    let mut out = Writer::default();
    if has_ref(value) {
        out.message(2, json_reference(value));
    } else {
        out.message(1, parameter(value));
    }
    out
}

/// `Parameter`: oneof `body_parameter = 1`, `non_body_parameter = 2`; the latter a oneof of
/// header = 1, formData = 2, query = 3, path = 4 by the parameter's `in`.
fn parameter(value: &Value) -> Writer {
    let mut out = Writer::default();
    let location = value.get("in").and_then(Value::as_str).unwrap_or_default();
    if location == "body" {
        out.message(1, body_parameter(value));
        return out;
    }
    let (variant, with_allow_empty_value) = match location {
        "header" => (1, false),
        "formData" => (2, true),
        "query" => (3, true),
        "path" => (4, false),
        _ => return out,
    };
    let sub_schema = object(value, |f| {
        f.bool("required", 1);
        f.string("in", 2);
        f.string("description", 3);
        f.string("name", 4);
        // Query and formData parameters have `allow_empty_value = 5`, which shifts the
        // remaining fields by one.
        let base = if with_allow_empty_value {
            f.bool("allowEmptyValue", 5);
            6
        } else {
            5
        };
        primitive_fields(f, base);
        f.extensions(base + 17);
    });
    let mut non_body = Writer::default();
    non_body.message(variant, sub_schema);
    out.message(2, non_body);
    out
}

fn body_parameter(value: &Value) -> Writer {
    object(value, |f| {
        f.string("description", 1);
        f.string("name", 2);
        f.string("in", 3);
        f.bool("required", 4);
        f.message("schema", 5, schema);
        f.extensions(6);
    })
}

/// The seventeen validation fields that non-body parameters, `PrimitivesItems` and
/// `Header` share, in their common order, numbered from `base`.
fn primitive_fields(f: &mut Fields, base: u32) {
    f.string("type", base);
    f.string("format", base + 1);
    f.message("items", base + 2, primitives_items);
    f.string("collectionFormat", base + 3);
    f.any("default", base + 4);
    f.double("maximum", base + 5);
    f.bool("exclusiveMaximum", base + 6);
    f.double("minimum", base + 7);
    f.bool("exclusiveMinimum", base + 8);
    f.int64("maxLength", base + 9);
    f.int64("minLength", base + 10);
    f.string("pattern", base + 11);
    f.int64("maxItems", base + 12);
    f.int64("minItems", base + 13);
    f.bool("uniqueItems", base + 14);
    f.anys("enum", base + 15);
    f.double("multipleOf", base + 16);
}

fn primitives_items(value: &Value) -> Writer {
    object(value, |f| {
        primitive_fields(f, 1);
        f.extensions(18);
    })
}

fn header(value: &Value) -> Writer {
    object(value, |f| {
        primitive_fields(f, 1);
        f.string("description", 18);
        f.extensions(19);
    })
}

/// `Responses`: `NamedResponseValue response_code = 1` per status code, extensions = 2.
fn responses(value: &Value) -> Writer {
    let mut out = Writer::default();
    if let Value::Object(entries) = value {
        for (code, entry) in entries {
            if code.starts_with("x-") {
                out.message(2, named(code, any(entry)));
            } else {
                let mut response_value = Writer::default();
                if has_ref(entry) {
                    response_value.message(2, json_reference(entry));
                } else {
                    response_value.message(1, response(entry));
                }
                out.message(1, named(code, response_value));
            }
        }
    }
    out
}

fn response(value: &Value) -> Writer {
    object(value, |f| {
        f.string("description", 1);
        f.message("schema", 2, schema_item);
        f.message("headers", 3, |v| named_map(v, header));
        f.message("examples", 4, |v| named_map(v, any));
        f.extensions(5);
    })
}

/// `SchemaItem`: oneof `schema = 1`, `file_schema = 2` (a schema of type `file`).
fn schema_item(value: &Value) -> Writer {
    let mut out = Writer::default();
    if value.get("type").and_then(Value::as_str) == Some("file") {
        out.message(2, file_schema(value));
    } else {
        out.message(1, schema(value));
    }
    out
}

fn file_schema(value: &Value) -> Writer {
    object(value, |f| {
        f.string("format", 1);
        f.string("title", 2);
        f.string("description", 3);
        f.any("default", 4);
        f.strings("required", 5);
        f.string("type", 6);
        f.bool("readOnly", 7);
        f.message("externalDocs", 8, external_docs);
        f.any("example", 9);
        f.extensions(10);
    })
}

/// `Schema`, with its nested `TypeItem`, `ItemsItem`, `Properties` and
/// `AdditionalPropertiesItem`.
fn schema(value: &Value) -> Writer {
    object(value, |f| {
        f.string("$ref", 1);
        f.string("format", 2);
        f.string("title", 3);
        f.string("description", 4);
        f.any("default", 5);
        f.double("multipleOf", 6);
        f.double("maximum", 7);
        f.bool("exclusiveMaximum", 8);
        f.double("minimum", 9);
        f.bool("exclusiveMinimum", 10);
        f.int64("maxLength", 11);
        f.int64("minLength", 12);
        f.string("pattern", 13);
        f.int64("maxItems", 14);
        f.int64("minItems", 15);
        f.bool("uniqueItems", 16);
        f.int64("maxProperties", 17);
        f.int64("minProperties", 18);
        f.strings("required", 19);
        f.anys("enum", 20);
        f.message("additionalProperties", 21, additional_properties_item);
        f.message("type", 22, string_list);
        f.message("items", 23, items_item);
        f.messages("allOf", 24, schema);
        f.message("properties", 25, |v| named_map(v, schema));
        f.string("discriminator", 26);
        f.bool("readOnly", 27);
        f.message("xml", 28, xml);
        f.message("externalDocs", 29, external_docs);
        f.any("example", 30);
        f.extensions(31);
    })
}

/// A message with just `repeated string value = 1` (`TypeItem`, `StringArray`), from a
/// list of strings or a single string.
fn string_list(value: &Value) -> Writer {
    let mut out = Writer::default();
    match value {
        Value::Array(items) => {
            for item in items.iter().filter_map(Value::as_str) {
                out.string(1, item);
            }
        }
        Value::String(item) => out.string(1, item),
        _ => {}
    }
    out
}

/// `AdditionalPropertiesItem`: oneof `schema = 1`, `boolean = 2`.
fn additional_properties_item(value: &Value) -> Writer {
    let mut out = Writer::default();
    match value {
        // A set oneof member is written even when it holds the default value.
        Value::Bool(allowed) => out.bool(2, *allowed),
        _ => out.message(1, schema(value)),
    }
    out
}

/// `ItemsItem { repeated Schema schema = 1 }`: one schema, or a list of them.
fn items_item(value: &Value) -> Writer {
    let mut out = Writer::default();
    match value {
        Value::Array(schemas) => {
            for item in schemas {
                out.message(1, schema(item));
            }
        }
        _ => out.message(1, schema(value)),
    }
    out
}

fn xml(value: &Value) -> Writer {
    object(value, |f| {
        f.string("name", 1);
        f.string("namespace", 2);
        f.string("prefix", 3);
        f.bool("attribute", 4);
        f.bool("wrapped", 5);
        f.extensions(6);
    })
}

/// `SecurityRequirement`: `NamedStringArray` per scheme name, the array as
/// `StringArray { repeated string value = 1 }`.
fn security_requirement(value: &Value) -> Writer {
    named_map(value, string_list)
}

/// `SecurityDefinitionsItem`: a oneof chosen by the scheme's `type` (and an oauth2
/// scheme's `flow`).
fn security_definitions_item(value: &Value) -> Writer {
    let mut out = Writer::default();
    let kind = value.get("type").and_then(Value::as_str);
    let flow = value.get("flow").and_then(Value::as_str);
    let (variant, message) = match (kind, flow) {
        (Some("basic"), _) => (
            1,
            object(value, |f| {
                f.string("type", 1);
                f.string("description", 2);
                f.extensions(3);
            }),
        ),
        (Some("apiKey"), _) => (
            2,
            object(value, |f| {
                f.string("type", 1);
                f.string("name", 2);
                f.string("in", 3);
                f.string("description", 4);
                f.extensions(5);
            }),
        ),
        (Some("oauth2"), Some("implicit")) => (
            3,
            object(value, |f| {
                oauth2_head(f);
                f.string("authorizationUrl", 4);
                f.string("description", 5);
                f.extensions(6);
            }),
        ),
        (Some("oauth2"), Some(flow @ ("password" | "application"))) => (
            if flow == "password" { 4 } else { 5 },
            object(value, |f| {
                oauth2_head(f);
                f.string("tokenUrl", 4);
                f.string("description", 5);
                f.extensions(6);
            }),
        ),
        (Some("oauth2"), Some("accessCode")) => (
            6,
            object(value, |f| {
                oauth2_head(f);
                f.string("authorizationUrl", 4);
                f.string("tokenUrl", 5);
                f.string("description", 6);
                f.extensions(7);
            }),
        ),
        _ => return out,
    };
    out.message(variant, message);
    out
}

/// The fields every oauth2 scheme starts with: type = 1, flow = 2, scopes = 3
/// (`Oauth2Scopes` of `NamedString`s).
fn oauth2_head(f: &mut Fields) {
    f.string("type", 1);
    f.string("flow", 2);
    f.message("scopes", 3, |v| {
        let mut out = Writer::default();
        if let Value::Object(scopes) = v {
            for (name, description) in scopes {
                let mut entry = Writer::default();
                entry.string(1, name);
                entry.string(2, description.as_str().unwrap_or_default());
                out.message(1, entry);
            }
        }
        out
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{openapi_v2, ResourceInfo};
    use super::*;

    /// One decoded field: its number and its payload.
    #[derive(Debug, Clone, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64(u64),
        Bytes(Vec<u8>),
    }

    fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// Decodes one message level into its fields, in wire order.
    fn decode(bytes: &[u8]) -> Vec<(u32, Field)> {
        let mut at = 0;
        let mut fields = Vec::new();
        while at < bytes.len() {
            let key = read_varint(bytes, &mut at);
            let number = u32::try_from(key >> 3).unwrap();
            let field = match key & 7 {
                0 => Field::Varint(read_varint(bytes, &mut at)),
                1 => {
                    let raw = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                    at += 8;
                    Field::Fixed64(raw)
                }
                2 => {
                    let len = usize::try_from(read_varint(bytes, &mut at)).unwrap();
                    at += len;
                    Field::Bytes(bytes[at - len..at].to_vec())
                }
                other => panic!("unexpected wire type {other}"),
            };
            fields.push((number, field));
        }
        fields
    }

    /// The payloads of every occurrence of `number`, as bytes.
    fn all(bytes: &[u8], number: u32) -> Vec<Vec<u8>> {
        decode(bytes)
            .into_iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, f)| match f {
                Field::Bytes(b) => b,
                other => panic!("field {number} is not length-delimited: {other:?}"),
            })
            .collect()
    }

    fn one(bytes: &[u8], number: u32) -> Vec<u8> {
        let mut found = all(bytes, number);
        assert_eq!(found.len(), 1, "field {number} once in {:?}", decode(bytes));
        found.remove(0)
    }

    fn text(bytes: &[u8], number: u32) -> String {
        String::from_utf8(one(bytes, number)).unwrap()
    }

    /// The value of the `Named*` entry called `name` among the `number` fields.
    fn entry(bytes: &[u8], number: u32, name: &str) -> Vec<u8> {
        all(bytes, number)
            .into_iter()
            .find(|named| text(named, 1) == name)
            .map(|named| one(&named, 2))
            .unwrap_or_else(|| panic!("no entry {name}"))
    }

    fn numbers(bytes: &[u8]) -> Vec<u32> {
        decode(bytes).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn writer_encodes_varints_and_scalars_per_the_wire_format() {
        let mut w = Writer::default();
        w.int64(1, 300);
        assert_eq!(w.buf, [0x08, 0xac, 0x02]);
        let mut w = Writer::default();
        w.int64(2, -1);
        assert_eq!(w.buf.len(), 1 + 10, "negative int64 takes ten bytes");
        assert_eq!(w.buf[10], 0x01);
        let mut w = Writer::default();
        w.double(7, 1.5);
        assert_eq!(w.buf[0], (7 << 3) | 1);
        assert_eq!(w.buf[1..], 1.5f64.to_le_bytes());
        let mut w = Writer::default();
        w.string(31, "ab");
        assert_eq!(w.buf, [0xfa, 0x01, 0x02, b'a', b'b']);
    }

    #[test]
    fn document_header_fields_have_gnostic_numbers() {
        let doc = json!({
            "swagger": "2.0",
            "info": { "title": "Kubernetes", "version": "v1.33.0" },
            "basePath": "/",
            "consumes": ["application/json", "application/yaml"],
        });
        let bytes = openapi_v2_protobuf(&doc);
        assert_eq!(text(&bytes, 1), "2.0");
        let info = one(&bytes, 2);
        assert_eq!(text(&info, 1), "Kubernetes");
        assert_eq!(text(&info, 2), "v1.33.0");
        assert_eq!(text(&bytes, 4), "/");
        assert_eq!(
            all(&bytes, 6),
            [b"application/json".to_vec(), b"application/yaml".to_vec()]
        );
        assert!(openapi_v2_protobuf(&json!("not a document")).is_empty());
    }

    #[test]
    fn schema_keeps_empty_properties_refs_types_and_additional_properties() {
        let doc = json!({ "definitions": {
            "Empty": { "type": "object", "properties": {} },
            "Labels": { "type": "object", "additionalProperties": { "type": "string" } },
            "Closed": { "type": "object", "additionalProperties": false },
            "Holder": {
                "required": ["spec"],
                "properties": {
                    "spec": { "$ref": "#/definitions/Labels", "description": "d" },
                    "list": { "type": "array", "items": { "type": "integer", "format": "int32" } },
                },
            },
        }});
        let definitions = one(&openapi_v2_protobuf(&doc), 9);
        assert_eq!(all(&definitions, 1).len(), 4);

        let empty = entry(&definitions, 1, "Empty");
        assert_eq!(all(&one(&empty, 22), 1), [b"object".to_vec()]);
        assert!(one(&empty, 25).is_empty(), "empty properties still present");

        let labels = entry(&definitions, 1, "Labels");
        let additional = one(&labels, 21);
        assert_eq!(text(&one(&one(&additional, 1), 22), 1), "string");

        let closed = entry(&definitions, 1, "Closed");
        assert_eq!(
            decode(&one(&closed, 21)),
            [(2, Field::Varint(0))],
            "additionalProperties: false is the boolean oneof member"
        );

        let holder = entry(&definitions, 1, "Holder");
        assert_eq!(text(&holder, 19), "spec");
        let properties = one(&holder, 25);
        let spec = entry(&properties, 1, "spec");
        assert_eq!(text(&spec, 1), "#/definitions/Labels");
        assert_eq!(text(&spec, 4), "d");
        assert!(all(&spec, 22).is_empty(), "a $ref has no type");
        let items = one(&entry(&properties, 1, "list"), 23);
        let item = one(&items, 1);
        assert_eq!(text(&item, 2), "int32");
        assert_eq!(text(&one(&item, 22), 1), "integer");
    }

    #[test]
    fn extensions_defaults_and_enums_are_any_with_yaml_text() {
        let gvk = json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }]);
        let doc = json!({ "definitions": { "D": {
            "type": "string",
            "default": "Always",
            "enum": ["Always", "Never"],
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-patch-strategy": "merge",
            "description": "not an extension",
        }}});
        let definitions = one(&openapi_v2_protobuf(&doc), 9);
        let schema = entry(&definitions, 1, "D");
        let yaml_of = |any: &[u8]| -> serde_json::Value {
            assert!(all(any, 1).is_empty(), "Any.value stays unset");
            serde_yaml::from_str(&text(any, 2)).unwrap()
        };
        assert_eq!(yaml_of(&one(&schema, 5)), json!("Always"));
        let enums: Vec<_> = all(&schema, 20).iter().map(|a| yaml_of(a)).collect();
        assert_eq!(enums, [json!("Always"), json!("Never")]);
        let extensions = all(&schema, 31);
        assert_eq!(extensions.len(), 2);
        assert_eq!(
            yaml_of(&entry(&schema, 31, "x-kubernetes-group-version-kind")),
            gvk
        );
        let strategy = entry(&schema, 31, "x-kubernetes-patch-strategy");
        assert_eq!(text(&strategy, 2), "merge\n");
    }

    #[test]
    fn yaml_text_is_block_style_with_ambiguous_strings_quoted() {
        let gvk = json!([{ "group": "", "kind": "Pod", "version": "v1" }]);
        assert_eq!(
            yaml_text(&gvk),
            "- group: \"\"\n  kind: Pod\n  version: v1\n"
        );
        assert_eq!(yaml_text(&json!("merge")), "merge\n");
        assert_eq!(yaml_text(&json!(["name"])), "- name\n");
        assert_eq!(
            yaml_text(&json!({ "a": { "b": [1, 2.5, null] }, "c": [], "d": {} })),
            "a:\n  b:\n    - 1\n    - 2.5\n    - null\nc: []\nd: {}\n"
        );
        // Words YAML 1.1 (kube-openapi's yaml.v2) reads as booleans, numbers, dates or
        // merge keys stay strings; so do multi-line and control-character strings.
        let tricky = [
            "on",
            "Yes",
            "y",
            "N",
            "off",
            "true",
            "null",
            "~",
            "1.0",
            "0x1",
            "012",
            "1e3",
            "1_000",
            "2001-12-14",
            "<<",
            "=",
            ".inf",
            "a: b",
            "- x",
            "",
            " lead",
            "#c",
            "multi\nline",
            "tab\there",
            "quote\"back\\slash",
            "\u{1}\u{2028}",
            "ünï",
        ];
        for text in tricky {
            let yaml = yaml_text(&json!(text));
            let back: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
            assert_eq!(back, json!(text), "{text:?} as {yaml:?}");
            assert!(yaml.starts_with('"'), "{text:?} is quoted: {yaml:?}");
        }
        let nested = json!([[1, [2]], [{ "k": "v", "l": ["m"] }]]);
        let back: serde_json::Value = serde_yaml::from_str(&yaml_text(&nested)).unwrap();
        assert_eq!(back, nested);
    }

    #[test]
    fn parameters_pick_their_oneof_variant_and_field_layout() {
        let doc = json!({ "paths": { "/api/v1/pods/{name}": {
            "get": {
                "operationId": "readPod",
                "parameters": [
                    { "in": "body", "name": "body", "required": true, "schema": { "$ref": "#/definitions/P" } },
                    { "in": "query", "name": "pretty", "type": "string", "uniqueItems": true },
                    { "$ref": "#/parameters/shared" },
                ],
                "responses": {
                    "200": { "description": "OK", "schema": { "$ref": "#/definitions/P" } },
                    "401": { "description": "Unauthorized" },
                },
                "x-kubernetes-action": "get",
            },
            "parameters": [{ "in": "path", "name": "name", "required": true, "type": "string" }],
        }}});
        let paths = one(&openapi_v2_protobuf(&doc), 8);
        let item = entry(&paths, 2, "/api/v1/pods/{name}");
        let get = one(&item, 2);
        assert_eq!(text(&get, 5), "readPod");
        let parameters = all(&get, 8);
        assert_eq!(parameters.len(), 3);

        let body = one(&one(&parameters[0], 1), 1);
        assert_eq!(text(&body, 2), "body");
        assert!(decode(&body).contains(&(4, Field::Varint(1))), "required");
        assert_eq!(text(&one(&body, 5), 1), "#/definitions/P");

        let query = one(&one(&one(&parameters[1], 1), 2), 3);
        assert_eq!(text(&query, 4), "pretty");
        assert_eq!(text(&query, 6), "string", "query type is field 6");
        assert_eq!(numbers(&query), [2, 4, 6, 20]);

        assert_eq!(text(&one(&parameters[2], 2), 1), "#/parameters/shared");

        let path = one(&one(&one(&all(&item, 9)[0], 1), 2), 4);
        assert_eq!(text(&path, 5), "string", "path type is field 5");
        assert_eq!(numbers(&path), [1, 2, 4, 5]);

        let responses = one(&get, 9);
        let ok = one(&entry(&responses, 1, "200"), 1);
        assert_eq!(text(&ok, 1), "OK");
        assert_eq!(text(&one(&one(&ok, 2), 1), 1), "#/definitions/P");
        assert_eq!(text(&entry(&get, 13, "x-kubernetes-action"), 2), "get\n");
    }

    #[test]
    fn security_definitions_and_requirements() {
        let doc = json!({
            "securityDefinitions": {
                "BearerToken": { "description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey" },
            },
            "security": [{ "BearerToken": [] }],
            "tags": [{ "name": "core_v1" }],
        });
        let bytes = openapi_v2_protobuf(&doc);
        let api_key = one(&entry(&one(&bytes, 13), 1, "BearerToken"), 2);
        assert_eq!(text(&api_key, 1), "apiKey");
        assert_eq!(text(&api_key, 2), "authorization");
        assert_eq!(text(&api_key, 3), "header");
        let requirement = one(&bytes, 12);
        assert!(entry(&requirement, 1, "BearerToken").is_empty());
        assert_eq!(text(&one(&bytes, 14), 1), "core_v1");
    }

    #[test]
    fn served_document_round_trips_definitions_and_deployment_metadata() {
        let deployments = ResourceInfo {
            group: "apps",
            version: "v1",
            kind: "Deployment",
            plural: "deployments",
            namespaced: true,
            subresources: &["status", "scale"],
            verbs: &["get", "list", "create", "update", "patch", "delete"],
        };
        let doc = openapi_v2(&[deployments]);
        let bytes = openapi_v2_protobuf(&doc);
        let definitions = one(&bytes, 9);
        let expected = doc["definitions"].as_object().unwrap();
        assert_eq!(all(&definitions, 1).len(), expected.len());

        let deployment = entry(&definitions, 1, "io.k8s.api.apps.v1.Deployment");
        let gvk = entry(&deployment, 31, "x-kubernetes-group-version-kind");
        let gvk: serde_json::Value = serde_yaml::from_str(&text(&gvk, 2)).unwrap();
        assert_eq!(
            gvk,
            json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
        );
        let properties = one(&deployment, 25);
        let names: Vec<_> = all(&properties, 1).iter().map(|p| text(p, 1)).collect();
        let expected_names: Vec<_> = expected["io.k8s.api.apps.v1.Deployment"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, expected_names);

        let paths = one(&bytes, 8);
        assert_eq!(
            all(&paths, 2).len(),
            doc["paths"].as_object().unwrap().len()
        );
    }
}
