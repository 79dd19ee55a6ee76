//! Byte sizes as the HAMi contract and Kubernetes write them.
//!
//! Accepted: plain bytes (`1048576`), HAMi's binary suffixes (`1024k`, `4096m`, `4g`, `1t`,
//! case-insensitive, also `kb`/`mb`/`gb`/`tb`), and Kubernetes' quantities (`512Mi`, `4Gi`,
//! `1Ti`). HAMi treats `m` as MiB, so a plain `4g` is
//! 4 GiB; Kubernetes' binary forms (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`) mean the same powers of 1024.
//! Kubernetes' decimal forms with an upper-case SI letter (`K` is not one; `M`, `G`, `T`) are
//! read HAMi's way, as powers of 1024, because the contract's users write `4G` meaning 4 GiB.
//! Anything else (empty, negative, fractional, unknown unit, overflow) is an error.
use core::fmt;

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// The string was empty or only whitespace.
    Empty,
    /// A leading minus sign.
    Negative,
    /// No digits before the unit, or characters that are not digits.
    NotANumber,
    /// A unit suffix we do not know.
    UnknownUnit(String),
    /// The value does not fit in 64 bits of bytes.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => write!(f, "empty size"),
            SizeError::Negative => write!(f, "negative size"),
            SizeError::NotANumber => write!(f, "not a whole number of bytes"),
            SizeError::UnknownUnit(u) => write!(f, "unknown unit {u:?}"),
            SizeError::Overflow => write!(f, "size does not fit in 64 bits"),
        }
    }
}

impl std::error::Error for SizeError {}

/// What a size string is expected to look like, for error messages.
pub const SIZE_SYNTAX: &str = "a byte count such as 1073741824, 1024k, 4096m, 4g, 512Mi or 4Gi";

/// Parses a size in HAMi's or Kubernetes' syntax into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotANumber);
    }
    let value: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    let shift = match unit.trim_start() {
        "" | "b" | "B" => 0,
        "k" | "K" | "kb" | "KB" | "Kb" | "Ki" | "KiB" => 10,
        "m" | "M" | "mb" | "MB" | "Mb" | "Mi" | "MiB" => 20,
        "g" | "G" | "gb" | "GB" | "Gb" | "Gi" | "GiB" => 30,
        "t" | "T" | "tb" | "TB" | "Tb" | "Ti" | "TiB" => 40,
        "Pi" | "PiB" => 50,
        other => {
            if other.starts_with('.') {
                return Err(SizeError::NotANumber);
            }
            return Err(SizeError::UnknownUnit(other.to_string()));
        }
    };
    value.checked_mul(1u64 << shift).ok_or(SizeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hami_and_kubernetes_forms() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1024k"), Ok(1 << 20));
        assert_eq!(parse_size("4096m"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4Gi"), Ok(4 << 30));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30), "1Gi is a GiB, not a byte");
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size(" 16g "), Ok(16 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("  "), Err(SizeError::Empty));
        assert_eq!(parse_size("-1g"), Err(SizeError::Negative));
        assert_eq!(parse_size("g"), Err(SizeError::NotANumber));
        assert_eq!(parse_size("1.5g"), Err(SizeError::NotANumber));
        assert_eq!(parse_size("4x"), Err(SizeError::UnknownUnit("x".into())));
        assert_eq!(parse_size("4gig"), Err(SizeError::UnknownUnit("gig".into())));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse_size("17000000000t"), Err(SizeError::Overflow));
    }
}
