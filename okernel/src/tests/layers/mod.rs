//! The layers of the monitor (issue 14 item 2): its top-level modules
//! import each other without cycles, in the order [`LAYERS`] declares
//! (`docs/developer-guide.md`, "Layers"). Read from the source tree at
//! test time: every `crate::X` path (a `use` or a path in code, `crate::{X,
//! ..}` groups and `super::` chains that climb to the crate root included)
//! outside comments and string literals is an import of top-level module
//! `X`, which must sit in a lower layer than the importing file's own.
//! `tests/` (this directory) is outside the layers.
//!
//! No call climbs either ([`methods`]): a method that a module adds to a
//! lower layer's type (the RIP advance `crate::exit::rip` adds to
//! `Vcpu`) is called only from the adding layer and above. The last such
//! call, the hypercall layer's RIP advance after every VMCALL, went in
//! issue 14: a hypercall handler returns what becomes of the VMCALL
//! (`crate::hypercall::Vmcall`) and the exit layer advances RIP.

mod methods;
mod scan;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use self::methods::Added;
pub use self::scan::{Import, imports_of};

/// The layers, lowest first. A module may import only modules of lower
/// layers (never one of its own layer, never one above).
pub const LAYERS: &[&[&str]] = &[
    // Data that names no other module, and the seam's build switches.
    &["bits", "fmt", "memmap", "msrs", "seam"],
    // The VMX architecture as typed data.
    &["vmx"],
    // The inline assembly.
    &["arch"],
    // The hardware-access traits, their real and fake implementations.
    &["hw"],
    // Capability checks; guest-physical memory through the EPT views.
    &["check", "mem"],
    // The protection policy, the audit log, the policy's `Views`.
    &["policy"],
    // The virtual CPU, its guest memory and exit hooks.
    &["vcpu"],
    // VMCALL.
    &["hypercall"],
    // One handler per exit reason; the exit dispatcher.
    &["exit"],
    // VM fuzzing (feature-gated): the seam's implementations.
    &["fuzz"],
    // Bring-up and the run loop.
    &["launch"],
];

/// The layer of `module`, if declared.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file under `dir`, relative to `root`, sorted.
fn sources(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.strip_prefix(root).expect("under src").to_path_buf());
        }
    }
}

/// One source file of a top-level module.
struct Source {
    /// Relative to `src/`.
    rel: String,
    /// Its top-level module.
    top: String,
    /// Its text.
    text: String,
}

/// Every source file of the top-level modules (`lib.rs` and `tests/`
/// left out).
fn files() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&root, &root, &mut paths);
    let mut out = Vec::new();
    for f in paths {
        let rel = f.to_string_lossy().replace('\\', "/");
        let top = rel.split('/').next().unwrap_or_default();
        let top = top.strip_suffix(".rs").unwrap_or(top).to_string();
        if top == "lib" || top == "tests" {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&f)).expect("readable source");
        out.push(Source { rel, top, text });
    }
    out
}

/// The source tree's top-level modules and every import between them.
fn tree() -> (BTreeSet<String>, Vec<Import>) {
    let mut modules = BTreeSet::new();
    let mut all = Vec::new();
    for f in files() {
        all.extend(imports_of(&f.rel, &f.top, &f.text));
        modules.insert(f.top);
    }
    (modules, all)
}

/// The methods modules add to other modules' types, and every call that
/// climbs to one: from a module of a lower layer than the adding one's,
/// one line each.
fn climbing_calls(sources: &[Source]) -> (Vec<Added>, Vec<String>) {
    let mut defined: Vec<(String, String)> = Vec::new();
    for f in sources {
        for ty in methods::types_defined(&f.text) {
            defined.push((f.top.clone(), ty));
        }
    }
    let mut added = Vec::new();
    for f in sources {
        let own = |ty: &str| defined.iter().any(|(m, t)| *m == f.top && t == ty);
        added.extend(methods::added_methods(&f.rel, &f.top, &f.text, own));
    }
    let names: Vec<&str> = added.iter().map(|a| a.name.as_str()).collect();
    let mut bad = Vec::new();
    for f in sources {
        for call in methods::calls_of(&f.rel, &f.top, &f.text, &names) {
            for a in added.iter().filter(|a| a.name == call.name) {
                if let (Some(from), Some(to)) = (layer(&call.from), layer(&a.module))
                    && to > from
                {
                    bad.push(format!(
                        "okernel/src/{}:{}: `{}` (layer {from}) calls `{}::{}`, which \
                         `{}` (layer {to}) adds in {}: a call up a layer",
                        call.file, call.line, call.from, a.ty, a.name, a.module, a.file
                    ));
                }
            }
        }
    }
    (added, bad)
}

/// What is wrong with `imports` against [`LAYERS`], one line each.
pub fn violations(imports: &[Import]) -> Vec<String> {
    let mut bad = Vec::new();
    for i in imports {
        match (layer(&i.from), layer(&i.to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(a), Some(b)) => bad.push(format!(
                "okernel/src/{}:{}: `{}` (layer {a}) imports `{}` (layer {b}): \
                 only lower layers may be imported",
                i.file, i.line, i.from, i.to
            )),
            (None, _) => bad.push(format!(
                "okernel/src/{}:{}: module `{}` is in no layer of tests/layers.rs",
                i.file, i.line, i.from
            )),
            (_, None) => bad.push(format!(
                "okernel/src/{}:{}: `{}` names `crate::{}`, which is in no layer",
                i.file, i.line, i.from, i.to
            )),
        }
    }
    bad
}

#[test]
fn every_top_level_module_is_in_one_layer() {
    let (modules, _) = tree();
    let declared: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|l| l.iter().map(|m| m.to_string()))
        .collect();
    assert_eq!(
        modules, declared,
        "okernel/src's top-level modules (left) and the layers of tests/layers.rs (right) differ"
    );
    assert_eq!(
        declared.len(),
        LAYERS.iter().map(|l| l.len()).sum::<usize>(),
        "a module is declared in two layers"
    );
}

#[test]
fn modules_import_only_lower_layers() {
    let (_, imports) = tree();
    assert!(
        imports.len() > 100,
        "the scan found only {} imports",
        imports.len()
    );
    let bad = violations(&imports);
    assert!(
        bad.is_empty(),
        "{} import(s) against the layer order:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_scan_finds_every_form_of_import_and_nothing_else() {
    let text = r#"
//! Docs naming [`crate::launch`] do not count.
use crate::vmx::fields::Guest32;
use crate::{hw::Cpu, policy};
/* nor does crate::exit in a block comment */
fn f() -> u64 {
    let s = "crate::launch in a string";
    let c = '"';
    crate::bits::CR0_PE + super::super::msrs::EFER
}
mod inner {
    use super::super::Sibling;
}
"#;
    let found: Vec<(String, usize)> = imports_of("policy/x.rs", "policy", text)
        .into_iter()
        .map(|i| (i.to, i.line))
        .collect();
    let want = [("vmx", 3), ("hw", 4), ("bits", 9), ("msrs", 9)];
    let want: Vec<(String, usize)> = want.iter().map(|(m, l)| (m.to_string(), *l)).collect();
    assert_eq!(found, want);
}

#[test]
fn an_import_cycle_is_named_with_its_file_and_line() {
    // hypercall uses the vCPU, and exit dispatches VMCALL to hypercall;
    // a hypercall file that names exit again closes a cycle.
    let mut imports = imports_of("exit/mod.rs", "exit", "use crate::hypercall::Fast;\n");
    imports.extend(imports_of(
        "hypercall/mod.rs",
        "hypercall",
        "\n\nuse crate::exit::ExitError;\n",
    ));
    let bad = violations(&imports);
    assert_eq!(
        bad,
        [
            "okernel/src/hypercall/mod.rs:3: `hypercall` (layer 7) imports `exit` (layer 8): \
          only lower layers may be imported"
        ]
    );
}

#[test]
fn no_call_climbs_to_a_method_a_higher_layer_adds() {
    let (added, bad) = climbing_calls(&files());
    assert!(
        added
            .iter()
            .any(|a| a.module == "exit" && a.ty == "Vcpu" && a.name == "advance_rip_in"),
        "the scan did not find the RIP advance exit adds to Vcpu: {added:?}"
    );
    assert!(
        bad.is_empty(),
        "{} call(s) up the layer order:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn a_climbing_call_is_named_with_its_file_and_line() {
    let exit = r#"
impl<V: Vmcs, M: GuestMemory> Vcpu<V, M> {
    /// Moves past the instruction.
    pub fn advance_rip_in(&mut self, mode: &mut Option<bool>) -> R {
        self.advance(mode)
    }
    fn advance(&mut self) {}
    pub(super) fn blocking(&mut self) {}
}
impl<V: Vmcs> Display for Vcpu<V> {
    fn fmt(&self) {}
}
fn slow(handle: impl FnOnce(&mut Vcpu<V>) -> R) -> R {
    fn inner() {}
}
"#;
    let hypercall = r#"
// vcpu.advance_rip_in(&mut mode) in a comment does not count
fn complete(vcpu: &mut Vcpu) -> R {
    let s = "vcpu.advance_rip_in(x)";
    vcpu.advance_rip_in(&mut None)
}
"#;
    let sources = [
        Source {
            rel: "vcpu/guest.rs".into(),
            top: "vcpu".into(),
            text: "pub struct Vcpu<V> { v: V }\n".into(),
        },
        Source {
            rel: "exit/rip.rs".into(),
            top: "exit".into(),
            text: exit.into(),
        },
        Source {
            rel: "hypercall/mod.rs".into(),
            top: "hypercall".into(),
            text: hypercall.into(),
        },
        Source {
            rel: "fuzz/planted.rs".into(),
            top: "fuzz".into(),
            text: "fn f(v: &mut Vcpu) { v.advance_rip_in(&mut None); }\n".into(),
        },
    ];
    let (added, bad) = climbing_calls(&sources);
    let names: Vec<&str> = added.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["advance_rip_in"]);
    assert_eq!(
        bad,
        [
            "okernel/src/hypercall/mod.rs:5: `hypercall` (layer 7) calls `Vcpu::advance_rip_in`, \
             which `exit` (layer 8) adds in exit/rip.rs: a call up a layer"
        ]
    );
}
