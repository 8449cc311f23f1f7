//! Money: integer minor units with a currency. Never floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::LedgerError;

/// An ISO 4217-style currency code: exactly three ASCII uppercase letters.
///
/// ```
/// use ledger::domain::Currency;
/// let eur: Currency = "EUR".parse().unwrap();
/// assert_eq!(eur.as_str(), "EUR");
/// assert!("eur".parse::<Currency>().is_err());
/// ```
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "EUR")]
pub struct Currency(String);

impl Currency {
    /// The code, e.g. `"EUR"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How many decimal places the currency's minor unit has (2 for most, 0 for JPY and KRW).
    pub fn exponent(&self) -> u32 {
        match self.0.as_str() {
            "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
            _ => 2,
        }
    }

    /// `XXX`, ISO 4217's code for "no currency".
    pub fn unknown() -> Self {
        Self("XXX".to_owned())
    }
}

impl FromStr for Currency {
    type Err = LedgerError;

    fn from_str(code: &str) -> Result<Self, LedgerError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(LedgerError::InvalidCurrency(code.to_owned()))
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = LedgerError;
    fn try_from(code: String) -> Result<Self, LedgerError> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in a currency's minor units (cents for EUR), as a signed 64-bit integer.
///
/// ```
/// use ledger::domain::Money;
/// let m = Money::parse("12.50", "EUR".parse().unwrap()).unwrap();
/// assert_eq!(m.minor, 1250);
/// assert_eq!(m.to_string(), "12.50 EUR");
/// assert!(Money::parse("12.505", "EUR".parse().unwrap()).is_err());
/// assert_eq!(Money::format_minor(i128::from(i64::MAX) + 1, m.currency()), "92233720368547758.08");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// The amount in minor units.
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// The currency.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// Parses a decimal string such as `"12.50"` or `"7"` into minor units, exactly: more
    /// decimal places than the currency has, a sign, or an overflow is an error.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, LedgerError> {
        let invalid = || LedgerError::InvalidAmount(text.to_owned());
        let places = currency.exponent() as usize;
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || fraction.len() > places
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid());
        }
        let minor = format!("{whole}{fraction:0<places$}");
        Ok(Self {
            minor: minor.parse().map_err(|_| invalid())?,
            currency,
        })
    }

    /// Formats `minor` units of `currency` as a decimal string with the currency's places.
    pub fn format_minor(minor: impl Into<i128>, currency: &Currency) -> String {
        let minor: i128 = minor.into();
        let exponent = currency.exponent();
        if exponent == 0 {
            return minor.to_string();
        }
        let scale = 10_u128.pow(exponent);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let width = exponent as usize;
        format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            Money::format_minor(self.minor, &self.currency),
            self.currency
        )
    }
}
