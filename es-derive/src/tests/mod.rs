//! Expansion snapshots: each macro's expansion as a plain function, formatted with
//! prettyplease and compared with the reviewed snapshot in `snapshots/`.

use proc_macro2::TokenStream;

mod aggregate;
mod event;

/// Formats generated tokens as Rust source.
fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(err) => panic!("expansion does not parse as a file: {err}\n{tokens}"),
    }
}

/// Snapshots `output`, with `input` (the user's code) as the snapshot's description.
macro_rules! assert_expansion {
    ($name:literal, $input:expr, $output:expr) => {
        insta::with_settings!({ description => $input, omit_expression => true }, {
            insta::assert_snapshot!($name, $output);
        });
    };
}
pub(crate) use assert_expansion;
