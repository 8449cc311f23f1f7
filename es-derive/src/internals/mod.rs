//! Parse, model and validate: everything between the tokens and the generated code.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod check;
pub(crate) mod ctxt;
