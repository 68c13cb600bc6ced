//! Cron schedules as upstream's CronJob controller reads them (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week), `*` and `?`, ranges `a-b`,
//! steps `*/n`, `a/n` and `a-b/n`, lists `a,b`, month and day names (`JAN`, `mon`), the
//! macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`, and a leading
//! `CRON_TZ=<zone>` or `TZ=<zone>`.
//!
//! As in robfig/cron, when both day fields are restricted a day matches if either does; when
//! one of them starts with `*` or `?` (and has no step above 1) both must match.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why a schedule or time zone does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected exactly 5 fields, found {0}: {1}")]
    FieldCount(usize, String),
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
    #[error("failed to parse int from {0}")]
    NotANumber(String),
    #[error("beginning of range ({0}) below minimum ({1}): {2}")]
    BelowMinimum(u32, u32, String),
    #[error("end of range ({0}) above maximum ({1}): {2}")]
    AboveMaximum(u32, u32, String),
    #[error("beginning of range ({0}) beyond end of range ({1}): {2}")]
    InvertedRange(u32, u32, String),
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    #[error("too many slashes: {0}")]
    TooManySlashes(String),
    #[error("too many hyphens: {0}")]
    TooManyHyphens(String),
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
}

/// The set bit that marks a field written as `*` or `?` (robfig's `starBit`).
const STAR: u64 = 1 << 63;

/// A parsed schedule: one bit set per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// The zone named by a `CRON_TZ=`/`TZ=` prefix, if any.
    zone: Option<String>,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
/// Month names, index + 1 is the month.
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// Day names, index is the day (Sunday = 0).
const DAYS_OF_WEEK: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses a schedule as upstream's `cron.ParseStandard` does.
    pub fn parse(spec: &str) -> Result<Self, ScheduleError> {
        let mut spec = spec.trim();
        let mut zone = None;
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone = Some(name.to_string());
                spec = rest.trim();
                break;
            }
        }
        let expanded = if spec.starts_with('@') {
            match spec.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(ScheduleError::UnknownDescriptor(spec.to_string())),
            }
        } else {
            spec
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount(fields.len(), spec.to_string()));
        }
        Ok(Self {
            minutes: parse_field(fields[0], &MINUTES)?,
            hours: parse_field(fields[1], &HOURS)?,
            days_of_month: parse_field(fields[2], &DAYS_OF_MONTH)?,
            months: parse_field(fields[3], &MONTHS)?,
            days_of_week: parse_field(fields[4], &DAYS_OF_WEEK)?,
            zone,
        })
    }

    /// The zone named inside the schedule (`CRON_TZ=...`), if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Whether the schedule's fields allow this civil date and time (seconds ignored).
    pub fn matches(&self, at: DateTime) -> bool {
        has(self.months, at.month() as u32)
            && self.day_matches(at.date())
            && has(self.hours, at.hour() as u32)
            && has(self.minutes, at.minute() as u32)
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days_of_month, date.day() as u32);
        let dow = has(
            self.days_of_week,
            date.weekday().to_sunday_zero_offset() as u32,
        );
        if self.days_of_month & STAR != 0 || self.days_of_week & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, reading the fields in `zone`; `None`
    /// when none comes within five years (a schedule such as `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(zone.clone()).datetime();
        let mut at = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let give_up = local.year().saturating_add(5);
        while at.year() <= give_up {
            if !has(self.months, at.month() as u32) {
                at = at
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(at.date()) {
                at = at.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !has(self.hours, at.hour() as u32) {
                at = at
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minutes, at.minute() as u32) {
                at = at.checked_add(1.minute()).ok()?;
                continue;
            }
            // A civil time in a gap (spring forward) maps to the later instant, one in a fold
            // (fall back) to the earlier; either way the result must move forward.
            match at.to_zoned(zone.clone()) {
                Ok(zoned) if zoned.timestamp() > after => return Some(zoned.timestamp()),
                _ => at = at.checked_add(1.minute()).ok()?,
            }
        }
        None
    }
}

/// Resolves a CronJob's `spec.timeZone` (an IANA name) or, when absent, the zone a
/// `CRON_TZ=` prefix names, or else the local zone of this process (as upstream uses the
/// controller manager's local time).
pub fn resolve_zone(
    time_zone: Option<&str>,
    schedule: &Schedule,
) -> Result<TimeZone, ScheduleError> {
    match time_zone.or(schedule.zone()) {
        Some(name) => {
            TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
        }
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

fn has(bits: u64, value: u32) -> bool {
    value < 63 && bits & (1 << value) != 0
}

fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    let mut bits = 0;
    for part in field.split(',') {
        bits |= parse_range(part, bounds)?;
    }
    Ok(bits)
}

fn parse_range(expr: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    let (range, step) = match expr.split('/').collect::<Vec<_>>()[..] {
        [range] => (range, None),
        [range, step] => (range, Some(step)),
        _ => return Err(ScheduleError::TooManySlashes(expr.to_string())),
    };
    let mut extra = 0;
    let (start, mut end, single) = if range == "*" || range == "?" {
        extra = STAR;
        (bounds.min, bounds.max, false)
    } else {
        match range.split('-').collect::<Vec<_>>()[..] {
            [one] => {
                let v = parse_value(one, bounds)?;
                (v, v, true)
            }
            [low, high] => (parse_value(low, bounds)?, parse_value(high, bounds)?, false),
            _ => return Err(ScheduleError::TooManyHyphens(expr.to_string())),
        }
    };
    let step = match step {
        None => 1,
        Some(text) => {
            let step: u32 = text
                .parse()
                .map_err(|_| ScheduleError::NotANumber(text.to_string()))?;
            if single {
                // "N/step" means "N-max/step".
                end = bounds.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < bounds.min {
        return Err(ScheduleError::BelowMinimum(
            start,
            bounds.min,
            expr.to_string(),
        ));
    }
    if end > bounds.max {
        return Err(ScheduleError::AboveMaximum(
            end,
            bounds.max,
            expr.to_string(),
        ));
    }
    if start > end {
        return Err(ScheduleError::InvertedRange(start, end, expr.to_string()));
    }
    if step == 0 {
        return Err(ScheduleError::ZeroStep(expr.to_string()));
    }
    let mut bits = extra;
    let mut value = start;
    while value <= end {
        bits |= 1 << value;
        value += step;
    }
    Ok(bits)
}

fn parse_value(text: &str, bounds: &Bounds) -> Result<u32, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = bounds.names.iter().position(|name| *name == lower) {
        // Months count from 1, days of the week from 0.
        return Ok(index as u32 + bounds.min);
    }
    text.parse()
        .map_err(|_| ScheduleError::NotANumber(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next_utc(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .unwrap()
            .next_after(ts(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn field_bits() {
        let s = Schedule::parse("*/15 1-3,5 1 jan-MAR/2 mon-fri").unwrap();
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 5);
        assert_eq!(s.days_of_month, 1 << 1);
        assert_eq!(s.months, 1 << 1 | 1 << 3);
        assert_eq!(s.days_of_week, 0b111110);
        // "N/step" runs to the maximum; a star keeps its marker, a stepped star does not.
        let s = Schedule::parse("5/20 * ? * *").unwrap();
        assert_eq!(s.minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_ne!(s.hours & STAR, 0);
        assert_ne!(s.days_of_month & STAR, 0);
        let s = Schedule::parse("*/2 * * * *").unwrap();
        assert_eq!(s.minutes & STAR, 0);
        assert_eq!(
            Schedule::parse("0 0 * * sun,SAT").unwrap().days_of_week,
            1 | 1 << 6
        );
    }

    #[test]
    fn macros_expand() {
        for (macro_, fields) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            assert_eq!(
                Schedule::parse(macro_).unwrap(),
                Schedule::parse(fields).unwrap(),
                "{macro_}"
            );
        }
    }

    #[test]
    fn invalid_schedules() {
        for (spec, expected) in [
            ("* * * *", ScheduleError::FieldCount(4, "* * * *".into())),
            (
                "@fortnightly",
                ScheduleError::UnknownDescriptor("@fortnightly".into()),
            ),
            (
                "60 * * * *",
                ScheduleError::AboveMaximum(60, 59, "60".into()),
            ),
            ("* * 0 * *", ScheduleError::BelowMinimum(0, 1, "0".into())),
            ("* * * * 7", ScheduleError::AboveMaximum(7, 6, "7".into())),
            (
                "5-1 * * * *",
                ScheduleError::InvertedRange(5, 1, "5-1".into()),
            ),
            ("*/0 * * * *", ScheduleError::ZeroStep("*/0".into())),
            (
                "1/2/3 * * * *",
                ScheduleError::TooManySlashes("1/2/3".into()),
            ),
            (
                "1-2-3 * * * *",
                ScheduleError::TooManyHyphens("1-2-3".into()),
            ),
            ("x * * * *", ScheduleError::NotANumber("x".into())),
            ("* * * foo *", ScheduleError::NotANumber("foo".into())),
        ] {
            assert_eq!(Schedule::parse(spec), Err(expected), "{spec}");
        }
    }

    #[test]
    fn next_times_in_utc() {
        assert_eq!(
            next_utc("* * * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next_utc("* * * * *", "2024-01-01T00:00:59Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next_utc("*/1 * * * *", "2024-01-01T00:00:30Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next_utc("*/15 * * * *", "2024-01-01T00:15:00Z"),
            "2024-01-01T00:30:00Z"
        );
        assert_eq!(
            next_utc("@hourly", "2024-01-01T23:30:00Z"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next_utc("@daily", "2024-12-31T12:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next_utc("@monthly", "2024-01-31T00:00:00Z"),
            "2024-02-01T00:00:00Z"
        );
        assert_eq!(
            next_utc("@yearly", "2024-06-01T00:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        // 2024-01-01 is a Monday; @weekly is Sunday midnight.
        assert_eq!(
            next_utc("@weekly", "2024-01-01T00:00:00Z"),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next_utc("30 9 * * mon-fri", "2024-01-05T10:00:00Z"),
            "2024-01-08T09:30:00Z"
        );
        // Leap day.
        assert_eq!(
            next_utc("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next_utc("0 12 31 * *", "2024-04-01T00:00:00Z"),
            "2024-05-31T12:00:00Z"
        );
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 13th, or any Friday: 2024-09-06 is a Friday before the 13th.
        assert_eq!(
            next_utc("0 0 13 * 5", "2024-09-01T00:00:00Z"),
            "2024-09-06T00:00:00Z"
        );
        // A star in the day of week makes the day of month decide alone.
        assert_eq!(
            next_utc("0 0 13 * *", "2024-09-01T00:00:00Z"),
            "2024-09-13T00:00:00Z"
        );
        // ... and a star in the day of month the day of week.
        assert_eq!(
            next_utc("0 0 * * 5", "2024-09-07T00:00:00Z"),
            "2024-09-13T00:00:00Z"
        );
        // A stepped star is a restriction: every other day of month, or Sundays.
        assert_eq!(
            next_utc("0 0 */2 * 0", "2024-09-01T01:00:00Z"),
            "2024-09-03T00:00:00Z"
        );
    }

    #[test]
    fn impossible_schedule_has_no_next_time() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let zone = TimeZone::get("America/New_York").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 EST is 14:00 UTC in winter, 13:00 UTC in summer.
        let next = s.next_after(ts("2024-01-10T15:00:00Z"), &zone).unwrap();
        assert_eq!(next.to_string(), "2024-01-11T14:00:00Z");
        let next = s.next_after(ts("2024-07-10T15:00:00Z"), &zone).unwrap();
        assert_eq!(next.to_string(), "2024-07-11T13:00:00Z");
        // 02:30 does not exist on 2024-03-10 in New York: the later instant (03:30 EDT) runs.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let next = s.next_after(ts("2024-03-10T05:00:00Z"), &zone).unwrap();
        assert_eq!(next.to_string(), "2024-03-10T07:30:00Z");
        // 01:30 happens twice on 2024-11-03: it runs once, at the first.
        let s = Schedule::parse("30 1 * * *").unwrap();
        let first = s.next_after(ts("2024-11-03T04:00:00Z"), &zone).unwrap();
        assert_eq!(first.to_string(), "2024-11-03T05:30:00Z");
        let second = s.next_after(first, &zone).unwrap();
        assert_eq!(second.to_string(), "2024-11-04T06:30:00Z");
    }

    #[test]
    fn zones_resolve_from_field_or_prefix() {
        let s = Schedule::parse("CRON_TZ=Asia/Tokyo 0 0 * * *").unwrap();
        assert_eq!(s.zone(), Some("Asia/Tokyo"));
        let zone = resolve_zone(None, &s).unwrap();
        let next = s.next_after(ts("2024-01-01T00:00:00Z"), &zone).unwrap();
        assert_eq!(next.to_string(), "2024-01-01T15:00:00Z");
        let zone = resolve_zone(Some("Europe/Paris"), &s).unwrap();
        assert_eq!(zone.iana_name(), Some("Europe/Paris"));
        assert_eq!(
            resolve_zone(Some("Mars/Olympus"), &s).unwrap_err(),
            ScheduleError::UnknownTimeZone("Mars/Olympus".into())
        );
    }
}
