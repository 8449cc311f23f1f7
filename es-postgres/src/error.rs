//! How sqlx's errors become es-core's [`Error`], and connection URLs that never show a
//! password.
//!
//! What a caller may do next depends on the variant, so the mapping depends on where the
//! failure happened:
//!
//! | failure | reading, or inside an open transaction | autocommit write, or `COMMIT` |
//! |---|---|---|
//! | no connection (pool timeout, refused, closed) | `Backend` | `Backend` (nothing was sent) |
//! | I/O, protocol, connection killed (SQLSTATE 08, 57, 58) | `Backend` | `OutcomeUnknown` |
//! | refusal of the request (SQLSTATE 21, 22, 23, 25, 2F, 39, 42, 44, 54, P0) | `Invalid` | `Invalid` |
//! | anything else the database reports (40 rollback, 53 resources, 55 lock, XX) | `Backend` | `Backend` |
//! | a result that does not decode after a write | `Backend` | `OutcomeUnknown` |
//!
//! A write whose connection fails after the statement was sent may have committed (PostgreSQL
//! commits an autocommit statement before the reply that confirms it), so it is
//! `OutcomeUnknown`; inside a transaction nothing commits before `COMMIT`, so a failure there
//! is `Backend`. A permanent refusal by the database is `Invalid`, never `Backend` (which
//! would invite a retry that fails the same way).

use std::fmt;

use es_core::Error;

/// Where a statement ran, which decides what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A read, or a write that cannot have committed (inside a transaction before `COMMIT`).
    Uncommitted,
    /// An autocommit write, or `COMMIT` itself: a lost connection leaves the outcome unknown.
    Committing,
}

/// A failure to get a connection: nothing was sent.
pub(crate) fn acquire(error: sqlx::Error) -> Error {
    Error::Backend(Box::new(error))
}

/// A failure of a read or of a statement inside an open transaction.
pub(crate) fn uncommitted(error: sqlx::Error) -> Error {
    classify(error, Phase::Uncommitted)
}

/// A failure of an autocommit write or of a `COMMIT`.
pub(crate) fn committing(error: sqlx::Error) -> Error {
    classify(error, Phase::Committing)
}

/// Maps `error` from a statement run in `phase`.
pub(crate) fn classify(error: sqlx::Error, phase: Phase) -> Error {
    let lost = match phase {
        Phase::Uncommitted => Error::Backend,
        Phase::Committing => Error::OutcomeUnknown,
    };
    match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Error::Backend(Box::new(error))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match sqlstate_class(&code) {
                "08" | "57" | "58" => lost(Box::new(error)),
                "21" | "22" | "23" | "25" | "2F" | "39" | "42" | "44" | "54" | "P0" => {
                    Error::Invalid(format!(
                        "PostgreSQL refused the request ({code}): {}",
                        db.message()
                    ))
                }
                _ => Error::Backend(Box::new(error)),
            }
        }
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => {
            Error::Invalid(format!("cannot send the request: {error}"))
        }
        _ => lost(Box::new(error)),
    }
}

/// Whether `error` says the connection died under the statement (killed by the server, reset,
/// closed) rather than the statement failing: a read that fails so may run again elsewhere.
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 57P01-57P03: shutdown, crash or "cannot connect now"; not 57014 (a cancelled
            // statement, which would only be cancelled again).
            sqlstate_class(&code) == "08" || code.starts_with("57P")
        }
        _ => false,
    }
}

fn sqlstate_class(code: &str) -> &str {
    code.get(..2).unwrap_or("")
}

/// The connection could not be made: what was tried (the URL without its password) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// The URL, with any password replaced by `***`.
    pub target: String,
    /// What went wrong, with any occurrence of the password replaced by `***`.
    pub cause: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot connect to PostgreSQL at {}: {}",
            self.target, self.cause
        )
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    /// A connection to `url` that failed with `cause` (both redacted here).
    pub(crate) fn new(url: &str, cause: &dyn fmt::Display) -> Self {
        Self {
            target: redact_url(url),
            cause: redact_secret(&cause.to_string(), url),
        }
    }
}

/// `url` with the password (in the user info or a `password=` parameter) replaced by `***`.
///
/// ```text
/// postgres://ada:s3cret@db:5432/app?sslmode=require -> postgres://ada:***@db:5432/app?sslmode=require
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a connection string that is not a URL)".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `text` with every occurrence of `url`'s password (as written and percent-decoded) replaced.
fn redact_secret(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    for secret in passwords(url) {
        if secret.len() >= 3 {
            text = text.replace(&secret, "***");
        }
    }
    text
}

fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return found;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
        found.push(percent_decode(password));
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && key.eq_ignore_ascii_case("password")
            {
                found.push(value.to_owned());
                found.push(percent_decode(value));
            }
        }
    }
    found
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
        let escaped = match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => u8::try_from(high * 16 + low).ok(),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_their_password() {
        for (url, expected) in [
            (
                "postgres://ada:s3cret@db:5432/app?sslmode=require",
                "postgres://ada:***@db:5432/app?sslmode=require",
            ),
            ("postgres://ada@db/app", "postgres://ada@db/app"),
            ("postgres://db", "postgres://db"),
            (
                "postgresql://u:p%40ss@h/d?password=other&x=1",
                "postgresql://u:***@h/d?password=***&x=1",
            ),
            (
                "host=db password=x",
                "(a connection string that is not a URL)",
            ),
        ] {
            assert_eq!(redact_url(url), expected);
        }
        let url = "postgres://ada:p%40ssword@db/app";
        let error = ConnectError::new(url, &format!("failed for {url}: p@ssword and p%40ssword"));
        let text = error.to_string();
        assert!(
            !text.contains("p@ssword") && !text.contains("p%40ssword"),
            "{text}"
        );
        assert!(text.contains("postgres://ada:***@db/app"), "{text}");
    }
}
