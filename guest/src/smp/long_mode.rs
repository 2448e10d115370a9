//! Another processor into 64-bit mode, the way an OS's trampoline takes
//! it there (Linux's `trampoline_64`): the SIPI starts it in real mode at
//! a page of ours, which loads a GDT, turns on PAE, loads the page
//! tables, sets EFER.LME (and NXE), turns on paging and protection at
//! once, and jumps far to 64-bit code that takes a stack of its own and
//! calls a function of the kernel's text (SDM Vol. 3A §10.8.5,
//! "Initializing IA-32e Mode"). `scenario=fuzz aps=run` uses it
//! (`crate::executor::other`): code that runs in kernel text keeps
//! running once the executor's lock turns W^X on, which real-mode code in
//! a low page would not.
//!
//! The page, as offsets (CS = DS = the page's segment in real mode):
//!
//! | offset | what |
//! |--------|------|
//! | 0x000 | the 16-bit code, then (at [`CODE64`]) the 64-bit code |
//! | [`RUNNING_AT`] (0x1e0) | set to 1 by the 64-bit code before the call |
//! | [`TICKET_AT`] (0x1e8) | bit 0 taken by the one processor that goes on (the others halt) |
//! | [`CR3_AT`] (0x1f0) | the page tables (below 4 GiB) |
//! | [`GDTR`] (0x1f8) | the LGDT operand: limit, 32-bit base |
//! | [`GDT`] (0x200) | null, 64-bit code (0x08), data (0x10) |

/// Where the 64-bit code sets its mark.
pub const RUNNING_AT: u16 = 0x1e0;
/// The ticket's word.
pub const TICKET_AT: u16 = 0x1e8;
/// The page tables' address.
pub const CR3_AT: u16 = 0x1f0;
/// The LGDT operand.
pub const GDTR: u16 = 0x1f8;
/// The GDT.
pub const GDT: u16 = 0x200;
/// Where the 64-bit code starts.
const CODE64: u16 = 76;
/// The GDT's entries: null; code, 64-bit (L), present, ring 0,
/// execute/read; data, present, ring 0, read/write (SDM Vol. 3A §3.4.5).
const DESCRIPTORS: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// The 16-bit code: a ticket (one processor goes on, the others halt),
/// then into IA-32e mode and far to [`CODE64`] (its linear address
/// patched in by [`install`]).
const CODE16: [u8; CODE64 as usize] = {
    let ticket = TICKET_AT.to_le_bytes();
    let gdtr = GDTR.to_le_bytes();
    let cr3 = CR3_AT.to_le_bytes();
    super::start_up::flat(&[
        // +0: cli
        &[0xfa],
        // +1: mov ax, cs; +3: mov ds, ax
        &[0x8c, 0xc8],
        &[0x8e, 0xd8],
        // +5: lock bts word [TICKET_AT], 0
        &[0xf0, 0x0f, 0xba, 0x2e, ticket[0], ticket[1], 0x00],
        // +12: jnc +17
        &[0x73, 3],
        // +14: hlt; +15: jmp +14
        &[0xf4, 0xeb, 0xfd],
        // +17: lgdt [GDTR] (32-bit base)
        &[0x66, 0x0f, 0x01, 0x16, gdtr[0], gdtr[1]],
        // +23: mov eax, cr4; +26: or eax, PAE; +30: mov cr4, eax
        &[0x0f, 0x20, 0xe0],
        &[0x66, 0x83, 0xc8, 0x20],
        &[0x0f, 0x22, 0xe0],
        // +33: mov eax, [CR3_AT]; +37: mov cr3, eax
        &[0x66, 0xa1, cr3[0], cr3[1]],
        &[0x0f, 0x22, 0xd8],
        // +40: mov ecx, IA32_EFER; +46: rdmsr
        &[0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0],
        &[0x0f, 0x32],
        // +48: or eax, LME | NXE; +54: wrmsr
        &[0x66, 0x0d, 0x00, 0x09, 0x00, 0x00],
        &[0x0f, 0x30],
        // +56: mov eax, cr0; +59: or eax, PG | PE; +65: mov cr0, eax
        &[0x0f, 0x20, 0xc0],
        &[0x66, 0x0d, 0x01, 0x00, 0x00, 0x80],
        &[0x0f, 0x22, 0xc0],
        // +68: jmp far 0x08:CODE64 (offset patched: bytes +70..+74)
        &[0x66, 0xea, 0, 0, 0, 0, 0x08, 0x00],
    ])
};

/// The 64-bit code's length.
const CODE64_LEN: usize = 43;

/// The 64-bit code, with the stack top, the mark's address and the entry
/// patched in: data segments, RSP, the mark, `call entry`, and a halt
/// should it return.
fn code64(page: u64, stack_top: u64, entry: u64) -> [u8; CODE64_LEN] {
    let mut c = [0u8; CODE64_LEN];
    let mark = ((page + u64::from(RUNNING_AT)) as u32).to_le_bytes();
    let parts: [&[u8]; 9] = [
        // +0: mov ax, 0x10; mov ss, ax; mov ds, ax; mov es, ax
        &[0x66, 0xb8, 0x10, 0x00],
        &[0x8e, 0xd0, 0x8e, 0xd8, 0x8e, 0xc0],
        // +10: movabs rsp, stack_top
        &[0x48, 0xbc],
        &stack_top.to_le_bytes(),
        // +20: mov byte [mark], 1
        &[0xc6, 0x04, 0x25, mark[0], mark[1], mark[2], mark[3], 0x01],
        // +28: movabs rax, entry
        &[0x48, 0xb8],
        &entry.to_le_bytes(),
        // +38: call rax
        &[0xff, 0xd0],
        // +40: hlt; jmp +40
        &[0xf4, 0xeb, 0xfd],
    ];
    let mut at = 0;
    for p in parts {
        c[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert!(at == CODE64_LEN);
    c
}

fn put(at: u64, bytes: &[u8]) {
    // SAFETY: `at` lies in the page `install` was given: usable RAM below
    // 1 MiB (checked by the caller), identity-mapped, which nothing else
    // uses and no other processor runs yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
}

/// Clears the page at `page` (below 1 MiB, page-aligned) and puts the
/// trampoline in it: the processor it starts runs `entry` on the stack
/// whose top is `stack_top` (16-byte aligned), on the page tables `cr3`
/// (below 4 GiB, mapping `entry`, the stack and `page` as they are now).
pub fn install(page: u64, cr3: u64, stack_top: u64, entry: extern "C" fn() -> !) {
    assert!(page < 0x10_0000 && page.is_multiple_of(0x1000) && cr3 < 1 << 32);
    assert!(stack_top.is_multiple_of(16));
    // SAFETY: as in `put`.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 0x1000) };
    let mut c16 = CODE16;
    c16[70..74].copy_from_slice(&((page + u64::from(CODE64)) as u32).to_le_bytes());
    put(page, &c16);
    put(
        page + u64::from(CODE64),
        &code64(page, stack_top, entry as usize as u64),
    );
    put(page + u64::from(CR3_AT), &(cr3 as u32).to_le_bytes());
    let mut gdtr = [0u8; 6];
    gdtr[..2].copy_from_slice(&((DESCRIPTORS.len() * 8 - 1) as u16).to_le_bytes());
    gdtr[2..].copy_from_slice(&((page + u64::from(GDT)) as u32).to_le_bytes());
    put(page + u64::from(GDTR), &gdtr);
    for (i, d) in DESCRIPTORS.iter().enumerate() {
        put(page + u64::from(GDT) + 8 * i as u64, &d.to_le_bytes());
    }
}

/// Whether the processor reached its 64-bit code.
pub fn running(page: u64) -> bool {
    // SAFETY: the mark in the page `install` was given; another processor
    // writes it, hence volatile.
    unsafe { core::ptr::read_volatile((page + u64::from(RUNNING_AT)) as *const u8) == 1 }
}

// The code ends before the marks, the marks before the GDT.
const _: () = assert!(CODE64 as usize + CODE64_LEN <= RUNNING_AT as usize);
const _: () = assert!(GDTR + 6 <= GDT);
