//! Linux's ELF vmlinux by its PVH entry: the note is found (or its
//! absence named), the boot is planned as a whole (modules moved clear of
//! the kernel, start info and frame pool placed, no overlap), and the
//! `hvm_start_info` reads back through okernel's own PVH parser.

use host_tests::linux::{OKERNEL, r, ram};
use loader::bootinfo::{PVH_MAGIC, PhysMem, acpi_rsdp, parse_pvh};
use loader::elf_load::ImageKind;
use loader::handoff::Carve;
use loader::linux::start_info::{self, Contents, StartInfoError};
use loader::linux::{is_bzimage, layout, pvh_entry};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};
use okernel_abi::boot::GuestMemoryKind as Kind;

const KERNEL_VIRT: u64 = 0xffff_ffff_8000_0000;
const LOAD: u64 = 0x100_0000;
const ENTRY: u64 = 0x100_0850;

/// A Linux-like ELF64: PT_LOADs linked at `KERNEL_VIRT + paddr`, then a
/// PT_NOTE holding `notes`.
fn vmlinux(segments: &[(u64, usize)], notes: &[u8]) -> Vec<u8> {
    let phnum = segments.len() + 1;
    let mut out = vec![0u8; 64 + 56 * phnum];
    out[..6].copy_from_slice(b"\x7fELF\x02\x01");
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&(KERNEL_VIRT + LOAD).to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let phdr =
        |i: usize, ty: u32, off: u64, vaddr: u64, paddr: u64, size: u64, out: &mut Vec<u8>| {
            let p = 64 + 56 * i;
            out[p..p + 4].copy_from_slice(&ty.to_le_bytes());
            out[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            out[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            out[p + 32..p + 40].copy_from_slice(&size.to_le_bytes());
            out[p + 40..p + 48].copy_from_slice(&size.to_le_bytes());
        };
    for (i, &(paddr, len)) in segments.iter().enumerate() {
        let off = out.len() as u64;
        out.resize(out.len() + len, 0x90);
        phdr(i, 1, off, KERNEL_VIRT + paddr, paddr, len as u64, &mut out);
    }
    let off = out.len() as u64;
    out.extend_from_slice(notes);
    phdr(segments.len(), 4, off, 0, 0, notes.len() as u64, &mut out);
    out
}

fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&ty.to_le_bytes());
    n.extend_from_slice(name);
    n.resize(n.len().next_multiple_of(4), 0);
    n.extend_from_slice(desc);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

fn linux_notes() -> Vec<u8> {
    let mut n = note(b"Xen\0", 6, b"linux\0");
    n.extend(note(b"GNU\0", 18, &[1; 20]));
    n.extend(note(b"Xen\0", 18, &ENTRY.to_le_bytes()));
    n
}

fn kernel() -> Vec<u8> {
    vmlinux(&[(LOAD, 0x3000), (LOAD + 0x4000, 0x1000)], &linux_notes())
}

#[test]
fn finds_the_pvh_entry_note() {
    assert_eq!(pvh_entry(&kernel()), Some(ENTRY));
    let four = vmlinux(
        &[(LOAD, 0x1000)],
        &note(b"Xen\0", 18, &0x100_0000u32.to_le_bytes()),
    );
    assert_eq!(pvh_entry(&four), Some(0x100_0000));
    // Another owner's type 18, or no note at all: not Linux PVH.
    assert_eq!(
        pvh_entry(&vmlinux(&[(LOAD, 0x1000)], &note(b"GNU\0", 18, &[0; 8]))),
        None
    );
    assert_eq!(pvh_entry(&vmlinux(&[(LOAD, 0x1000)], &[])), None);
    assert_eq!(pvh_entry(b"\x7fELF\x02\x01"), None);
    assert_eq!(pvh_entry(b"MZ not an ELF"), None);
    // A truncated note segment is not read past its end.
    let mut bad = kernel();
    let len = bad.len();
    bad.truncate(len - 4);
    assert_eq!(pvh_entry(&bad), None);
}

fn bzimage() -> Vec<u8> {
    let mut bz = vec![0u8; 0x400];
    bz[0x1fe] = 0x55;
    bz[0x1ff] = 0xaa;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz
}

#[test]
fn recognises_a_bzimage() {
    assert!(is_bzimage(&bzimage()));
    assert!(!is_bzimage(&kernel()));
    assert_eq!(pvh_entry(&bzimage()), None);
}

#[test]
fn moves_modules_that_lie_in_the_load_range() {
    let image = kernel();
    // GRUB-like: both modules low, straddling the kernel's load range.
    let module = r(0x80_0000, 0x80_0000 + image.len() as u64);
    let initrd = r(0x100_4000, 0x100_6000);
    let l = layout(&image, module, initrd, &ram(64), &[OKERNEL], 0x40_0000).unwrap();
    assert_eq!(l.plan.kind, ImageKind::LinuxPvh);
    assert_eq!(l.plan.entry, ENTRY);
    assert_eq!(l.plan.extent, r(LOAD, LOAD + 0x5000));
    let segs: Vec<_> = l.plan.segments().map(|s| s.dest).collect();
    assert_eq!(
        segs,
        [r(LOAD, LOAD + 0x3000), r(LOAD + 0x4000, LOAD + 0x5000)]
    );
    // The module does not overlap the load range: it stays.
    assert_eq!(l.kernel_move, None);
    assert_eq!(l.kernel_source(module), module);
    let m = l.initrd_move.expect("the initrd overlaps the kernel");
    assert_eq!(m.from, initrd);
    assert_eq!(l.initrd, m.to);
    let placed = [l.initrd, l.area, l.pool];
    let fixed = [OKERNEL.range, module, initrd, l.plan.extent];
    for (i, a) in placed.iter().enumerate() {
        assert!(ram(64).is_usable(a), "{a}");
        assert!(fixed.iter().all(|f| !f.overlaps(a)), "{a}");
        assert!(placed[i + 1..].iter().all(|b| !b.overlaps(a)), "{a}");
    }
    assert_eq!(l.area.len(), start_info::AREA_SIZE as u64);
    assert_eq!(l.pool.len(), 0x40_0000);

    let module = r(LOAD - 0x1000, LOAD - 0x1000 + image.len() as u64);
    let l = layout(
        &image,
        module,
        r(0x30_0000, 0x30_1000),
        &ram(64),
        &[OKERNEL],
        0x40_0000,
    )
    .unwrap();
    let m = l.kernel_move.expect("the module overlaps the load range");
    assert_eq!(l.kernel_source(module), m.to);
    assert!(!m.to.overlaps(&l.plan.extent) && !m.to.overlaps(&module));
    assert_eq!(l.initrd_move, None);
}

#[test]
fn refuses_with_the_cause() {
    let image = kernel();
    let module = r(0x20_0000, 0x20_0000 + image.len() as u64);
    let initrd = r(0x30_0000, 0x30_1000);
    let e = |image: &[u8], initrd: PhysRange, mib: u64, pool: u64| {
        layout(image, module, initrd, &ram(mib), &[OKERNEL], pool)
            .unwrap_err()
            .to_string()
    };
    let no_note = vmlinux(&[(LOAD, 0x1000)], &note(b"Xen\0", 6, b"linux\0"));
    assert!(e(&no_note, initrd, 64, 0x1000).contains("no PVH entry note"));
    assert!(e(&image, r(0x14_0000, 0x16_0000), 64, 0x1000).contains("overlaps the okernel image"));
    assert!(e(&image, r(0x20_1000, 0x20_2000), 64, 0x1000).contains("overlaps the kernel module"));
    // 17 MiB of RAM: the kernel fits, a 16 MiB pool does not.
    let msg = e(&image, initrd, 17, 16 << 20);
    assert!(
        msg.contains("memory too small") && msg.contains("frame pool"),
        "{msg}"
    );
    // The load range itself outside RAM.
    let msg = e(&image, initrd, 16, 0x1000);
    assert!(msg.contains("outside usable RAM"), "{msg}");
    let high = vmlinux(
        &[(LOAD, 0x1000)],
        &note(b"Xen\0", 18, &(5u64 << 32).to_le_bytes()),
    );
    assert!(e(&high, initrd, 64, 0x1000).contains("above 4 GiB"));
}

/// Physical memory backed by a buffer at `base`.
struct Buf {
    base: u64,
    bytes: Vec<u8>,
}

impl PhysMem for Buf {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let at = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.bytes.get(at..at.checked_add(len)?)
    }
}

#[test]
fn start_info_reads_back_with_okernel_reserved() {
    let base = 0x20_0000;
    let mut area = [0u8; start_info::AREA_SIZE];
    let fw = ram(64);
    let carves = [
        Carve {
            range: OKERNEL.range,
            kind: Kind::Monitor,
        },
        Carve {
            range: r(base, base + start_info::AREA_SIZE as u64),
            kind: Kind::BootData,
        },
        Carve {
            range: r(0x40_0000, 0x80_0000),
            kind: Kind::Monitor,
        },
    ];
    let rsdp = *b"RSD PTR \x00\x01\x02\x03\x04\x05\x00\x00\x00\x00";
    let c = Contents {
        firmware: &fw,
        carves: &carves,
        cmdline: "console=ttyS0 quiet",
        initrd: r(0x90_0000, 0x91_0000),
        rsdp: Some(&rsdp),
    };
    let info = start_info::build(&mut area, base, &c).unwrap();
    assert_eq!(info, base);
    let mem = Buf {
        base,
        bytes: area.to_vec(),
    };
    let bi = parse_pvh(&mem, info).unwrap();
    assert_eq!(bi.cmdline, "console=ttyS0 quiet");
    let mods: Vec<_> = bi.modules().map(|m| m.range).collect();
    assert_eq!(mods, [r(0x90_0000, 0x91_0000)]);
    assert_eq!(
        u32::from_le_bytes(area[0..4].try_into().unwrap()),
        PVH_MAGIC
    );
    let rsdp_paddr = u64::from_le_bytes(area[32..40].try_into().unwrap());
    let at = (rsdp_paddr - base) as usize;
    assert_eq!(&area[at..at + rsdp.len()], &rsdp);
    // okernel's image, the area and the pool are no longer usable RAM;
    // the rest of RAM is, and the ACPI region keeps its kind.
    let map = &bi.memory;
    for carve in &carves {
        assert!(
            !map.usable().any(|u| u.overlaps(&carve.range)),
            "{}",
            carve.range
        );
    }
    assert!(map.is_usable(&r(0x80_0000, 0x3ff_0000)));
    assert!(map.is_usable(&r(0, 0x9_f000)));
    assert!(
        map.regions().iter().any(
            |g| g.kind == FirmwareKind::AcpiReclaimable && g.range == r(0x3ff_0000, 0x400_0000)
        )
    );
    // Without an RSDP the field is 0 (Linux scans for it).
    let c = Contents { rsdp: None, ..c };
    start_info::build(&mut area, base, &c).unwrap();
    assert_eq!(u64::from_le_bytes(area[32..40].try_into().unwrap()), 0);
}

#[test]
fn start_info_refuses_what_does_not_fit() {
    let mut area = [0u8; start_info::AREA_SIZE];
    let fw = ram(64);
    let long = "x".repeat(start_info::MAX_CMDLINE + 1);
    let c = Contents {
        firmware: &fw,
        carves: &[],
        cmdline: &long,
        initrd: r(0x90_0000, 0x91_0000),
        rsdp: None,
    };
    assert_eq!(
        start_info::build(&mut area, 0x20_0000, &c),
        Err(StartInfoError::CmdlineTooLong(long.len()))
    );
    let big = [0u8; start_info::MAX_RSDP + 1];
    let c = Contents {
        cmdline: "",
        rsdp: Some(&big),
        ..c
    };
    assert!(matches!(
        start_info::build(&mut area, 0x20_0000, &c),
        Err(StartInfoError::RsdpTooLong(_))
    ));
}

#[test]
fn multiboot2_acpi_tags_give_the_rsdp() {
    let tag = |ty: u32, body: &[u8]| {
        let mut t = Vec::new();
        t.extend_from_slice(&ty.to_le_bytes());
        t.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        t.extend_from_slice(body);
        t.resize(t.len().next_multiple_of(8), 0);
        t
    };
    let mbi = |tags: &[Vec<u8>]| {
        let mut b = vec![0u8; 8];
        for t in tags {
            b.extend_from_slice(t);
        }
        b.extend(tag(0, &[]));
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    };
    let old = [1u8; 20];
    let new = [2u8; 36];
    assert_eq!(acpi_rsdp(&mbi(&[tag(14, &old)])), Some(&old[..]));
    assert_eq!(
        acpi_rsdp(&mbi(&[tag(14, &old), tag(15, &new)])),
        Some(&new[..])
    );
    assert_eq!(acpi_rsdp(&mbi(&[tag(1, b"cmd\0")])), None);
}

#[test]
fn mmio_holes_are_the_pages_no_firmware_entry_describes() {
    let mut map = MemoryMap::new();
    map.add(0, 0x9_f000, FirmwareKind::Usable).unwrap();
    map.add(0x9_f000, 0x1000, FirmwareKind::Reserved).unwrap();
    map.add(0xe_8000, 0x1_8000, FirmwareKind::Reserved).unwrap();
    map.add(0x10_0000, 0x1fef_0000, FirmwareKind::Usable)
        .unwrap();
    // Overlapping and unaligned entries.
    map.add(0x1000_0000, 0x100, FirmwareKind::Reserved).unwrap();
    map.add(0x1fff_0000, 0x1_0800, FirmwareKind::AcpiReclaimable)
        .unwrap();
    map.add(0xfffc_0000, 0x4_0000, FirmwareKind::Reserved)
        .unwrap();
    let mut holes = Vec::new();
    loader::linux::mmio_holes(&map, 1 << 32, &mut |h| holes.push(h));
    assert_eq!(
        holes,
        [r(0xa_0000, 0xe_8000), r(0x2000_1000, 0xfffc_0000)],
        "{holes:x?}"
    );
    // Nothing past the limit; a map that ends low leaves a tail hole.
    let mut small = MemoryMap::new();
    small.add(0x1000, 0x1000, FirmwareKind::Usable).unwrap();
    let mut holes = Vec::new();
    loader::linux::mmio_holes(&small, 0x10_0000, &mut |h| holes.push(h));
    assert_eq!(holes, [r(0, 0x1000), r(0x2000, 0x10_0000)]);
}

#[test]
fn hostile_headers_and_maps_do_not_overflow() {
    // Program headers at the end of the address space (a fuzzer's find).
    let mut elf = kernel();
    elf[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    elf[54..58].copy_from_slice(&[0xff; 4]);
    assert_eq!(pvh_entry(&elf), None);
    // A firmware entry that ends at the top of the address space: no
    // tail hole (and no wrap-around to a hole from 0).
    let mut map = MemoryMap::new();
    map.add(0, 0x9_f000, FirmwareKind::Usable).unwrap();
    map.add(0x10_0000, u64::MAX - 0x10_0000, FirmwareKind::Reserved)
        .unwrap();
    let mut holes = Vec::new();
    loader::linux::mmio_holes(&map, 1 << 32, &mut |h| holes.push(h));
    assert_eq!(holes, [r(0x9_f000, 0x10_0000)]);
}
