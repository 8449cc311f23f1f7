//! Names that NATS accepts: subject tokens, and consumer names.

/// Escapes `text` into one NATS subject token (also a valid consumer name).
///
/// ASCII letters, digits, `-` and `_` are kept; every other byte of the UTF-8 text becomes
/// `=XX` (two uppercase hex digits), `=` included; the empty string becomes `=`. The
/// mapping is injective (two different inputs never give the same token), so no two streams
/// share a subject, and [`unescape`] reverses it. `.`, `*`, `>` and whitespace, which NATS
/// gives a meaning in subjects, never survive.
///
/// ```
/// assert_eq!(es_nats::escape("BankAccount"), "BankAccount");
/// assert_eq!(es_nats::escape("acc.1 *x>"), "acc=2E1=20=2Ax=3E");
/// assert_eq!(es_nats::escape("ü"), "=C3=BC");
/// assert_eq!(es_nats::unescape("acc=2E1=20=2Ax=3E").as_deref(), Some("acc.1 *x>"));
/// ```
pub fn escape(text: &str) -> String {
    if text.is_empty() {
        return "=".to_owned();
    }
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            escaped.push(char::from(byte));
        } else {
            escaped.push('=');
            escaped.push(hex(byte >> 4));
            escaped.push(hex(byte & 0x0f));
        }
    }
    escaped
}

/// Reverses [`escape`]; `None` if `token` is not one of its outputs.
pub fn unescape(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'=' {
            let high = unhex(*bytes.get(i + 1)?)?;
            let low = unhex(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

fn unhex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The subject of an event of stream `aggregate_type`/`aggregate_id` under `prefix`:
/// `{prefix}.{escape(aggregate_type)}.{escape(aggregate_id)}`.
pub fn event_subject(prefix: &str, aggregate_type: &str, aggregate_id: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        escape(aggregate_type),
        escape(aggregate_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_and_reversible() {
        let samples = [
            "",
            "=",
            "==",
            "a",
            "A.b",
            "a b",
            "*",
            ">",
            "ü",
            "\u{1F600}",
            "=3D",
            "a\tb\r\n",
            "x-y_z",
        ];
        let escaped: Vec<String> = samples.iter().map(|s| escape(s)).collect();
        for (sample, token) in samples.iter().zip(&escaped) {
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{token}"
            );
            assert_eq!(unescape(token).as_deref(), Some(*sample));
        }
        let mut unique = escaped.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), escaped.len());
        assert_eq!(
            event_subject("events", "Bank Account", "acc.1"),
            "events.Bank=20Account.acc=2E1"
        );
    }
}
