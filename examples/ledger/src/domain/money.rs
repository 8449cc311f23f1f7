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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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
}

impl Currency {
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

    /// Parses a decimal string such as `"12.50"` or `"7"` into minor units, exactly: more
    /// decimal places than the currency has, a sign, or an overflow is an error.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, LedgerError> {
        let invalid = || LedgerError::InvalidAmount(text.to_owned());
        let exponent = currency.exponent();
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || fraction.len() > exponent as usize
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid());
        }
        let scale = 10_i64.checked_pow(exponent).ok_or_else(invalid)?;
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let padded = format!("{fraction:0<width$}", width = exponent as usize);
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().map_err(|_| invalid())?
        };
        let minor = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .ok_or_else(invalid)?;
        Ok(Self { minor, currency })
    }

    /// Formats `minor` units of `currency` as a decimal string with the currency's places.
    pub fn format_minor(minor: i64, currency: &Currency) -> String {
        let exponent = currency.exponent();
        if exponent == 0 {
            return minor.to_string();
        }
        let scale = 10_u64.pow(exponent);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exponent as usize
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency("EUR".into())
    }

    #[test]
    fn parses_exactly_and_refuses_what_would_lose_precision() {
        assert_eq!(Money::parse("0.05", eur()).map(|m| m.minor).ok(), Some(5));
        assert_eq!(Money::parse("10", eur()).map(|m| m.minor).ok(), Some(1000));
        assert_eq!(
            Money::parse("10.5", eur()).map(|m| m.minor).ok(),
            Some(1050)
        );
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "0.001",
            "1,00",
            "99999999999999999999",
        ] {
            assert!(Money::parse(bad, eur()).is_err(), "{bad:?} parsed");
        }
        let yen = Currency("JPY".into());
        assert_eq!(
            Money::parse("500", yen.clone()).map(|m| m.minor).ok(),
            Some(500)
        );
        assert!(Money::parse("5.1", yen).is_err());
    }

    #[test]
    fn formats_with_the_currency_places() {
        assert_eq!(Money::format_minor(-1205, &eur()), "-12.05");
        assert_eq!(Money::format_minor(7, &eur()), "0.07");
        assert_eq!(
            Money::format_minor(i64::MIN, &eur()),
            "-92233720368547758.08"
        );
        assert_eq!(Money::format_minor(42, &Currency("JPY".into())), "42");
    }

    #[test]
    fn currency_codes_are_validated_on_deserialisation() {
        assert!(serde_json::from_str::<Currency>("\"USD\"").is_ok());
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"EURO\"").is_err());
    }
}
