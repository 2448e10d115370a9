//! The calls no import shows (issue 14 item 2): an inherent `impl` of a
//! type outside the type's own top-level module adds methods that every
//! module can call without naming the module that adds them — the exit
//! layer adds the RIP advance and event injection to `crate::vcpu`'s
//! `Vcpu` (`exit::rip`, `exit::events`, `exit::deliver`,
//! `exit::linear_store`). A call to one from a lower layer climbs as an
//! import would. Found by name in the source text, as the imports are:
//! the `pub` and `pub(crate)` methods of each such `impl` (its type
//! defined in no file of the adding module), and each `.name(`,
//! `.name::<` and `::name(` outside comments and literals.

use super::scan::{self, Token as Tok, code_only};

/// A method an inherent `impl` outside its type's module adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The file of the `impl`, relative to `src/`.
    pub file: String,
    /// The top-level module that adds it.
    pub module: String,
    /// The type it is added to.
    pub ty: String,
    /// The method.
    pub name: String,
}

/// A call of a method by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The calling file, relative to `src/`.
    pub file: String,
    /// Its line (1-based).
    pub line: usize,
    /// The file's own top-level module.
    pub from: String,
    /// The method called.
    pub name: String,
}

fn tokens(text: &str) -> Vec<(Tok, usize)> {
    scan::tokens(&code_only(text))
}

fn is_punct(t: Option<&(Tok, usize)>, p: &str) -> bool {
    matches!(t, Some((Tok::Punct(q), _)) if q == p)
}

fn is_ident(t: Option<&(Tok, usize)>, w: &str) -> bool {
    matches!(t, Some((Tok::Ident(q), _)) if q == w)
}

/// The types `text` defines (`struct`, `enum`, `union`, `trait`, `type`).
pub fn types_defined(text: &str) -> Vec<String> {
    let toks = tokens(text);
    let mut out = Vec::new();
    for (k, (t, _)) in toks.iter().enumerate() {
        if let Tok::Ident(w) = t
            && matches!(w.as_str(), "struct" | "enum" | "union" | "trait" | "type")
            && let Some((Tok::Ident(name), _)) = toks.get(k + 1)
        {
            out.push(name.clone());
        }
    }
    out
}

/// The `pub` and `pub(crate)` methods of the inherent `impl`s in `text`
/// (file `file` of top-level module `module`) whose type `own` says the
/// module does not define.
pub fn added_methods(
    file: &str,
    module: &str,
    text: &str,
    own: impl Fn(&str) -> bool,
) -> Vec<Added> {
    let toks = tokens(text);
    let mut out = Vec::new();
    for k in 0..toks.len() {
        // An item `impl`, not `impl Trait` in a signature.
        let item_start = k == 0
            || ["{", "}", ";", "]"]
                .iter()
                .any(|p| is_punct(toks.get(k - 1), p))
            || is_ident(toks.get(k - 1), "unsafe");
        if !is_ident(toks.get(k), "impl") || !item_start {
            continue;
        }
        // The header up to `{`: `impl<..> path::Type<..> where .. {`.
        let mut j = k + 1;
        let mut angle = 0i32;
        let mut ty = None;
        let mut trait_impl = false;
        while j < toks.len() && !(angle == 0 && is_punct(toks.get(j), "{")) {
            match &toks[j].0 {
                Tok::Punct(p) if p == "<" => angle += 1,
                Tok::Punct(p) if p == ">" => angle -= 1,
                Tok::Ident(w) if angle == 0 && w == "for" => trait_impl = true,
                Tok::Ident(w) if angle == 0 && w == "where" => break,
                Tok::Ident(w) if angle == 0 => ty = Some(w.clone()),
                _ => {}
            }
            j += 1;
        }
        while j < toks.len() && !is_punct(toks.get(j), "{") {
            j += 1;
        }
        let Some(ty) = ty else { continue };
        if trait_impl || own(&ty) {
            continue;
        }
        // The block's `fn`s at its own depth.
        let mut depth = 0;
        for m in j..toks.len() {
            if is_punct(toks.get(m), "{") {
                depth += 1;
            } else if is_punct(toks.get(m), "}") {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            } else if depth == 1
                && is_ident(toks.get(m), "fn")
                && let Some((Tok::Ident(name), _)) = toks.get(m + 1)
                && public(&toks, m)
            {
                out.push(Added {
                    file: file.to_string(),
                    module: module.to_string(),
                    ty: ty.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    out
}

/// Whether the `fn` at `at` is `pub` or `pub(crate)` (qualifiers between
/// skipped).
fn public(toks: &[(Tok, usize)], at: usize) -> bool {
    let mut k = at;
    while k > 0
        && ["const", "unsafe", "async", "extern"]
            .iter()
            .any(|q| is_ident(toks.get(k - 1), q))
    {
        k -= 1;
    }
    if k >= 1 && is_ident(toks.get(k - 1), "pub") {
        return true;
    }
    k >= 4
        && is_ident(toks.get(k - 4), "pub")
        && is_punct(toks.get(k - 3), "(")
        && is_ident(toks.get(k - 2), "crate")
        && is_punct(toks.get(k - 1), ")")
}

/// The calls in `text` (file `file` of top-level module `from`) of a
/// method named in `names`: `.name(`, `.name::<`, `::name(`.
pub fn calls_of(file: &str, from: &str, text: &str, names: &[&str]) -> Vec<Call> {
    let toks = tokens(text);
    let mut out = Vec::new();
    for k in 1..toks.len() {
        let (Tok::Ident(name), line) = &toks[k] else {
            continue;
        };
        if !names.contains(&name.as_str()) {
            continue;
        }
        let after = toks.get(k + 1);
        let method =
            is_punct(toks.get(k - 1), ".") && (is_punct(after, "(") || is_punct(after, "::"));
        let path = is_punct(toks.get(k - 1), "::") && is_punct(after, "(");
        if method || path {
            out.push(Call {
                file: file.to_string(),
                line: *line,
                from: from.to_string(),
                name: name.clone(),
            });
        }
    }
    out
}
