//! JSON renderings of the special apimachinery types: times, durations, bytes.

/// Seconds since the Unix epoch of Go's zero `time.Time` (0001-01-01T00:00:00Z).
pub(crate) const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Renders Unix `seconds` (and, with `micros`, a fraction of 6 digits) as RFC 3339 in UTC, as
/// `metav1.Time` (`2006-01-02T15:04:05Z`) and `metav1.MicroTime`
/// (`2006-01-02T15:04:05.000000Z`) do. `None` when the year is outside 0..=9999, which Go's
/// RFC 3339 formatting refuses too.
pub(crate) fn rfc3339(seconds: i64, micros: Option<u32>) -> Option<String> {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if let Some(micros) = micros {
        text.push_str(&format!(".{micros:06}"));
    }
    text.push('Z');
    Some(text)
}

/// The (year, month, day) of a day counted from 1970-01-01, in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // day is in 1..=31 and month in 1..=12 by construction.
    (year, month as u32, day as u32)
}

/// Renders nanoseconds as Go's `time.Duration.String()` does: "1h2m3s", "1.5s", "2ms", "0s".
pub(crate) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let magnitude = nanos.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    if magnitude < SECOND {
        let (unit, precision) = if magnitude < 1_000 {
            ("ns", 0)
        } else if magnitude < 1_000_000 {
            ("µs", 3)
        } else {
            ("ms", 6)
        };
        let scale = 10u64.pow(precision);
        let fraction = fraction(magnitude % scale, precision as usize);
        return format!("{sign}{}{fraction}{unit}", magnitude / scale);
    }
    let fraction = fraction(magnitude % SECOND, 9);
    let total_seconds = magnitude / SECOND;
    let (hours, minutes, seconds) = (
        total_seconds / 3600,
        total_seconds / 60 % 60,
        total_seconds % 60,
    );
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}{fraction}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}{fraction}s")
    } else {
        format!("{sign}{seconds}{fraction}s")
    }
}

/// ".5" for 5 of precision 1, "" for 0: the digits of `value` / 10^precision without trailing
/// zeros.
fn fraction(value: u64, precision: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let digits = format!("{value:0precision$}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// Standard base64 with padding, as Go's JSON encoding renders `[]byte`.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_rfc3339_utc() {
        assert_eq!(rfc3339(0, None).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_704_164_645, None).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(rfc3339(951_782_400, None).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1, None).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(1_704_164_645, Some(123_456)).unwrap(),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            rfc3339(1_704_164_645, Some(0)).unwrap(),
            "2024-01-02T03:04:05.000000Z"
        );
        assert_eq!(
            rfc3339(GO_ZERO_TIME_SECONDS, None).unwrap(),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339(i64::MAX / 2, None), None);
    }

    #[test]
    fn durations_render_as_go_does() {
        let second = 1_000_000_000;
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3723 * second), "1h2m3s");
        assert_eq!(go_duration(3600 * second), "1h0m0s");
        assert_eq!(go_duration(60 * second), "1m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000), "2µs");
        assert_eq!(go_duration(100), "100ns");
        assert_eq!(go_duration(-90 * second), "-1m30s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"secret\xff"), "c2VjcmV0/w==");
    }
}
