//! RFC 3339 timestamps (UTC) for records and reports, with serde helpers.

use serde::{Deserialize, Deserializer, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a timestamp as RFC 3339 in UTC (`2026-01-02T03:04:05Z`, fractions when present).
pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp. A space where the offset's `+` belongs (a query string's
/// `+` decoded as a space) is taken as `+`.
pub fn parse(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    let text = text.trim_start();
    let repaired;
    let text = if text.contains(' ') {
        repaired = text.replace(' ', "+");
        repaired.as_str()
    } else {
        text
    };
    OffsetDateTime::parse(text, &Rfc3339)
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
pub fn seconds_between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64()
}

/// Serde for `OffsetDateTime` as RFC 3339.
pub mod rfc3339 {
    use super::*;

    /// Serializes as RFC 3339.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*at))
    }

    /// Deserializes from RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for `Option<OffsetDateTime>` as RFC 3339 or `null`.
pub mod rfc3339_option {
    use super::*;

    /// Serializes as RFC 3339 or `null`.
    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&format(*at)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from RFC 3339 or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_repairs_plus() {
        let at = parse("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(format(at), "2026-01-02T03:04:05Z");
        let shifted = parse("2026-01-02T04:04:05 01:00").unwrap();
        assert_eq!(shifted, at);
        assert!(parse("yesterday").is_err());
        assert_eq!(
            seconds_between(at, parse("2026-01-02T03:05:05Z").unwrap()),
            60.0
        );
    }
}
