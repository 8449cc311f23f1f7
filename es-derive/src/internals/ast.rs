//! The typed model between tokens and generated code. Each model keeps references to the
//! user's syntax so that generated code and errors can point at it.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{DeriveInput, Ident, ItemStruct, Path, Type, Visibility};

use super::attr::{AggregateAttrs, EventAttrs, Spanned};
use super::ctxt::Ctxt;

/// The runtime crate generated code refers to, `::es_core` unless `crate = ...` says otherwise.
pub(crate) fn default_crate() -> Path {
    syn::parse_quote!(::es_core)
}

/// An `#[event]` struct.
pub(crate) struct Event<'a> {
    /// The struct as the user wrote it.
    pub(crate) item: &'a ItemStruct,
    /// The stored event name.
    pub(crate) name: String,
    /// The schema version.
    pub(crate) version: u32,
    /// The type holding the schema one version lower.
    pub(crate) previous: Option<Type>,
    /// Path to the runtime crate.
    pub(crate) krate: Path,
    /// Derives the `Event` trait needs (serde's, `Debug`, `Clone`) plus `PartialEq`, which
    /// the user did not already write; in that order.
    pub(crate) missing_derives: Vec<&'static str>,
}

impl<'a> Event<'a> {
    /// Builds the model of `item` from the arguments of `#[event(...)]`.
    pub(crate) fn from_syn(item: &'a ItemStruct, attrs: EventAttrs) -> Self {
        let user_derives = derived_traits(&item.attrs);
        let missing_derives = ["Serialize", "Deserialize", "Debug", "Clone", "PartialEq"]
            .into_iter()
            .filter(|t| !user_derives.iter().any(|d| d == t))
            .collect();
        Event {
            item,
            name: attrs
                .name
                .map(|n| n.value)
                .unwrap_or_else(|| item.ident.unraw().to_string()),
            version: attrs.version.map_or(1, |v| v.value),
            previous: attrs.previous,
            krate: attrs.krate.unwrap_or_else(default_crate),
            missing_derives,
        }
    }
}

/// The last path segment of every trait in the item's `#[derive(...)]` attributes.
fn derived_traits(attrs: &[syn::Attribute]) -> Vec<String> {
    let mut traits = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        // A derive list that does not parse is left for rustc to report.
        let _ = attr.parse_nested_meta(|meta| {
            if let Some(last) = meta.path.segments.last() {
                traits.push(last.ident.to_string());
            }
            Ok(())
        });
    }
    traits
}

/// A `#[derive(Aggregate)]` input.
pub(crate) struct Aggregate<'a> {
    /// The input as the user wrote it.
    pub(crate) input: &'a DeriveInput,
    /// The aggregate type.
    pub(crate) ident: &'a Ident,
    /// Its visibility, which the event enum shares.
    pub(crate) vis: &'a Visibility,
    /// The stream type name.
    pub(crate) name: String,
    /// The events, in declaration order.
    pub(crate) events: Vec<EventRef>,
    /// Where `events(...)` was written (or where it is missing).
    pub(crate) events_tokens: TokenStream,
    /// Whether `events(...)` was given at all.
    pub(crate) events_given: bool,
    /// `snapshot_every`, with its span for errors about serialisation.
    pub(crate) snapshot_every: Option<Spanned<u64>>,
    /// The state shape version.
    pub(crate) state_version: u32,
    /// The name of the generated enum.
    pub(crate) event_enum: Ident,
    /// Path to the runtime crate.
    pub(crate) krate: Path,
}

/// One entry of `events(...)`.
pub(crate) struct EventRef {
    /// The event type as written.
    pub(crate) path: Path,
    /// The enum variant: the path's last segment.
    pub(crate) variant: Ident,
}

impl<'a> Aggregate<'a> {
    /// Builds the model of a derive input. Errors about the attributes are recorded in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = AggregateAttrs::from_attrs(cx, &input.attrs);
        let ident = &input.ident;
        let events_given = attrs.events.is_some();
        let (events_tokens, paths) = attrs.events.unwrap_or_else(|| {
            let tokens = attrs.attr_tokens.unwrap_or_else(|| ident.to_token_stream());
            (tokens, Vec::new())
        });
        let events = paths
            .into_iter()
            .filter_map(|path| {
                let variant = path.segments.last()?.ident.clone();
                Some(EventRef { path, variant })
            })
            .collect();
        Aggregate {
            input,
            ident,
            vis: &input.vis,
            name: attrs
                .name
                .map(|n| n.value)
                .unwrap_or_else(|| ident.unraw().to_string()),
            events,
            events_tokens,
            events_given,
            snapshot_every: attrs.snapshot_every,
            state_version: attrs.state_version.map_or(1, |v| v.value),
            event_enum: attrs
                .event_enum
                .unwrap_or_else(|| Ident::new(&format!("{}Event", ident.unraw()), ident.span())),
            krate: attrs.krate.unwrap_or_else(default_crate),
        }
    }
}
