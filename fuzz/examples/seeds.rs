//! Writes the seed corpora of the byte-oriented targets into
//! `fuzz/corpus/<target>/`: real boot information built by the same
//! builders the loader's tests use, tiny ELF images, command lines. The
//! structured targets (hypercall, exit, ept_ops, qualification, handoff)
//! get a few fixed byte patterns. Run it with
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (no fuzzing
//! flags needed); the files are committed.

use std::fs;
use std::path::Path;

use loader::bootinfo::{PVH_MAGIC, StartInfo};
use multiboot2::{Builder, CommandLineTag, MemoryArea, MemoryAreaType, MemoryMapTag, ModuleTag};
use multiboot2_common::MaybeDynSized;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn multiboot2_info(cmdline: &str, modules: &[(u32, u32, &str)]) -> Vec<u8> {
    let mut b = Builder::new()
        .cmdline(CommandLineTag::new(cmdline))
        .mmap(MemoryMapTag::new(&[
            MemoryArea::new(0, 0x9_fc00, MemoryAreaType::Available),
            MemoryArea::new(0x10_0000, 0x7ee_0000, MemoryAreaType::Available),
            MemoryArea::new(0xfffc_0000, 0x4_0000, MemoryAreaType::Reserved),
        ]));
    for &(s, e, c) in modules {
        b = b.add_module(ModuleTag::new(s, e, c));
    }
    b.build().as_bytes().to_vec()
}

/// PVH memory: the start info at 0, the memory map at 0x40, the module
/// list at 0xa0, strings at 0xc0 and 0xe0.
fn pvh(modules: u32) -> Vec<u8> {
    let mut m = vec![0u8; 0x100];
    let si = StartInfo {
        magic: PVH_MAGIC,
        version: 1,
        nr_modules: modules,
        modlist_paddr: if modules > 0 { 0xa0 } else { 0 },
        cmdline_paddr: 0xe0,
        rsdp_paddr: 0,
        memmap_paddr: 0x40,
        memmap_entries: 3,
    };
    m[..56].copy_from_slice(&si.to_bytes());
    let mut at = 0x40;
    for (base, len, ty) in [
        (0u64, 0x9_fc00u64, 1u32),
        (0x10_0000, 0x7f0_0000, 1),
        (0xfee0_0000, 0x1000, 2),
    ] {
        m[at..at + 8].copy_from_slice(&base.to_le_bytes());
        m[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
        m[at + 16..at + 20].copy_from_slice(&ty.to_le_bytes());
        at += 24;
    }
    m[0xa0..0xa8].copy_from_slice(&0x20_0000u64.to_le_bytes());
    m[0xa8..0xb0].copy_from_slice(&0x1_0000u64.to_le_bytes());
    m[0xb0..0xb8].copy_from_slice(&0xc0u64.to_le_bytes());
    m[0xc0..0xce].copy_from_slice(b"scenario=boot\0");
    m[0xe0..0xe9].copy_from_slice(b"log=info\0");
    m
}

/// A minimal ELF64 x86-64 executable: one PT_LOAD of `code` at `addr`
/// (memory size one page), entry at its start.
fn elf64(addr: u64, code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 64 + 56];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&addr.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    let offset = f.len() as u64;
    f[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
    f[ph + 16..ph + 24].copy_from_slice(&addr.to_le_bytes());
    f[ph + 24..ph + 32].copy_from_slice(&addr.to_le_bytes());
    f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[ph + 40..ph + 48].copy_from_slice(&0x1000u64.to_le_bytes());
    f[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

/// A minimal ELF32 i386 executable with a multiboot2 header.
fn elf32_multiboot2(addr: u32) -> Vec<u8> {
    let mut f = vec![0u8; 52 + 32];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 1; // ELFCLASS32
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..28].copy_from_slice(&addr.to_le_bytes());
    f[28..32].copy_from_slice(&52u32.to_le_bytes());
    f[40..42].copy_from_slice(&52u16.to_le_bytes());
    f[42..44].copy_from_slice(&32u16.to_le_bytes());
    f[44..46].copy_from_slice(&1u16.to_le_bytes());
    let ph = 52;
    let offset = 88u32; // 8-aligned, after the headers
    f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
    f[ph + 4..ph + 8].copy_from_slice(&offset.to_le_bytes());
    f[ph + 8..ph + 12].copy_from_slice(&addr.to_le_bytes());
    f[ph + 12..ph + 16].copy_from_slice(&addr.to_le_bytes());
    f[ph + 16..ph + 20].copy_from_slice(&24u32.to_le_bytes());
    f[ph + 20..ph + 24].copy_from_slice(&0x1000u32.to_le_bytes());
    f[ph + 24..ph + 28].copy_from_slice(&5u32.to_le_bytes());
    f.resize(offset as usize, 0);
    // Multiboot2 header: magic, arch 0, length 24, checksum; end tag.
    let (magic, len) = (0xE852_50D6u32, 24u32);
    for w in [
        magic,
        0,
        len,
        0u32.wrapping_sub(magic.wrapping_add(len)),
        0,
        8,
    ] {
        f.extend_from_slice(&w.to_le_bytes());
    }
    f
}

/// Checks that the parser seeds are accepted (a seed that is refused at
/// once explores little).
fn check_seeds() {
    use loader::memmap::{FirmwareKind, MemoryMap};
    let mut ram = MemoryMap::new();
    ram.add(0x10_0000, 0x7f0_0000, FirmwareKind::Usable)
        .expect("room");
    for image in [
        elf64(0x20_0000, &[0xf4, 0xeb, 0xfd]),
        elf32_multiboot2(0x20_0000),
    ] {
        if let Err(e) = loader::elf_load::plan(&image, &ram, &[]) {
            panic!("ELF seed refused: {e}");
        }
    }
    for m in [pvh(0), pvh(1)] {
        if let Err(e) = loader::bootinfo::parse_pvh(&okernel_fuzz::PhysSlice(&m), 0) {
            panic!("PVH seed refused: {e}");
        }
    }
    let words = okernel_fuzz::aligned_copy(&multiboot2_info("x", &[(0x20_0000, 0x28_0000, "m")]));
    // SAFETY: `words` is 8-aligned and holds the whole structure, which
    // the builder sized; it outlives the parse.
    let parsed = unsafe { loader::bootinfo::parse_multiboot2(words.as_ptr().cast()) };
    if let Err(e) = parsed {
        panic!("multiboot2 seed refused: {e}");
    }
}

fn main() {
    check_seeds();
    write(
        "multiboot2",
        "grub-like",
        &multiboot2_info("log=debug", &[(0x20_0000, 0x28_0000, "scenario=boot")]),
    );
    write(
        "multiboot2",
        "two-modules",
        &multiboot2_info(
            "",
            &[(0x20_0000, 0x28_0000, "a"), (0x30_0000, 0x30_1000, "")],
        ),
    );
    write("pvh", "one-module", &pvh(1));
    write("pvh", "no-module", &pvh(0));
    write("elf_plan", "elf64", &elf64(0x20_0000, &[0xf4, 0xeb, 0xfd]));
    write("elf_plan", "elf32-multiboot2", &elf32_multiboot2(0x20_0000));
    for (i, line) in [
        "log=debug mode=vmx -- scenario=attacks protect=on",
        "mode=direct",
        "log=trace --",
        "",
    ]
    .iter()
    .enumerate()
    {
        write("cmdline", &format!("line{i}"), line.as_bytes());
    }
    for t in [
        "hypercall",
        "exit",
        "ept_ops",
        "qualification",
        "handoff",
        "planted",
    ] {
        write(t, "zeros", &[0u8; 64]);
        let ramp: Vec<u8> = (0..=255u8).collect();
        write(t, "ramp", &ramp);
    }
}
