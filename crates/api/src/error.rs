//! Errors of the resource model, shaped after Kubernetes' `metav1.Status`.

use serde_json::{json, Value};

/// What is wrong with one field, as upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// A required field is missing (`FieldValueRequired`).
    Required,
    /// A value is malformed or out of range (`FieldValueInvalid`).
    Invalid,
    /// A value is not allowed (`FieldValueForbidden`).
    Forbidden,
    /// A value is repeated where it must be unique (`FieldValueDuplicate`).
    Duplicate,
    /// A value is not one of the supported values (`FieldValueNotSupported`).
    NotSupported,
    /// A value is too long (`FieldValueTooLong`).
    TooLong,
    /// A value has the wrong JSON type (`FieldValueTypeInvalid`).
    TypeInvalid,
    /// A field is not known to the schema (`FieldValueUnknown` in strict decoding).
    Unknown,
    /// A field appears twice in the request body (`FieldValueDuplicate` in strict decoding).
    DuplicateField,
}

impl FieldErrorType {
    /// The `reason` of a `StatusCause` for this error type.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate | Self::DuplicateField => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::Unknown => "FieldValueInvalid",
        }
    }

    /// The words upstream puts between the field path and the detail.
    fn phrase(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
            Self::NotSupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::TypeInvalid => "Invalid value",
            Self::Unknown => "unknown field",
            Self::DuplicateField => "duplicate field",
        }
    }
}

/// One invalid field: becomes a `StatusCause` and a line of the `Status` message.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorType,
    /// The field path in upstream notation: `spec.containers[0].image`, `metadata.labels[app]`.
    pub field: String,
    /// The offending value, shown after `Invalid value:` when present.
    pub value: Option<Value>,
    /// What is wrong, in words a user can act on. May be empty for `Required`.
    pub detail: String,
}

impl FieldError {
    fn new(
        kind: FieldErrorType,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, None, detail)
    }
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Invalid, field, Some(value), detail)
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, None, detail)
    }
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(FieldErrorType::Duplicate, field, Some(value), "")
    }
    /// `supported` lists the accepted values, as upstream's `field.NotSupported`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            FieldErrorType::NotSupported,
            field,
            Some(value),
            format!("supported values: {list}"),
        )
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooLong,
            field,
            None,
            format!("must have at most {max} bytes"),
        )
    }
    pub fn type_invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::TypeInvalid, field, Some(value), detail)
    }
    pub fn unknown(field: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Unknown, field, None, "")
    }
    pub fn duplicate_field(field: impl Into<String>) -> Self {
        Self::new(FieldErrorType::DuplicateField, field, None, "")
    }

    /// The message as upstream formats it, e.g.
    /// `metadata.name: Invalid value: "Foo": a lowercase RFC 1123 subdomain must ...`.
    pub fn message(&self) -> String {
        match self.kind {
            FieldErrorType::Unknown => format!("unknown field \"{}\"", self.field),
            FieldErrorType::DuplicateField => format!("duplicate field \"{}\"", self.field),
            _ => {
                let mut s = format!("{}: {}", self.field, self.kind.phrase());
                if let Some(v) = &self.value {
                    s.push_str(": ");
                    s.push_str(&v.to_string());
                }
                if !self.detail.is_empty() {
                    s.push_str(": ");
                    s.push_str(&self.detail);
                }
                s
            }
        }
    }

    /// This error as a `StatusCause` object.
    pub fn cause(&self) -> Value {
        let message = match self.kind {
            FieldErrorType::Unknown | FieldErrorType::DuplicateField => self.message(),
            _ => self
                .message()
                .split_once(": ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default(),
        };
        json!({ "reason": self.kind.reason(), "message": message, "field": self.field })
    }
}

/// Builds a field path the way upstream's `field.Path` does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root(name: &str) -> Self {
        Self(name.to_string())
    }
    /// `a.b`
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{}", self.0, name))
        }
    }
    /// `a[3]`
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{}]", self.0, i))
    }
    /// `a[key]`
    pub fn key(&self, k: &str) -> Self {
        Self(format!("{}[{}]", self.0, k))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}
impl From<&FieldPath> for String {
    fn from(p: &FieldPath) -> String {
        p.0.clone()
    }
}
