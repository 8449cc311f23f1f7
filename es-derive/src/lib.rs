//! Placeholder: the macros arrive with the es-derive issue.
use proc_macro::TokenStream;

/// `#[event]`.
#[proc_macro_attribute]
pub fn event(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}

/// `#[derive(Aggregate)]`.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
