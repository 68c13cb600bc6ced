//! Kubernetes resource quantities (`resource.Quantity`): `100m`, `1.5`, `64Mi`, `2G`, `1e3`.
//!
//! A quantity is held exactly as a count of nano-units (10^-9), which covers every suffix from
//! `n` to `Ei` without rounding for realistic values; finer fractions are rounded up, as upstream
//! rounds up when it has to lose precision.

use std::cmp::Ordering;
use std::fmt;

/// The message upstream gives for a string that is not a quantity.
pub const QUANTITY_FORMAT_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the shape `<number><suffix>`.
    #[error("{}", QUANTITY_FORMAT_MESSAGE)]
    Format,
    /// The suffix is not one of the known binary, decimal or exponent suffixes.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit in the supported range.
    #[error("quantity is too large")]
    TooLarge,
}

/// How a quantity was written, which is how upstream chooses its canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// Powers of two: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySI,
    /// Powers of ten by letter: `n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSI,
    /// Powers of ten by exponent: `1e3`, `5E-2`.
    DecimalExponent,
}

/// A parsed quantity. Compares by value: `1Ki == 1024`, `500m < 1`.
#[derive(Debug, Clone)]
pub struct Quantity {
    /// The value in units of 10^-9, rounded up (towards positive infinity).
    nanos: i128,
    format: QuantityFormat,
    original: String,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity as upstream's `resource.ParseQuantity` does.
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        let number_start = pos;
        while pos < bytes.len() && (bytes[pos].is_ascii_digit() || bytes[pos] == b'.') {
            pos += 1;
        }
        let number = &s[number_start..pos];
        let suffix = &s[pos..];
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError::Format);
        }
        let (format, base, exponent) = parse_suffix(suffix)?;
        // value = 0.<digits> scaled: digits * 10^(exp10 - frac_len) * base^exponent
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mut mantissa: i128 = 0;
        let mut dropped_digits = 0i32;
        for d in digits.bytes() {
            if mantissa > i128::MAX / 100 {
                dropped_digits += 1;
                continue;
            }
            mantissa = mantissa * 10 + i128::from(d - b'0');
        }
        let mut pow10 = dropped_digits - frac_part.len() as i32 + 9;
        let mut value = mantissa;
        let mut multiplier: i128 = 1;
        match base {
            2 => multiplier = 1i128 << exponent,
            _ => pow10 += exponent,
        }
        value = value
            .checked_mul(multiplier)
            .ok_or(QuantityError::TooLarge)?;
        if pow10 >= 0 {
            for _ in 0..pow10 {
                value = value.checked_mul(10).ok_or(QuantityError::TooLarge)?;
            }
        } else {
            let mut inexact = false;
            for _ in 0..(-pow10) {
                if value == 0 {
                    break;
                }
                if value % 10 != 0 {
                    inexact = true;
                }
                value /= 10;
            }
            // Round away from zero in magnitude, then the sign makes it "up" for positives.
            if inexact && !negative {
                value += 1;
            }
        }
        let nanos = if negative { -value } else { value };
        Ok(Quantity {
            nanos,
            format,
            original: s.to_string(),
        })
    }

    /// The value in thousandths, rounded up (`100m` → 100, `1` → 1000, `1n` → 1).
    pub fn to_millis(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in whole units, rounded up (`1Ki` → 1024, `500m` → 1).
    pub fn to_bytes(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT)
    }

    /// The value in nano-units (10^-9).
    pub fn to_nanos(&self) -> i128 {
        self.nanos
    }

    /// The value as a floating point number of units.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The suffix family the quantity was written in.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The string the quantity was parsed from (trimmed).
    pub fn original(&self) -> &str {
        &self.original
    }
}

fn div_ceil(value: i128, divisor: i128) -> i128 {
    let q = value / divisor;
    if value % divisor > 0 {
        q + 1
    } else {
        q
    }
}

/// Returns (format, base, exponent): base 2 with exponent bits, or base 10 with an exponent.
fn parse_suffix(suffix: &str) -> Result<(QuantityFormat, u32, i32), QuantityError> {
    use QuantityFormat::*;
    let decimal = |e| Ok((DecimalSI, 10, e));
    let binary = |e| Ok((BinarySI, 2, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(|| suffix_error(suffix))?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(suffix_error(suffix));
            }
            let exponent: i32 = rest.parse().map_err(|_| QuantityError::TooLarge)?;
            if exponent.abs() > 100 {
                return Err(QuantityError::TooLarge);
            }
            Ok((DecimalExponent, 10, exponent))
        }
    }
}

fn suffix_error(suffix: &str) -> QuantityError {
    let shaped = suffix
        .bytes()
        .all(|b| b"eEinumkKMGTP+-0123456789".contains(&b));
    if shaped {
        QuantityError::Suffix
    } else {
        QuantityError::Format
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn decimal_and_milli_units() {
        assert_eq!(q("100m").to_millis(), 100);
        assert_eq!(q("1").to_millis(), 1000);
        assert_eq!(q("1.5").to_millis(), 1500);
        assert_eq!(q("0.1").to_millis(), 100);
        assert_eq!(q(".5").to_millis(), 500);
        assert_eq!(q("2.").to_millis(), 2000);
        assert_eq!(q("2k").to_bytes(), 2000);
        assert_eq!(q("1G").to_bytes(), 1_000_000_000);
        assert_eq!(q("3E").to_bytes(), 3_000_000_000_000_000_000);
        assert_eq!(q("250u").to_nanos(), 250_000);
        assert_eq!(q("7n").to_nanos(), 7);
    }

    #[test]
    fn binary_units() {
        assert_eq!(q("1Ki").to_bytes(), 1024);
        assert_eq!(q("64Mi").to_bytes(), 64 * 1024 * 1024);
        assert_eq!(q("1.5Gi").to_bytes(), 3 * 512 * 1024 * 1024);
        assert_eq!(q("1Ei").to_bytes(), 1i128 << 60);
        assert_eq!(q("1Gi").format(), QuantityFormat::BinarySI);
    }

    #[test]
    fn exponents_and_signs() {
        assert_eq!(q("1e3").to_bytes(), 1000);
        assert_eq!(q("1E3").to_bytes(), 1000);
        assert_eq!(q("5e-1").to_millis(), 500);
        assert_eq!(q("1e3").format(), QuantityFormat::DecimalExponent);
        assert!(q("-1").is_negative());
        assert_eq!(q("-100m").to_millis(), -100);
        assert_eq!(q("+2").to_bytes(), 2);
        assert!(q("0").is_zero());
        assert!((q("1.25").as_f64() - 1.25).abs() < 1e-12);
    }

    #[test]
    fn rounding_is_upwards() {
        assert_eq!(q("1n").to_millis(), 1);
        assert_eq!(q("500m").to_bytes(), 1);
        assert_eq!(q("0.0000000001").to_nanos(), 1);
    }

    #[test]
    fn comparison_is_by_value() {
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "abc", "1.2.3", "1Z", "Mi", ".", "1 Gi", "1e", "1ee3", "--1", "1KI",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            Quantity::parse("x").unwrap_err().to_string(),
            QUANTITY_FORMAT_MESSAGE
        );
    }
}
