//! `cargo xtask tcb`: the trusted computing base of the production image,
//! recomputed from the build itself (issue 14, "a lean image").
//!
//! - **Code lines** per monitor crate and per top-level module of
//!   `okernel`: the `.rs` files under `<crate>/src/` that rustc compiled
//!   into the production `okernel-loader` (cargo's dep-info of the binary,
//!   so `tests/` folders, `#[cfg(test)] mod tests;` files and the
//!   feature-gated `okernel/src/fuzz/` are out because they are not
//!   compiled), counting non-blank lines that are not `//` comments (doc
//!   comments included) nor inside `/* */` blocks, and leaving out every
//!   item marked `#[cfg(test)]` (inline test modules) or
//!   `#[cfg(feature = "...")]` for a feature the image does not turn on
//!   (`fuzz`, `fake`, the planted defects; multi-line `cfg(any(..))`
//!   attributes are not recognised, and their items are counted).
//! - **Dependencies**: `cargo tree` of the loader with the image's
//!   features for the bare-metal target, normal edges: the crates whose
//!   code is in the image, then those that only run at build time (proc
//!   macros and what they use).
//! - **Sizes**: `.text` and `.rodata` of `target/okernel/okernel.elf`.

use crate::images::{self, TARGET};
use elf::ElfBytes;
use elf::endian::AnyEndian;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates of the monitor image, in the order they are reported.
const CRATES: [&str; 5] = ["okernel", "ept", "loader", "abi", "console"];

/// Builds the images as `cargo xtask build` does and prints the report.
pub fn tcb() -> Result<bool, String> {
    let built = images::build()?;
    let root = images::root();
    let sources = compiled_sources(&dep_info_path(&root))?;
    println!("\nTrusted computing base of {}", built.okernel.display());
    println!(
        "\ncode lines (non-blank, non-comment, without #[cfg(test)] and fuzz/fake/\n\
         planted-feature items) of the .rs files rustc compiled into the image\n\
         (okernel-loader.d):"
    );
    let mut total = 0;
    for krate in CRATES {
        let dir = root.join(krate).join("src");
        let mut modules: BTreeMap<String, usize> = BTreeMap::new();
        for file in sources.iter().filter(|f| f.starts_with(&dir)) {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let module = top_module(file.strip_prefix(&dir).unwrap_or(file));
            *modules.entry(module).or_default() += code_lines(&text);
        }
        let lines: usize = modules.values().sum();
        total += lines;
        println!("  {krate:<10} {lines:>6}");
        if krate == "okernel" {
            for (module, n) in &modules {
                println!("    {module:<12} {n:>6}");
            }
        }
    }
    println!("  {:<10} {total:>6}", "total");

    let image = dependencies(&["normal", "no-proc-macro"])?;
    let build_time: BTreeSet<String> = dependencies(&["normal", "build"])?
        .difference(&image)
        .cloned()
        .collect();
    println!(
        "\ndependencies in the image (cargo tree -p loader --features loader/image \
         --target {TARGET} -e normal,no-proc-macro), workspace crates left out:"
    );
    for d in &image {
        println!("  {d}");
    }
    println!("build time only (proc macros and their dependencies):");
    for d in &build_time {
        println!("  {d}");
    }

    let data = std::fs::read(&built.okernel)
        .map_err(|e| format!("reading {}: {e}", built.okernel.display()))?;
    println!();
    for section in [".text", ".rodata"] {
        println!("{section:<8} {:>8} bytes", section_size(&data, section)?);
    }
    Ok(true)
}

/// Cargo's dep-info of the loader binary: every local source file of
/// every crate compiled into it (cargo honours `CARGO_TARGET_DIR`, as
/// `images` does).
fn dep_info_path(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(TARGET)
        .join("release/okernel-loader.d")
}

/// The `.rs` files a dep-info file lists (`target: dep dep ...`).
fn compiled_sources(dep_info: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(dep_info)
        .map_err(|e| format!("reading {}: {e}", dep_info.display()))?;
    Ok(parse_dep_info(&text))
}

fn parse_dep_info(text: &str) -> Vec<PathBuf> {
    let first = text.lines().next().unwrap_or("");
    let deps = first.split_once(": ").map_or("", |(_, d)| d);
    // Spaces inside a path are escaped as `\ `.
    let deps = deps.replace("\\ ", "\u{0}");
    deps.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// The top-level module a file under `src/` belongs to: `exit/mod.rs` →
/// `exit`, `bits.rs` → `bits`, `lib.rs` → `lib`.
fn top_module(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// The crates (`name vX.Y.Z`) of the image's dependency graph over the
/// edge kinds `edges`, workspace crates left out.
fn dependencies(edges: &[&str]) -> Result<BTreeSet<String>, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(images::root())
        .args(["tree", "-p", "loader", "--features", "loader/image"])
        .args(["--target", TARGET, "-e", &edges.join(",")])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_tree(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_tree(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.trim_end_matches(" (*)").trim_end_matches(" (proc-macro)"))
        .filter(|l| !l.is_empty() && !l.ends_with(')'))
        .map(str::to_string)
        .collect()
}

/// The size of section `name` of an ELF image.
fn section_size(data: &[u8], name: &str) -> Result<u64, String> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(data).map_err(|e| e.to_string())?;
    let header = file
        .section_header_by_name(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the image has no {name} section"))?;
    Ok(header.sh_size)
}

/// Non-blank lines that are neither comments nor part of an item kept
/// out of the image ([`not_in_image`]).
fn code_lines(text: &str) -> usize {
    let mut count = 0;
    let mut in_block = false;
    // Inside a `#[cfg(test)]` item: `Some(depth)` of its braces once
    // opened, `None` before its first line.
    let mut skipping: Option<Option<i32>> = None;
    for line in text.lines() {
        let t = line.trim();
        if in_block {
            in_block = !t.contains("*/");
            continue;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        if t.starts_with("/*") {
            in_block = !t.contains("*/");
            continue;
        }
        if not_in_image(t) && skipping.is_none() {
            skipping = Some(None);
            continue;
        }
        if let Some(depth) = skipping {
            let opened = depth.is_some() || t.contains('{');
            let depth = depth.unwrap_or(0) + brace_balance(t);
            skipping = match (opened, t.starts_with("#[")) {
                // Further attributes of the item.
                (false, true) => Some(None),
                (false, false) if t.ends_with(';') => None,
                (false, false) => Some(None),
                (true, _) if depth <= 0 => None,
                (true, _) => Some(Some(depth)),
            };
            continue;
        }
        count += 1;
    }
    count
}

/// Whether `line` is a `cfg` attribute that keeps the next item out of
/// the production image: `test`, or a feature other than `image` (the
/// only one the image's build turns on).
fn not_in_image(line: &str) -> bool {
    line == "#[cfg(test)]"
        || line
            .strip_prefix("#[cfg(feature = \"")
            .is_some_and(|rest| !rest.starts_with("image\""))
}

/// `{` minus `}` on a line, outside string and character literals and
/// after `//`.
fn brace_balance(line: &str) -> i32 {
    let mut balance = 0;
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => in_str = false,
            (true, _) => {}
            (false, '"') => in_str = true,
            (false, '/') if chars.peek() == Some(&'/') => break,
            (false, '\'') => {
                // A character literal such as '{' or '\''.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.nth(2);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                }
            }
            (false, '{') => balance += 1,
            (false, '}') => balance -= 1,
            (false, _) => {}
        }
    }
    balance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_test_items_are_not_code() {
        let src = "//! doc\n\
                   use a::b; // trailing comment is code\n\
                   \n\
                   /* block\n   still block */\n\
                   /// doc\n\
                   fn f() {\n    let s = \"{\";\n    let c = '}';\n}\n\
                   #[cfg(test)]\n\
                   mod tests;\n\
                   #[cfg(test)]\n\
                   #[allow(unused)]\n\
                   mod t {\n    fn g() { if x { } }\n    const S: &str = \"}}\";\n}\n\
                   const AFTER: u8 = 1;\n";
        // `use`, `fn f() {`, the two `let`s, `}`, `const AFTER`.
        assert_eq!(code_lines(src), 6);
    }

    #[test]
    fn a_one_line_test_item_ends_at_its_semicolon() {
        let src = "#[cfg(test)]\nuse std::vec::Vec;\nfn f() {}\n";
        assert_eq!(code_lines(src), 1);
    }

    #[test]
    fn feature_gated_items_count_only_for_the_image_feature() {
        let src = "#[cfg(feature = \"fuzz\")]\ntype M = F;\n\
                   #[cfg(not(feature = \"fuzz\"))]\ntype M = P;\n\
                   #[cfg(feature = \"image\")]\nmod entry;\n";
        assert_eq!(code_lines(src), 4);
    }

    #[test]
    fn dep_info_lists_rust_sources_only() {
        let d = "/t/okernel-loader: /w/abi/src/lib.rs /w/loader/link.ld /w/a\\ b/src/x.rs\n";
        assert_eq!(
            parse_dep_info(d),
            [
                PathBuf::from("/w/abi/src/lib.rs"),
                PathBuf::from("/w/a b/src/x.rs")
            ]
        );
    }

    #[test]
    fn modules_are_the_first_component() {
        assert_eq!(top_module(Path::new("exit/mod.rs")), "exit");
        assert_eq!(top_module(Path::new("bits.rs")), "bits");
    }

    #[test]
    fn tree_lines_lose_markers_and_workspace_crates() {
        let t = "loader v0.1.0 (/w/loader)\nx86_64 v0.15.5\nx86_64 v0.15.5 (*)\n\
                 const_fn v0.4.12 (proc-macro)\n";
        let got: Vec<_> = parse_tree(t).into_iter().collect();
        assert_eq!(got, ["const_fn v0.4.12", "x86_64 v0.15.5"]);
    }
}
