//! Rules that look at more than one key or item; one function per rule.

use quote::ToTokens;
use syn::{Data, Generics, PathArguments};

use super::ast::{Aggregate, Event};
use super::ctxt::Ctxt;

/// Runs every rule for an `#[event]` struct.
pub(crate) fn check_event(cx: &Ctxt, event: &Event<'_>) {
    check_event_generics(cx, &event.item.generics);
    check_previous_has_room(cx, event);
}

/// `previous` names the schema one version lower, so version 1 has none.
fn check_previous_has_room(cx: &Ctxt, event: &Event<'_>) {
    if let Some(previous) = &event.previous
        && event.version == 1
    {
        cx.error_spanned_by(
            previous,
            format!(
                "`previous` needs `version = 2` or higher: `{}` is version 1, the first \
                 schema of its event, so there is no earlier one",
                event.item.ident
            ),
        );
    }
}

/// Runs every rule for a `#[derive(Aggregate)]` input.
pub(crate) fn check_aggregate(cx: &Ctxt, agg: &Aggregate<'_>) {
    check_aggregate_is_struct(cx, agg);
    check_aggregate_generics(cx, &agg.input.generics);
    check_events_listed(cx, agg);
    check_event_paths(cx, agg);
    check_events_unique(cx, agg);
}

/// Events are concrete: a stored payload has exactly one schema.
fn check_event_generics(cx: &Ctxt, generics: &Generics) {
    if !generics.params.is_empty() {
        cx.error_spanned_by(
            generics,
            "`#[event]` does not support generic structs: a stored event needs one concrete \
             schema; use concrete field types",
        );
    }
    if let Some(where_clause) = &generics.where_clause {
        cx.error_spanned_by(where_clause, "`#[event]` does not support `where` clauses");
    }
}

/// Aggregate state is a struct; the derive generates the enum of its events.
fn check_aggregate_is_struct(cx: &Ctxt, agg: &Aggregate<'_>) {
    let ident = agg.ident;
    let keyword = match &agg.input.data {
        Data::Struct(_) => return,
        Data::Enum(data) => data.enum_token.to_token_stream(),
        Data::Union(data) => data.union_token.to_token_stream(),
    };
    cx.error_spanned_by(
        keyword,
        format!(
            "`#[derive(Aggregate)]` only supports structs: the aggregate's state is a struct, \
             and the derive generates the enum of its events (`{ident}Event`) for you"
        ),
    );
}

/// The derive needs one concrete type: `TYPE` names its streams and the enum is generated once.
fn check_aggregate_generics(cx: &Ctxt, generics: &Generics) {
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            "generic aggregates are not supported by `#[derive(Aggregate)]`: an aggregate \
             type names one kind of stream and owns one event enum; use a concrete type \
             (e.g. a type alias or a wrapper struct per instantiation)",
        );
    }
}

/// `events(...)` is required and not empty.
fn check_events_listed(cx: &Ctxt, agg: &Aggregate<'_>) {
    if !agg.events_given {
        if matches!(agg.input.data, Data::Struct(_)) {
            cx.error_spanned_by(
                &agg.events_tokens,
                format!(
                    "missing `events(...)`: list the events `{}` applies, e.g. \
                     `#[aggregate(events(Opened, Deposited))]`",
                    agg.ident
                ),
            );
        }
    } else if agg.events.is_empty() {
        cx.error_spanned_by(
            &agg.events_tokens,
            "`events(...)` is empty: an aggregate needs at least one event",
        );
    }
}

/// Event types are plain paths: events are never generic.
fn check_event_paths(cx: &Ctxt, agg: &Aggregate<'_>) {
    for event in &agg.events {
        for segment in &event.path.segments {
            if !matches!(segment.arguments, PathArguments::None) {
                cx.error_spanned_by(
                    &segment.arguments,
                    "event types in `events(...)` take no generic arguments",
                );
            }
        }
    }
}

/// No event listed twice, and no two events that would become the same enum variant.
fn check_events_unique(cx: &Ctxt, agg: &Aggregate<'_>) {
    for (i, event) in agg.events.iter().enumerate() {
        let path = path_string(&event.path);
        let earlier = agg.events[..i].iter().find(|e| e.variant == event.variant);
        if let Some(earlier) = earlier {
            if path_string(&earlier.path) == path {
                cx.error_spanned_by(
                    &event.path,
                    format!("`{path}` is listed twice in `events(...)`"),
                );
            } else {
                cx.error_spanned_by(
                    &event.path,
                    format!(
                        "`{path}` and `{}` would both become the variant `{}::{}`: \
                         the variant is named after the type's last path segment; \
                         rename one of the types",
                        path_string(&earlier.path),
                        agg.event_enum,
                        event.variant
                    ),
                );
            }
        }
    }
}

/// A path as the user would write it, without the spaces of `TokenStream::to_string`.
pub(crate) fn path_string(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}
