//! The scan behind the layer check: the top-level modules a source file
//! names (`crate::X` paths, `crate::{X, ..}` groups, `super::` chains that
//! climb to the crate root), outside comments and string and character
//! literals.

/// One import of a top-level module by a file of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The importing file, relative to `src/`.
    pub file: String,
    /// Its line (1-based).
    pub line: usize,
    /// The file's own top-level module.
    pub from: String,
    /// The module it names.
    pub to: String,
}

/// `text` with comments and the contents of string and character
/// literals blanked (newlines kept, so line numbers stay right).
pub(super) fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && raw_start(&c, i) {
            // r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && char_literal_len(&c, i) > 0 {
            let n = char_literal_len(&c, i);
            out.push_str(&" ".repeat(n));
            i += n;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` starts a raw string (not the end of an
/// identifier).
fn raw_start(c: &[char], i: usize) -> bool {
    let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    let mut j = i + 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    !ident_before && c.get(j) == Some(&'"')
}

/// The length of the character literal at `i` (0: a lifetime or label).
fn char_literal_len(c: &[char], i: usize) -> usize {
    match (c.get(i + 1), c.get(i + 2)) {
        (Some('\\'), _) => {
            let mut j = i + 2;
            while j < c.len() && c[j] != '\'' && j < i + 12 {
                j += 1;
            }
            if c.get(j) == Some(&'\'') {
                j + 1 - i
            } else {
                0
            }
        }
        (Some(_), Some('\'')) => 3,
        _ => 0,
    }
}

/// A token of the cleaned source: an identifier (a macro's `$name` without
/// its `$`), or one punctuation character (`::` and `->` one token each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An identifier or keyword.
    Ident(String),
    /// Punctuation.
    Punct(String),
}

/// The tokens of cleaned `code` ([`code_only`]), each with its line.
pub fn tokens(code: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' || ch == '$' {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            out.push((Token::Ident(word.trim_start_matches('$').to_string()), line));
        } else if ch.is_whitespace() {
            i += 1;
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let p = if two == "::" || two == "->" {
                two
            } else {
                ch.to_string()
            };
            i += p.chars().count();
            out.push((Token::Punct(p), line));
        }
    }
    out
}

/// The top-level modules `text` (the source of `file`, relative to
/// `src/`, in top-level module `from`) names, with their lines.
pub fn imports_of(file: &str, from: &str, text: &str) -> Vec<Import> {
    let toks = tokens(&code_only(text));
    // The module depth of the file: `exit/mod.rs` and `bits.rs` are 1
    // below the crate root, `exit/io.rs` 2.
    let parts: Vec<&str> = file.split('/').collect();
    let file_depth = if parts.last().is_some_and(|f| *f == "mod.rs") {
        parts.len() - 1
    } else {
        parts.len()
    };
    let ident = |k: usize| match toks.get(k) {
        Some((Token::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let punct = |k: usize| match toks.get(k) {
        Some((Token::Punct(p), _)) => Some(p.as_str()),
        _ => None,
    };
    let mut found = Vec::new();
    let mut add = |to: &str, line: usize| {
        if to != from && to != "self" && to != "super" {
            found.push(Import {
                file: file.to_string(),
                line,
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    };
    // Inline `mod name {` blocks: the brace depth each opened at.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut k = 0;
    while k < toks.len() {
        let (tok, line) = &toks[k];
        match tok {
            Token::Punct(p) if p == "{" => braces += 1,
            Token::Punct(p) if p == "}" => {
                braces = braces.saturating_sub(1);
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
            }
            Token::Ident(w)
                if w == "mod" && punct(k + 2) == Some("{") && ident(k + 1).is_some() =>
            {
                inline_mods.push(braces);
            }
            Token::Ident(w) if w == "crate" && punct(k + 1) == Some("::") => {
                let prev_is_path = k > 0 && punct(k - 1) == Some("::");
                if !prev_is_path {
                    match (ident(k + 2), punct(k + 2)) {
                        (Some(m), _) => add(m, *line),
                        (None, Some("{")) => group(&toks, k + 2, &mut add),
                        _ => {}
                    }
                }
            }
            Token::Ident(w) if w == "super" && !(k > 0 && punct(k - 1) == Some("::")) => {
                // A chain `super::super::..::X`: from depth d it names X
                // at depth d - (number of supers) + 1.
                let mut n = 0;
                let mut j = k;
                while ident(j) == Some("super") && punct(j + 1) == Some("::") {
                    n += 1;
                    j += 2;
                }
                let depth = file_depth + inline_mods.len();
                if n >= depth {
                    match (ident(j), punct(j)) {
                        (Some(m), _) => add(m, toks[j].1),
                        (None, Some("{")) => group(&toks, j, &mut add),
                        _ => {}
                    }
                }
                k = j.max(k + 1);
                continue;
            }
            _ => {}
        }
        k += 1;
    }
    found
}

/// The first name of each path in the group `{ a::b, c, .. }` opening at
/// token `open`.
fn group(toks: &[(Token, usize)], open: usize, add: &mut impl FnMut(&str, usize)) {
    let mut depth = 0;
    let mut expect_first = true;
    for (tok, line) in &toks[open..] {
        match tok {
            Token::Punct(p) if p == "{" => {
                depth += 1;
                expect_first = depth == 1;
            }
            Token::Punct(p) if p == "}" => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            Token::Punct(p) if p == "," && depth == 1 => expect_first = true,
            Token::Ident(m) if depth == 1 && expect_first => {
                add(m, *line);
                expect_first = false;
            }
            _ => expect_first = false,
        }
    }
}
