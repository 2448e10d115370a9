//! Linux's bzImage through the boot protocol: the setup header is read
//! and checked (each refusal named), the load planned at `pref_address`
//! for `init_size` bytes, and the zero page carries what the protocol
//! asks for.

use host_tests::linux::{OKERNEL, r};
use loader::elf_load::{ImageKind, Occupied};
use loader::handoff::Carve;
use loader::linux::boot_params::{self, AREA_SIZE, setup_header};
use loader::linux::start_info::Contents;
use loader::linux::{LinuxError, layout};
use loader::memmap::{FirmwareKind, MemoryMap};
use okernel_abi::boot::GuestMemoryKind as Kind;

const PREF: u64 = 0x100_0000;
const INIT_SIZE: u64 = 0x40_0000;

/// A bzImage-shaped file: one setup sector after the boot sector, then
/// 0x3000 bytes of "kernel"; protocol 2.15, relocatable, 64-bit entry.
fn bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 0x400 + 0x3000];
    let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    b[0x1f1] = 1;
    put(&mut b, 0x1fe, &[0x55, 0xaa]);
    b[0x201] = 0x6a;
    put(&mut b, 0x202, b"HdrS");
    put(&mut b, 0x206, &0x020fu16.to_le_bytes());
    b[0x211] = 0x81;
    put(&mut b, 0x214, &0x10_0000u32.to_le_bytes());
    put(&mut b, 0x230, &0x20_0000u32.to_le_bytes());
    b[0x234] = 1;
    put(&mut b, 0x236, &0x7fu16.to_le_bytes());
    put(&mut b, 0x238, &0x7ffu32.to_le_bytes());
    put(&mut b, 0x258, &PREF.to_le_bytes());
    put(&mut b, 0x260, &(INIT_SIZE as u32).to_le_bytes());
    b[0x400..].fill(0x90);
    b
}

fn ram() -> MemoryMap {
    host_tests::linux::ram(64)
}

#[test]
fn reads_the_setup_header() {
    let h = setup_header(&bzimage()).unwrap();
    assert_eq!(h.version, 0x020f);
    assert_eq!(h.kernel_offset, 0x400);
    assert_eq!(h.pref_address, PREF);
    assert_eq!(h.init_size, INIT_SIZE);
    assert_eq!(h.cmdline_size, 0x7ff);
    assert_eq!(h.header_end, 0x26c);
}

#[test]
fn refuses_bzimages_it_cannot_boot_with_the_cause() {
    let with = |at: usize, v: &[u8]| {
        let mut b = bzimage();
        b[at..at + v.len()].copy_from_slice(v);
        setup_header(&b).unwrap_err().to_string()
    };
    assert!(with(0x206, &0x020au16.to_le_bytes()).contains("2.10 is too old (need 2.12"));
    assert!(with(0x236, &0u16.to_le_bytes()).contains("no 64-bit entry"));
    assert!(with(0x234, &[0]).contains("not relocatable"));
    assert!(with(0x258, &0x100_1000u64.to_le_bytes()).contains("setup header"));
    assert!(with(0x202, b"HdrX").contains("setup header"));
    assert!(setup_header(&bzimage()[..0x250]).is_err());
    // A protected-mode kernel that ends before its 64-bit entry (+0x200).
    let short = &bzimage()[..0x400 + 0x200];
    let e = boot_params::plan(short, &ram(), &[OKERNEL]).unwrap_err();
    assert!(matches!(e, LinuxError::BzImageTruncated), "{e}");
}

#[test]
fn plans_the_load_at_pref_address_for_init_size() {
    let image = bzimage();
    let module = r(0x20_0000, 0x20_0000 + image.len() as u64);
    let initrd = r(PREF + 0x1000, PREF + 0x3000);
    let l = layout(&image, module, initrd, &ram(), &[OKERNEL], 0x40_0000).unwrap();
    assert_eq!(l.plan.kind, ImageKind::LinuxBzImage);
    assert_eq!(l.plan.entry, PREF + 0x200);
    assert_eq!(l.plan.extent, r(PREF, PREF + INIT_SIZE));
    let segs: Vec<_> = l.plan.segments().cloned().collect();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].dest, r(PREF, PREF + 0x3000));
    assert_eq!(segs[0].file, 0x400..image.len());
    // The initramfs lay where the kernel decompresses: it moves.
    assert!(l.initrd_move.is_some() && !l.initrd.overlaps(&l.plan.extent));
    assert_eq!(l.area.len(), AREA_SIZE as u64);

    // Too little RAM for init_size: the load range is named.
    let mut small = MemoryMap::new();
    small
        .add(0x10_0000, 0x110_0000, FirmwareKind::Usable)
        .unwrap();
    let e = layout(
        &image,
        module,
        r(0x30_0000, 0x30_1000),
        &small,
        &[OKERNEL],
        0x1000,
    )
    .unwrap_err();
    assert!(matches!(e, LinuxError::LoadRangeUnusable(_)), "{e}");
    let busy = Occupied {
        what: "the boot information",
        range: r(PREF + 0x8000, PREF + 0x9000),
    };
    let e = layout(
        &image,
        module,
        r(0x30_0000, 0x30_1000),
        &ram(),
        &[busy],
        0x1000,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("would overwrite the boot information"), "{e}");
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0, |v, &x| (v << 8) | u64::from(x))
}

#[test]
fn the_zero_page_carries_what_the_protocol_asks() {
    let image = bzimage();
    let plan = boot_params::plan(&image, &ram(), &[OKERNEL]).unwrap();
    let base = 0x30_0000;
    let fw = ram();
    let carves = [
        Carve {
            range: OKERNEL.range,
            kind: Kind::Monitor,
        },
        Carve {
            range: r(base, base + AREA_SIZE as u64),
            kind: Kind::BootData,
        },
    ];
    let rsdp = [7u8; 36];
    let c = Contents {
        firmware: &fw,
        carves: &carves,
        cmdline: "console=ttyS0 quiet",
        initrd: r(0x200_0000, 0x200_2345),
        rsdp: Some(&rsdp),
    };
    let mut area = [0u8; AREA_SIZE];
    let (cr3, zp) = boot_params::build(&mut area, base, &image, &plan, &c).unwrap();
    assert_eq!(cr3, base);
    // PML4[0] -> PDPT at base + 0x1000; the last PDE maps 4 GiB - 2 MiB.
    assert_eq!(le(&area, 0, 8), (base + 0x1000) | 3);
    assert_eq!(le(&area, 0x2000 + 2047 * 8, 8), (2047 << 21) | 0x83);
    let bp = &area[(zp - base) as usize..][..0x1000];
    // The setup header is copied, then the loader's fields.
    assert_eq!(&bp[0x202..0x206], b"HdrS");
    assert_eq!(le(bp, 0x206, 2), 0x020f);
    assert_eq!(bp[0x210], 0xff, "type_of_loader");
    assert_eq!(bp[0x211], 0x01, "loadflags: LOADED_HIGH only");
    assert_eq!(le(bp, 0x214, 4), PREF, "code32_start");
    assert_eq!(le(bp, 0x218, 4), 0x200_0000, "ramdisk_image");
    assert_eq!(le(bp, 0x21c, 4), 0x2345, "ramdisk_size");
    let cmd = le(bp, 0x228, 4) | (le(bp, 0x0c8, 4) << 32);
    let at = (cmd - base) as usize;
    assert_eq!(&area[at..at + 20], b"console=ttyS0 quiet\0");
    let rsdp_at = (le(bp, 0x070, 8) - base) as usize;
    assert_eq!(&area[rsdp_at..rsdp_at + 36], &rsdp);
    // E820: okernel and the area reserved, ACPI data kept, RAM around.
    let n = bp[0x1e8] as usize;
    let e820: Vec<(u64, u64, u64)> = (0..n)
        .map(|i| {
            let e = 0x2d0 + i * 20;
            (le(bp, e, 8), le(bp, e + 8, 8), le(bp, e + 16, 4))
        })
        .collect();
    assert_eq!(
        e820,
        [
            (0, 0x9_f000, 1),
            (0xf_0000, 0x1_0000, 2),
            (0x10_0000, 0x5_0000, 2),
            (0x15_0000, base - 0x15_0000, 1),
            (base, AREA_SIZE as u64, 2),
            (
                base + AREA_SIZE as u64,
                0x3ff_0000 - base - AREA_SIZE as u64,
                1
            ),
            (0x3ff_0000, 0x1_0000, 3),
        ]
    );
}

#[test]
fn the_zero_page_refuses_a_command_line_the_kernel_cannot_take() {
    let image = bzimage();
    let plan = boot_params::plan(&image, &ram(), &[OKERNEL]).unwrap();
    let fw = ram();
    let long = "x".repeat(0x800);
    let c = Contents {
        firmware: &fw,
        carves: &[],
        cmdline: &long,
        initrd: r(0x200_0000, 0x200_1000),
        rsdp: None,
    };
    let mut area = [0u8; AREA_SIZE];
    let e = boot_params::build(&mut area, 0x30_0000, &image, &plan, &c).unwrap_err();
    assert!(matches!(e, LinuxError::CmdlineTooLong(0x800, 0x7ff)), "{e}");
}
