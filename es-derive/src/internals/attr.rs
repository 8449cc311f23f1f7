//! Reads `#[event(...)]` and `#[aggregate(...)]` into typed settings.
//!
//! Each key is parsed on its own; a mistake in one key is recorded and parsing goes on with
//! the next, so every mistake shows up in one compile. Duplicate keys are reported at their
//! second occurrence.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, LitInt, LitStr, Path, Token, Type};

use super::ctxt::Ctxt;

/// One key's value, remembering where it was first set.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: &'static str,
    attr: &'static str,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, attr: &'static str, name: &'static str) -> Self {
        Attr {
            cx,
            name,
            attr,
            value: None,
        }
    }

    /// Sets the value, or reports a duplicate at `obj` (the second occurrence).
    fn set<O: ToTokens>(&mut self, obj: O, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                obj,
                format!(
                    "duplicate `{}` key in `#[{}(...)]`: each key may appear once",
                    self.name, self.attr
                ),
            );
        } else {
            self.value = Some(value);
        }
    }

    fn get(self) -> Option<T> {
        self.value
    }
}

/// A value together with the tokens it was written as, for spans.
#[derive(Clone)]
pub(crate) struct Spanned<T> {
    /// The parsed value.
    pub(crate) value: T,
    /// Where the user wrote it (the key, for numbers; the literal, for strings).
    pub(crate) span: Span,
}

/// Settings of `#[event(...)]`.
pub(crate) struct EventAttrs {
    /// `name = "..."`.
    pub(crate) name: Option<Spanned<String>>,
    /// `version = N` (already known to be at least 1).
    pub(crate) version: Option<Spanned<u32>>,
    /// `previous = Type`.
    pub(crate) previous: Option<Type>,
    /// `crate = path`.
    pub(crate) krate: Option<Path>,
}

const EVENT_KEYS: &str = "`name`, `version`, `previous`, `crate`";

impl EventAttrs {
    /// Parses the arguments of `#[event(...)]`.
    pub(crate) fn from_args(cx: &Ctxt, args: TokenStream) -> Self {
        let mut name = Attr::none(cx, "event", "name");
        let mut version = Attr::none(cx, "event", "version");
        let mut previous = Attr::none(cx, "event", "previous");
        let mut krate = Attr::none(cx, "event", "crate");

        let parser = syn::meta::parser(|meta| {
            let result = if meta.path.is_ident("name") {
                parse_name(&meta).map(|v| name.set(&meta.path, v))
            } else if meta.path.is_ident("version") {
                parse_at_least_one::<u32>(cx, &meta, "version", VERSION_ZERO)
                    .map(|v| v.into_iter().for_each(|v| version.set(&meta.path, v)))
            } else if meta.path.is_ident("previous") {
                meta.value()
                    .and_then(|input| input.parse::<Type>())
                    .map(|v| previous.set(&meta.path, v))
            } else if meta.path.is_ident("crate") {
                parse_crate(&meta).map(|v| krate.set(&meta.path, v))
            } else {
                Err(meta.error(unknown_key(&meta.path, "event", EVENT_KEYS)))
            };
            recover(cx, meta.input, result)
        });
        if let Err(err) = parser.parse2(args) {
            cx.syn_error(err);
        }

        EventAttrs {
            name: name.get(),
            version: version.get(),
            previous: previous.get(),
            krate: krate.get(),
        }
    }
}

const VERSION_ZERO: &str = "`version` must be at least 1: schema versions start at 1 (the default)";

/// Settings of `#[aggregate(...)]`.
pub(crate) struct AggregateAttrs {
    /// The first `#[aggregate]` attribute, for errors about missing keys.
    pub(crate) attr_tokens: Option<TokenStream>,
    /// `name = "..."`.
    pub(crate) name: Option<Spanned<String>>,
    /// `events(A, B, ...)`, with the tokens of the `events` key.
    pub(crate) events: Option<(TokenStream, Vec<Path>)>,
    /// `snapshot_every = N` (at least 1).
    pub(crate) snapshot_every: Option<Spanned<u64>>,
    /// `state_version = N` (at least 1).
    pub(crate) state_version: Option<Spanned<u32>>,
    /// `event_enum = Name`.
    pub(crate) event_enum: Option<Ident>,
    /// `crate = path`.
    pub(crate) krate: Option<Path>,
}

const AGGREGATE_KEYS: &str =
    "`name`, `events`, `snapshot_every`, `state_version`, `event_enum`, `crate`";

impl AggregateAttrs {
    /// Reads every `#[aggregate(...)]` attribute of the input.
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut attr_tokens = None;
        let mut name = Attr::none(cx, "aggregate", "name");
        let mut events = Attr::none(cx, "aggregate", "events");
        let mut snapshot_every = Attr::none(cx, "aggregate", "snapshot_every");
        let mut state_version = Attr::none(cx, "aggregate", "state_version");
        let mut event_enum = Attr::none(cx, "aggregate", "event_enum");
        let mut krate = Attr::none(cx, "aggregate", "crate");

        for attr in attrs.iter().filter(|a| a.path().is_ident("aggregate")) {
            attr_tokens.get_or_insert_with(|| attr.to_token_stream());
            if let syn::Meta::Path(_) = attr.meta {
                cx.error_spanned_by(
                    attr,
                    "expected `#[aggregate(events(...))]`: list the events of the aggregate",
                );
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                let result = if meta.path.is_ident("name") {
                    parse_name(&meta).map(|v| name.set(&meta.path, v))
                } else if meta.path.is_ident("events") {
                    parse_events(&meta).map(|v| events.set(&meta.path, (meta.path.to_token_stream(), v)))
                } else if meta.path.is_ident("snapshot_every") {
                    parse_at_least_one::<u64>(
                        cx,
                        &meta,
                        "snapshot_every",
                        "`snapshot_every` must be at least 1: leave it out to never take snapshots",
                    )
                    .map(|v| v.into_iter().for_each(|v| snapshot_every.set(&meta.path, v)))
                } else if meta.path.is_ident("state_version") {
                    parse_at_least_one::<u32>(
                        cx,
                        &meta,
                        "state_version",
                        "`state_version` must be at least 1: state versions start at 1 (the default)",
                    )
                    .map(|v| v.into_iter().for_each(|v| state_version.set(&meta.path, v)))
                } else if meta.path.is_ident("event_enum") {
                    meta.value()
                        .and_then(|input| input.parse::<Ident>())
                        .map(|v| event_enum.set(&meta.path, v))
                } else if meta.path.is_ident("crate") {
                    parse_crate(&meta).map(|v| krate.set(&meta.path, v))
                } else {
                    Err(meta.error(unknown_key(&meta.path, "aggregate", AGGREGATE_KEYS)))
                };
                recover(cx, meta.input, result)
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }

        AggregateAttrs {
            attr_tokens,
            name: name.get(),
            events: events.get(),
            snapshot_every: snapshot_every.get(),
            state_version: state_version.get(),
            event_enum: event_enum.get(),
            krate: krate.get(),
        }
    }
}

fn unknown_key(path: &Path, attr: &str, expected: &str) -> String {
    let key = path
        .get_ident()
        .map(|i| i.unraw().to_string())
        .unwrap_or_else(|| path.to_token_stream().to_string().replace(' ', ""));
    format!("unknown key `{key}` in `#[{attr}(...)]`; expected one of {expected}")
}

/// Records a key's error and skips the rest of its value, so the next key is still read.
fn recover(cx: &Ctxt, input: ParseStream<'_>, result: syn::Result<()>) -> syn::Result<()> {
    if let Err(err) = result {
        cx.syn_error(err);
        while !input.is_empty() && !input.peek(Token![,]) {
            input.step(|cursor| match cursor.token_tree() {
                Some((_, rest)) => Ok(((), rest)),
                None => Err(cursor.error("unexpected end of input")),
            })?;
        }
    }
    Ok(())
}

fn parse_name(meta: &ParseNestedMeta<'_>) -> syn::Result<Spanned<String>> {
    let lit: LitStr = meta.value()?.parse()?;
    let value = lit.value();
    if value.trim().is_empty() {
        return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
    }
    Ok(Spanned {
        value,
        span: lit.span(),
    })
}

/// Parses `key = N` with `N >= 1`. Zero is recorded as an error and yields `None`.
fn parse_at_least_one<N>(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &str,
    zero: &str,
) -> syn::Result<Option<Spanned<N>>>
where
    N: std::str::FromStr + PartialEq + From<u8>,
    N::Err: std::fmt::Display,
{
    let input = meta.value()?;
    let lit: LitInt = input.parse().map_err(|err| {
        syn::Error::new(
            err.span(),
            format!("`{key}` takes an integer, e.g. `{key} = 2`"),
        )
    })?;
    let value: N = lit.base10_parse()?;
    if value == N::from(0) {
        cx.error_at(lit.span(), zero);
        return Ok(None);
    }
    Ok(Some(Spanned {
        value,
        span: syn::spanned::Spanned::span(&meta.path),
    }))
}

/// `crate = path` or `crate = "path"` (serde's spelling).
fn parse_crate(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let input = meta.value()?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        lit.parse_with(Path::parse_mod_style)
    } else {
        Path::parse_mod_style(input)
    }
}

fn parse_events(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Path>> {
    if meta.input.peek(Token![=]) {
        return Err(meta.error("expected `events(A, B, ...)`, a list of event types"));
    }
    let content;
    syn::parenthesized!(content in meta.input);
    let list = Punctuated::<Path, Token![,]>::parse_terminated(&content)?;
    Ok(list.into_iter().collect())
}
