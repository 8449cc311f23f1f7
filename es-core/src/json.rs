//! JSON checks every store applies to payloads, so that what one store accepts the others
//! accept, and what comes back equals what went in.
//!
//! PostgreSQL's `jsonb` cannot hold `\u0000` or a lone surrogate escape, keeps only the last
//! of duplicate keys, drops the sign of negative zero, rewrites numbers (`1e2` becomes `100`)
//! and refuses very deep nesting. So every store, before any I/O:
//! - refuses `\u0000`, lone surrogates, duplicate keys and nesting deeper than
//!   [`MAX_JSON_DEPTH`] with [`Error::Invalid`](crate::Error::Invalid);
//! - rewrites negative zero (`-0`, `-0.0`, `-0e3`) as positive zero, as PostgreSQL does;
//! - compares payloads of idempotent retries by value ([`same_json`]): numbers as exact
//!   decimals, objects without regard to key order.

use std::cmp::Ordering;

/// The deepest nesting of arrays and objects a stored JSON document may have.
pub const MAX_JSON_DEPTH: usize = 512;

/// What is wrong with a JSON text, for [`Error::Invalid`](crate::Error::Invalid) messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonProblem {
    Syntax(usize),
    Nul,
    LoneSurrogate,
    DuplicateKey(String),
    TooDeep,
}

impl std::fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonProblem::Syntax(at) => write!(f, "is not valid JSON (at byte {at})"),
            JsonProblem::Nul => f.write_str("contains the NUL character (\\u0000)"),
            JsonProblem::LoneSurrogate => f.write_str("contains a lone UTF-16 surrogate escape"),
            JsonProblem::DuplicateKey(key) => write!(f, "repeats the object key {key:?}"),
            JsonProblem::TooDeep => write!(f, "nests deeper than {MAX_JSON_DEPTH} levels"),
        }
    }
}

/// A parsed JSON value with numbers kept as exact decimals.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Null,
    Bool(bool),
    Number(Decimal),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// An exact decimal: `(-1)^negative * 0.digits * 10^exponent`, digits without leading or
/// trailing zeros; zero has no digits and is never negative.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Checks `text`, returning the byte offsets of negative zeros (the `-` to drop).
pub(crate) fn check(text: &str) -> Result<Vec<usize>, JsonProblem> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
        negative_zeros: Vec::new(),
    };
    parser.document()?;
    Ok(parser.negative_zeros)
}

/// Checks `text` and returns it with negative zeros made positive (`None`: unchanged).
pub(crate) fn normalize(text: &str) -> Result<Option<String>, JsonProblem> {
    let minus_signs = check(text)?;
    if minus_signs.is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for at in minus_signs {
        out.push_str(&text[from..at]);
        from = at + 1;
    }
    out.push_str(&text[from..]);
    Ok(Some(out))
}

/// Whether two JSON texts hold the same value: objects compared without regard to key
/// order, numbers as exact decimals (`1e2` equals `100` and `100.0`; `-0` equals `0`).
/// Invalid JSON equals nothing but identical text.
pub fn same_json(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn parse(text: &str) -> Option<Value> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
        negative_zeros: Vec::new(),
    };
    let value = parser.value(0).ok()?;
    parser.skip_ws();
    (parser.at == parser.bytes.len()).then(|| sort_objects(value))
}

fn sort_objects(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(sort_objects).collect()),
        Value::Object(mut fields) => {
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, sort_objects(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    negative_zeros: Vec<usize>,
}

impl Parser<'_> {
    fn document(&mut self) -> Result<(), JsonProblem> {
        self.value(0)?;
        self.skip_ws();
        if self.at != self.bytes.len() {
            return Err(JsonProblem::Syntax(self.at));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonProblem> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(JsonProblem::Syntax(self.at))
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonProblem> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(JsonProblem::Syntax(self.at))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonProblem> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            _ => Err(JsonProblem::Syntax(self.at)),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonProblem> {
        if depth > MAX_JSON_DEPTH {
            return Err(JsonProblem::TooDeep);
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(JsonProblem::Syntax(self.at)),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonProblem> {
        if depth > MAX_JSON_DEPTH {
            return Err(JsonProblem::TooDeep);
        }
        self.at += 1;
        let mut fields: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(fields));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(JsonProblem::Syntax(self.at));
            }
            let key = self.string()?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(JsonProblem::DuplicateKey(key));
            }
            self.skip_ws();
            self.expect(b':')?;
            let value = self.value(depth)?;
            fields.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(fields));
                }
                _ => return Err(JsonProblem::Syntax(self.at)),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonProblem> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or(JsonProblem::Syntax(self.at))?;
        let mut code = 0u32;
        for &d in digits {
            let nibble = (d as char)
                .to_digit(16)
                .ok_or(JsonProblem::Syntax(self.at))?;
            code = code * 16 + nibble;
        }
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, JsonProblem> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // The input is a &str and we stop only at ASCII bytes: the slice is valid UTF-8.
            out.push_str(
                std::str::from_utf8(&self.bytes[start..self.at])
                    .map_err(|_| JsonProblem::Syntax(start))?,
            );
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self.peek().ok_or(JsonProblem::Syntax(self.at))?;
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(JsonProblem::Syntax(self.at - 1)),
                    };
                    out.push(c);
                }
                _ => return Err(JsonProblem::Syntax(self.at)),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, JsonProblem> {
        let first = self.hex4()?;
        let code = match first {
            0 => return Err(JsonProblem::Nul),
            0xD800..=0xDBFF => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err(JsonProblem::LoneSurrogate);
                }
                self.at += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(JsonProblem::LoneSurrogate);
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(JsonProblem::LoneSurrogate),
            code => code,
        };
        char::from_u32(code).ok_or(JsonProblem::LoneSurrogate)
    }

    fn number(&mut self) -> Result<Decimal, JsonProblem> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let mut digits = Vec::new();
        let mut point = 0i64;
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                digits.push(0);
            }
            Some(b'1'..=b'9') => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    digits.push(d - b'0');
                    self.at += 1;
                }
            }
            _ => return Err(JsonProblem::Syntax(self.at)),
        }
        let integer_digits = digits.len() as i64;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let before = digits.len();
            while let Some(d @ b'0'..=b'9') = self.peek() {
                digits.push(d - b'0');
                self.at += 1;
            }
            if digits.len() == before {
                return Err(JsonProblem::Syntax(self.at));
            }
        }
        let mut exponent = 0i64;
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            let minus = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let before = self.at;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                // Saturates far beyond anything a database keeps; equality stays exact for
                // every exponent PostgreSQL accepts.
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(d - b'0'));
                self.at += 1;
            }
            if self.at == before {
                return Err(JsonProblem::Syntax(self.at));
            }
            if minus {
                exponent = -exponent;
            }
        }
        point += integer_digits;
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            if negative {
                self.negative_zeros.push(start);
            }
            return Ok(Decimal {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Ok(Decimal {
            negative,
            digits,
            exponent: exponent.saturating_add(point - leading as i64),
        })
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.negative, self.exponent, &self.digits).cmp(&(
            other.negative,
            other.exponent,
            &other.digits,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_exact_decimals() {
        assert!(same_json("1e2", "100"));
        assert!(same_json("100.0", "100"));
        assert!(same_json("-0.0", "0"));
        assert!(same_json("0.000e5", "0"));
        assert!(same_json("1.50", "1.5"));
        assert!(same_json("1e400", &format!("1{}", "0".repeat(400))));
        assert!(same_json("5e-324", &format!("0.{}5", "0".repeat(323))));
        assert!(!same_json("0.9088812586135611", "0.9088812586135612"));
        assert!(!same_json("-1", "1"));
        assert!(!same_json("10", "1"));
    }

    #[test]
    fn objects_compare_without_key_order() {
        assert!(same_json(
            r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#,
            r#"{ "b": [1, {"d":3,"c":2}], "a": 1 }"#
        ));
        assert!(!same_json(r#"{"a":1}"#, r#"{"a":1,"b":null}"#));
        assert!(!same_json(r#"[1,2]"#, r#"[2,1]"#));
        assert!(same_json(r#""\u00e9""#, r#""é""#));
    }

    #[test]
    fn deep_nesting_up_to_the_limit_compares() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check(&deep(MAX_JSON_DEPTH)).is_ok());
        assert_eq!(check(&deep(MAX_JSON_DEPTH + 1)), Err(JsonProblem::TooDeep));
        let spaced = format!(
            "{}1{}",
            "[ ".repeat(MAX_JSON_DEPTH),
            " ]".repeat(MAX_JSON_DEPTH)
        );
        assert!(same_json(&deep(MAX_JSON_DEPTH), &spaced));
    }

    #[test]
    fn what_jsonb_cannot_hold_is_refused() {
        assert_eq!(check(r#"{"a":"x\u0000"}"#), Err(JsonProblem::Nul));
        assert_eq!(check(r#""\ud800""#), Err(JsonProblem::LoneSurrogate));
        assert_eq!(check(r#""\udc00\ud800""#), Err(JsonProblem::LoneSurrogate));
        assert!(check(r#""\ud83d\ude00""#).is_ok());
        assert!(
            check(r#""\\u0000""#).is_ok(),
            "an escaped backslash is not an escape"
        );
        assert_eq!(
            check(r#"{"a":1,"a":2}"#),
            Err(JsonProblem::DuplicateKey("a".into()))
        );
        assert!(matches!(check("{"), Err(JsonProblem::Syntax(_))));
        assert!(matches!(check("01"), Err(JsonProblem::Syntax(_))));
    }

    #[test]
    fn negative_zero_loses_its_sign() {
        assert_eq!(
            normalize(r#"{"a":-0.0,"b":[-0,-0e3,-1,-0.5]}"#)
                .unwrap()
                .as_deref(),
            Some(r#"{"a":0.0,"b":[0,0e3,-1,-0.5]}"#)
        );
        assert_eq!(normalize(r#"{"a":-1.0}"#).unwrap(), None);
    }
}
