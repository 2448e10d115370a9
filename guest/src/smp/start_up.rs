//! The other processors' real-mode start-up code (`scenario=smp`), its
//! page and the marks it leaves there.
//!
//! A processor started by INIT, SIPI, SIPI runs in real mode at
//! CS = vector << 8, IP = 0 (SDM Vol. 3A §9.4.4.1, "Typical AP
//! Initialization Sequence"). The code page holds, at these offsets
//! (CS = DS = SS = the page's segment, so an offset is an IP and a data
//! address alike):
//!
//! | offset | what |
//! |--------|------|
//! | 0x000 | [`MAIN`], which runs on into [`RACE`], then [`STALE`], [`VIEW`], [`ON_GP`], [`ON_OTHER`] |
//! | [`IDTR`] (0x3f8) | the LIDT operand: limit 0x3ff, base page + [`IVT`] |
//! | [`IVT`] (0x400) | 256 real-mode vectors (offset, segment): 13 (#GP) to [`ON_GP`], every other to [`ON_OTHER`] (SDM Vol. 3A §21.1.4) |
//! | 0x800.. | the marks ([`RAN_AT`] ...): written by the processors, read by the BSP |
//! | ..0x1000 | the stack (SP starts at 0x1000); an exception pushes FLAGS, CS, IP |
//!
//! The page after it (offset 0x1000 from the same DS) is the one the BSP
//! locks read-only under okernel: [`MAIN`] writes [`PATTERN`] there. The
//! one after that ([`RACE_TARGET`], offset 0x2000) is the race row's:
//! [`RACE`] writes its loop count there for ever, and the BSP locks it
//! while the loop runs; the first write that faults ends the loop (so
//! does [`STOP_AT`], which the BSP sets when no lock stops it). The one
//! after that again ([`VIEW_TARGET`], offset 0x3000) is the view-switch
//! row's: [`VIEW`] enters the context the BSP names in [`CTX_AT`] and
//! writes each round's number the BSP posts in [`ROUND_AT`] there.
//! Before that, one processor runs [`STALE`], the stale-mapping row's
//! page-table update and lock: it points the entry the BSP posts in
//! [`PTE_AT`] (in the page table at [`PT_LOW`]) away from the page at
//! [`STALE_TARGET`], then locks that page read-only, while the BSP writes
//! it in a loop through the old mapping.
//!
//! With 4 processors three run this code at once: every mark is a
//! constant (or the same IP) written whole, and the counts are `LOCK INC`,
//! so any interleaving leaves the same marks. The processors share the
//! stack; a handler only reads back the IP its own exception pushed, and
//! never returns. Two processors fault at once only at the same
//! instruction (the same IP pushed): the BSP locks the race page only
//! once every processor is past its first write and in the loop
//! (`super::run`).

/// Where the BSP finds the marks, as offsets in the code page.
pub const RAN_AT: u16 = 0x800;
/// CPUID.1:ECX as the processor saw it.
pub const ECX_AT: u16 = 0x804;
/// [`GP`] when [`ON_GP`] ran.
pub const GP_AT: u16 = 0x808;
/// [`WROTE`] when the write to the locked page went through.
pub const WROTE_AT: u16 = 0x80c;
/// [`OTHER`] when any other vector ran [`ON_OTHER`].
pub const OTHER_AT: u16 = 0x810;
/// 16-bit counts: processors that ran, ...
pub const RAN_COUNT_AT: u16 = 0x814;
/// ... took the #GP, ...
pub const GP_COUNT_AT: u16 = 0x816;
/// ... wrote.
pub const WROTE_COUNT_AT: u16 = 0x818;
/// The IP the #GP pushed.
pub const GP_IP_AT: u16 = 0x81a;
/// The IP the other vector pushed.
pub const OTHER_IP_AT: u16 = 0x81c;
/// The race loop's count (32-bit, `LOCK INC` by every processor in it).
pub const HEART_AT: u16 = 0x820;
/// 16-bit count of race writes that faulted (#GP at [`RACE_WRITE_IP`]).
pub const RACE_GP_COUNT_AT: u16 = 0x824;
/// The IP that #GP pushed.
pub const RACE_GP_IP_AT: u16 = 0x826;
/// Set (byte, non-zero) by the BSP: the race loop ends and runs on into
/// [`STALE`].
pub const STOP_AT: u16 = 0x828;
/// The context [`VIEW`] switches to (32-bit; 0 = not yet, [`NO_SWITCH`]
/// = write the rounds without a switch: no monitor).
pub const CTX_AT: u16 = 0x82c;
/// The OR of every processor's `SwitchContext` status (0: all succeeded).
pub const SWITCH_AT: u16 = 0x830;
/// 16-bit count of processors that reached [`VIEW`]'s rounds.
pub const IN_AT: u16 = 0x834;
/// The round the BSP posts (32-bit; [`END`] ends [`VIEW`]).
pub const ROUND_AT: u16 = 0x838;
/// 16-bit counts: rounds whose write landed, ...
pub const VIEW_WROTE_AT: u16 = 0x83c;
/// ... and whose write faulted (#GP at [`VIEW_WRITE_IP`]).
pub const VIEW_GP_AT: u16 = 0x83e;
/// The IP that #GP pushed.
pub const VIEW_GP_IP_AT: u16 = 0x840;
/// 16-bit: bit 0 set by the one processor that runs [`STALE`]'s calls.
pub const TICKET_AT: u16 = 0x844;
/// Posted by the BSP: 0 = not yet, 1 = go (under okernel: by hypercalls),
/// [`NO_SWITCH`] = go without a monitor (a plain store).
pub const GO_AT: u16 = 0x848;
/// The guest-physical address of the page-table entry to update.
pub const PTE_AT: u16 = 0x84c;
/// The entry's new value (32 bits: its frame lies below 4 GiB).
pub const NEW_PTE_AT: u16 = 0x850;
/// The statuses of `UpdatePageTable`, `RegisterRegion` and `LockRegion`.
pub const STALE_STATUS_AT: [u16; 3] = [0x854, 0x858, 0x85c];
/// [`STALE_TARGET`]'s first dword right after the lock returned, and
/// after the watch.
pub const STALE_AT_RETURN_AT: u16 = 0x860;
pub const STALE_AFTER_AT: u16 = 0x864;
/// Set to 1 when [`STALE`] is done (the BSP's loop ends).
pub const STALE_DONE_AT: u16 = 0x868;
/// [`STALE_TARGET`]'s first dword right after `UpdatePageTable` returned
/// and right before `LockRegion`.
pub const STALE_READS_AT: [u16; 2] = [0x86c, 0x870];
/// 16-bit count of processors that halted at [`VIEW`]'s end.
pub const HALTED_AT: u16 = 0x874;
/// [`CTX_AT`]: no monitor, no switch.
pub const NO_SWITCH: u32 = u32::MAX;
/// [`ROUND_AT`]: the last round; [`VIEW`] halts.
pub const END: u32 = u32::MAX;
/// The LIDT operand.
pub const IDTR: u16 = 0x3f8;
/// The table.
pub const IVT: u16 = 0x400;
/// The initial stack pointer.
const STACK_TOP: u16 = 0x1000;
/// The locked page, as an offset from the code page's segment.
pub const TARGET: u16 = 0x1000;
/// The race row's page, as an offset from the code page's segment.
pub const RACE_TARGET: u16 = 0x2000;
/// The view-switch row's page, as an offset from the code page's
/// segment.
pub const VIEW_TARGET: u16 = 0x3000;
/// The stale-mapping row's page (the BSP's old mapping's frame), ...
pub const STALE_TARGET: u16 = 0x4000;
/// ... the frame the entry points to after the update, ...
pub const STALE_NEW: u16 = 0x5000;
/// ... and the page table that holds the entry (entry 0), under okernel
/// a locked page-table region.
pub const PT_LOW: u16 = 0x6000;
/// How many `PAUSE` iterations [`STALE`] watches the page after the lock
/// returned (about 3 instructions each: in Bochs 3 TSC ticks each, a
/// dozen of the monitor's poll ticks).
const STALE_WATCH: u32 = 1 << 19;

/// The marks' values: "ARAP" (the one the first version wrote), ...
pub const RAN: u32 = 0x5041_5241;
/// ... "#GP!", ...
pub const GP: u32 = u32::from_le_bytes(*b"#GP!");
/// ... "WROT", ...
pub const WROTE: u32 = u32::from_le_bytes(*b"WROT");
/// ... "EXC?".
pub const OTHER: u32 = u32::from_le_bytes(*b"EXC?");
/// What the processor writes into the locked page (its first dword).
pub const PATTERN: u32 = u32::from_le_bytes(*b"AP1W");

/// The bytes of `parts`, one instruction each, in order (`N` their
/// total length: a compile-time error otherwise).
pub(super) const fn flat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[at] = parts[i][j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(at == N);
    out
}

/// Where in [`MAIN`] the write to the locked page is: the IP a denied
/// write's #GP pushes (fault semantics: the instruction did not happen).
pub const WRITE_IP: u16 = 0x29;

/// The start-up code, at offset 0: set DS, SS, SP; CPUID.1, record ECX
/// and [`RAN`], count; load the page's IVT; write [`PATTERN`] to the
/// locked page; record [`WROTE`], count; then on into [`RACE`].
pub const MAIN: [u8; 0x40] = {
    let sp = STACK_TOP.to_le_bytes();
    let ecx = ECX_AT.to_le_bytes();
    let ran = RAN_AT.to_le_bytes();
    let r = RAN.to_le_bytes();
    let n = RAN_COUNT_AT.to_le_bytes();
    let idtr = IDTR.to_le_bytes();
    let t = TARGET.to_le_bytes();
    let p = PATTERN.to_le_bytes();
    let wrote = WROTE_AT.to_le_bytes();
    let w = WROTE.to_le_bytes();
    let m = WROTE_COUNT_AT.to_le_bytes();
    flat(&[
        // 00: mov ax, cs
        &[0x8c, 0xc8],
        // 02: mov ds, ax
        &[0x8e, 0xd8],
        // 04: mov ss, ax
        &[0x8e, 0xd0],
        // 06: mov sp, 0x1000
        &[0xbc, sp[0], sp[1]],
        // 09: mov eax, 1
        &[0x66, 0xb8, 0x01, 0x00, 0x00, 0x00],
        // 0f: cpuid
        &[0x0f, 0xa2],
        // 11: mov [0x804], ecx
        &[0x66, 0x89, 0x0e, ecx[0], ecx[1]],
        // 16: mov dword [0x800], RAN
        &[0x66, 0xc7, 0x06, ran[0], ran[1], r[0], r[1], r[2], r[3]],
        // 1f: lock inc word [0x814]
        &[0xf0, 0xff, 0x06, n[0], n[1]],
        // 24: lidt [0x3f8]
        &[0x0f, 0x01, 0x1e, idtr[0], idtr[1]],
        // 29: mov dword [0x1000], PATTERN (the locked page: WRITE_IP)
        &[0x66, 0xc7, 0x06, t[0], t[1], p[0], p[1], p[2], p[3]],
        // 32: mov dword [0x80c], WROTE
        &[0x66, 0xc7, 0x06, wrote[0], wrote[1], w[0], w[1], w[2], w[3]],
        // 3b: lock inc word [0x818]
        &[0xf0, 0xff, 0x06, m[0], m[1]],
    ])
};

/// Where [`RACE`] starts: right after [`MAIN`], which runs on into it.
pub const RACE_AT: u16 = MAIN.len() as u16;
/// Where in [`RACE`] its write to [`RACE_TARGET`] is (the IP its #GP
/// pushes).
pub const RACE_WRITE_IP: u16 = RACE_AT + 13;

/// The race loop (the race row, `super::report_race`): reset SP (a #GP
/// handler jumps here), then count in [`HEART_AT`], write the count to
/// [`RACE_TARGET`], and again until [`STOP_AT`] is set, then on into
/// [`STALE`]. Once the page is locked and this processor no longer holds
/// a writable translation of it, the write faults and [`ON_GP`] ends the
/// loop (into [`STALE`] too).
pub const RACE: [u8; 0x18] = {
    let sp = STACK_TOP.to_le_bytes();
    let h = HEART_AT.to_le_bytes();
    let t = RACE_TARGET.to_le_bytes();
    let stop = STOP_AT.to_le_bytes();
    flat(&[
        // 40: mov sp, 0x1000
        &[0xbc, sp[0], sp[1]],
        // 43: lock inc dword [0x820]
        &[0xf0, 0x66, 0xff, 0x06, h[0], h[1]],
        // 49: mov eax, [0x820]
        &[0x66, 0xa1, h[0], h[1]],
        // 4d: mov [0x2000], eax (RACE_WRITE_IP)
        &[0x66, 0xa3, t[0], t[1]],
        // 51: cmp byte [STOP_AT], 0
        &[0x80, 0x3e, stop[0], stop[1], 0x00],
        // 56: je 43
        &[0x74, 0x43u8.wrapping_sub(0x58)],
    ])
};

/// Where [`STALE`] starts: right after [`RACE`], which runs on into it.
pub const STALE_AT: u16 = RACE_AT + RACE.len() as u16;

/// The stale-mapping row (`super::stale`): the first processor here
/// (`LOCK BTS` on [`TICKET_AT`]) waits for [`GO_AT`], then until the
/// BSP's loop writes the page through its mapping (its first dword above
/// 1), then updates the entry at [`PTE_AT`] to [`NEW_PTE_AT`]. Under
/// okernel: `UpdatePageTable`, a read of the page ([`STALE_READS_AT`]
/// 0), `RegisterRegion([STALE_TARGET], 4096, Rodata)`, another read
/// (1), `LockRegion` (each status recorded); without a monitor a store
/// into [`PT_LOW`]. Then it reads the page's first dword the moment that
/// returned and again after [`STALE_WATCH`], records both and
/// [`STALE_DONE_AT`], and runs on into [`VIEW`]. The others go straight
/// to [`VIEW`].
pub const STALE: [u8; 169] = {
    let sp = STACK_TOP.to_le_bytes();
    let ticket = TICKET_AT.to_le_bytes();
    let go = GO_AT.to_le_bytes();
    let pte = PTE_AT.to_le_bytes();
    let new = NEW_PTE_AT.to_le_bytes();
    let entry = PT_LOW.to_le_bytes();
    let [s0, s1, s2] = STALE_STATUS_AT;
    let (s0, s1, s2) = (s0.to_le_bytes(), s1.to_le_bytes(), s2.to_le_bytes());
    let [r0, r1] = STALE_READS_AT;
    let (r0, r1) = (r0.to_le_bytes(), r1.to_le_bytes());
    let update = (okernel_abi::hypercall::Call::UpdatePageTable as u32).to_le_bytes();
    let register = (okernel_abi::hypercall::Call::RegisterRegion as u32).to_le_bytes();
    let lock = (okernel_abi::hypercall::Call::LockRegion as u32).to_le_bytes();
    // The page's guest-physical address: the code page is at
    // `super::PAGE`, its segment's base.
    let frame = ((super::PAGE as u32) + STALE_TARGET as u32).to_le_bytes();
    let rodata = (okernel_abi::policy::RegionKind::Rodata as u32).to_le_bytes();
    let target = STALE_TARGET.to_le_bytes();
    let ret = STALE_AT_RETURN_AT.to_le_bytes();
    let after = STALE_AFTER_AT.to_le_bytes();
    let done = STALE_DONE_AT.to_le_bytes();
    let watch = STALE_WATCH.to_le_bytes();
    let to_view = (169u16).wrapping_sub(15).to_le_bytes();
    flat(&[
        // +0: mov sp, 0x1000
        &[0xbc, sp[0], sp[1]],
        // +3: lock bts word [TICKET_AT], 0
        &[0xf0, 0x0f, 0xba, 0x2e, ticket[0], ticket[1], 0x00],
        // +10: jnc +15 (this processor runs the row)
        &[0x73, 3],
        // +12: jmp VIEW (at +169)
        &[0xe9, to_view[0], to_view[1]],
        // +15: pause
        &[0xf3, 0x90],
        // +17: mov eax, [GO_AT] (EAX keeps it for the test at +46)
        &[0x66, 0xa1, go[0], go[1]],
        // +21: test eax, eax
        &[0x66, 0x85, 0xc0],
        // +24: jz +15
        &[0x74, 15u8.wrapping_sub(26)],
        // +26: pause
        &[0xf3, 0x90],
        // +28: cmp dword [STALE_TARGET], 1 (the BSP's first write)
        &[0x66, 0x83, 0x3e, target[0], target[1], 0x01],
        // +34: jbe +26 (until its loop writes through the mapping)
        &[0x76, 26u8.wrapping_sub(36)],
        // +36: mov edi, [PTE_AT]
        &[0x66, 0x8b, 0x3e, pte[0], pte[1]],
        // +41: mov esi, [NEW_PTE_AT]
        &[0x66, 0x8b, 0x36, new[0], new[1]],
        // +46: cmp eax, NO_SWITCH (-1)
        &[0x66, 0x83, 0xf8, 0xff],
        // +50: jne +59 (under okernel)
        &[0x75, 59 - 52],
        // +52: mov [PT_LOW], esi (entry 0, no monitor)
        &[0x66, 0x89, 0x36, entry[0], entry[1]],
        // +57: jmp +132
        &[0xeb, 132 - 59],
        // +59: mov eax, UpdatePageTable
        &[0x66, 0xb8, update[0], update[1], update[2], update[3]],
        // +65: vmcall
        &[0x0f, 0x01, 0xc1],
        // +68: mov [STALE_STATUS_AT[0]], eax
        &[0x66, 0xa3, s0[0], s0[1]],
        // +72: mov eax, [STALE_TARGET]; +76: mov [STALE_READS_AT[0]], eax
        &[0x66, 0xa1, target[0], target[1]],
        &[0x66, 0xa3, r0[0], r0[1]],
        // +80: mov edi, the page
        &[0x66, 0xbf, frame[0], frame[1], frame[2], frame[3]],
        // +86: mov esi, 4096
        &[0x66, 0xbe, 0x00, 0x10, 0x00, 0x00],
        // +92: mov edx, Rodata
        &[0x66, 0xba, rodata[0], rodata[1], rodata[2], rodata[3]],
        // +98: mov eax, RegisterRegion
        &[
            0x66,
            0xb8,
            register[0],
            register[1],
            register[2],
            register[3],
        ],
        // +104: vmcall (RDI out: the region)
        &[0x0f, 0x01, 0xc1],
        // +107: mov [STALE_STATUS_AT[1]], eax
        &[0x66, 0xa3, s1[0], s1[1]],
        // +111: mov eax, [STALE_TARGET]; +115: mov [STALE_READS_AT[1]], eax
        &[0x66, 0xa1, target[0], target[1]],
        &[0x66, 0xa3, r1[0], r1[1]],
        // +119: mov eax, LockRegion
        &[0x66, 0xb8, lock[0], lock[1], lock[2], lock[3]],
        // +125: vmcall
        &[0x0f, 0x01, 0xc1],
        // +128: mov [STALE_STATUS_AT[2]], eax
        &[0x66, 0xa3, s2[0], s2[1]],
        // +132: mov eax, [STALE_TARGET]
        &[0x66, 0xa1, target[0], target[1]],
        // +136: mov [STALE_AT_RETURN_AT], eax
        &[0x66, 0xa3, ret[0], ret[1]],
        // +140: mov ecx, STALE_WATCH
        &[0x66, 0xb9, watch[0], watch[1], watch[2], watch[3]],
        // +146: pause
        &[0xf3, 0x90],
        // +148: dec ecx
        &[0x66, 0x49],
        // +150: jnz +146
        &[0x75, 146u8.wrapping_sub(152)],
        // +152: mov eax, [STALE_TARGET]
        &[0x66, 0xa1, target[0], target[1]],
        // +156: mov [STALE_AFTER_AT], eax
        &[0x66, 0xa3, after[0], after[1]],
        // +160: mov dword [STALE_DONE_AT], 1 (then on into VIEW)
        &[0x66, 0xc7, 0x06, done[0], done[1], 0x01, 0x00, 0x00, 0x00],
    ])
};

/// Where [`VIEW`] starts: right after [`STALE`], which runs on into it.
pub const VIEW_AT: u16 = STALE_AT + STALE.len() as u16;
/// Where [`VIEW`]'s rounds loop starts (a view #GP resumes there).
pub const VIEW_LOOP: u16 = VIEW_AT + 49;
/// Where in [`VIEW`] its write to [`VIEW_TARGET`] is (the IP its #GP
/// pushes).
pub const VIEW_WRITE_IP: u16 = VIEW_AT + 72;

/// The view-switch row (`super::view`): wait for [`CTX_AT`];
/// unless it is [`NO_SWITCH`], `SwitchContext(ctx, 0)` (VMCALL: RAX 26,
/// RDI the context; outside 64-bit mode only the low halves count) and
/// OR the status into [`SWITCH_AT`]; count in [`IN_AT`]; then for each
/// new number in [`ROUND_AT`] (the last seen kept in ESI, which a #GP
/// keeps) write it to [`VIEW_TARGET`] and count in [`VIEW_WROTE_AT`]
/// (a fault counts in [`ON_GP`] and comes back to the loop), until
/// [`END`]: count in [`HALTED_AT`] and halt.
pub const VIEW: [u8; 92] = {
    let sp = STACK_TOP.to_le_bytes();
    let ctx = CTX_AT.to_le_bytes();
    let sw = SWITCH_AT.to_le_bytes();
    let inn = IN_AT.to_le_bytes();
    let round = ROUND_AT.to_le_bytes();
    let t = VIEW_TARGET.to_le_bytes();
    let wrote = VIEW_WROTE_AT.to_le_bytes();
    let halted = HALTED_AT.to_le_bytes();
    let call = (okernel_abi::hypercall::Call::SwitchContext as u32).to_le_bytes();
    flat(&[
        // +0: mov sp, 0x1000
        &[0xbc, sp[0], sp[1]],
        // +3: pause
        &[0xf3, 0x90],
        // +5: mov eax, [CTX_AT]
        &[0x66, 0xa1, ctx[0], ctx[1]],
        // +9: test eax, eax
        &[0x66, 0x85, 0xc0],
        // +12: jz +3
        &[0x74, 3u8.wrapping_sub(14)],
        // +14: cmp eax, NO_SWITCH (-1)
        &[0x66, 0x83, 0xf8, 0xff],
        // +18: je +41 (no switch)
        &[0x74, 41 - 20],
        // +20: mov edi, eax
        &[0x66, 0x89, 0xc7],
        // +23: xor esi, esi
        &[0x66, 0x31, 0xf6],
        // +26: mov eax, SwitchContext
        &[0x66, 0xb8, call[0], call[1], call[2], call[3]],
        // +32: vmcall
        &[0x0f, 0x01, 0xc1],
        // +35: lock or [SWITCH_AT], eax
        &[0xf0, 0x66, 0x09, 0x06, sw[0], sw[1]],
        // +41: lock inc word [IN_AT]
        &[0xf0, 0xff, 0x06, inn[0], inn[1]],
        // +46: xor esi, esi (no round seen)
        &[0x66, 0x31, 0xf6],
        // +49 (VIEW_LOOP): mov sp, 0x1000
        &[0xbc, sp[0], sp[1]],
        // +52: pause
        &[0xf3, 0x90],
        // +54: mov eax, [ROUND_AT]
        &[0x66, 0xa1, round[0], round[1]],
        // +58: cmp eax, esi
        &[0x66, 0x39, 0xf0],
        // +61: je +49
        &[0x74, 49u8.wrapping_sub(63)],
        // +63: mov esi, eax
        &[0x66, 0x89, 0xc6],
        // +66: cmp eax, END (-1)
        &[0x66, 0x83, 0xf8, 0xff],
        // +70: je +83
        &[0x74, 83 - 72],
        // +72: mov [0x3000], eax (VIEW_WRITE_IP)
        &[0x66, 0xa3, t[0], t[1]],
        // +76: lock inc word [VIEW_WROTE_AT]
        &[0xf0, 0xff, 0x06, wrote[0], wrote[1]],
        // +81: jmp +49
        &[0xeb, 49u8.wrapping_sub(83)],
        // +83: lock inc word [HALTED_AT]
        &[0xf0, 0xff, 0x06, halted[0], halted[1]],
        // +88: cli
        &[0xfa],
        // +89: hlt
        &[0xf4],
        // +90: jmp +89
        &[0xeb, 0xfd],
    ])
};

/// Where the #GP handler starts (its IVT offset).
pub const GP_HANDLER: u16 = VIEW_AT + VIEW.len() as u16;

/// The #GP handler, after [`VIEW`] (no error code in real mode: the
/// stack holds IP, CS, FLAGS). At [`WRITE_IP`]: record the IP, then
/// [`GP`], count, and go on into [`RACE`]. At [`VIEW_WRITE_IP`]: record
/// the IP, count in [`VIEW_GP_AT`], and back to [`VIEW_LOOP`] (which
/// resets SP). At [`RACE_WRITE_IP`]: record the IP, count in
/// [`RACE_GP_COUNT_AT`], and on into [`STALE`]. Anywhere else: the IP
/// back on the stack, and on into [`ON_OTHER`] (recorded as another
/// vector's, and halt).
pub const ON_GP: [u8; 66] = {
    let ip = GP_IP_AT.to_le_bytes();
    let gp = GP_AT.to_le_bytes();
    let g = GP.to_le_bytes();
    let n = GP_COUNT_AT.to_le_bytes();
    let w = WRITE_IP.to_le_bytes();
    let rw = RACE_WRITE_IP.to_le_bytes();
    let rip = RACE_GP_IP_AT.to_le_bytes();
    let rn = RACE_GP_COUNT_AT.to_le_bytes();
    let vw = VIEW_WRITE_IP.to_le_bytes();
    let vip = VIEW_GP_IP_AT.to_le_bytes();
    let vn = VIEW_GP_AT.to_le_bytes();
    // The near jumps, each from the end of its 3 bytes.
    let to_race = (RACE_AT.wrapping_sub(GP_HANDLER + 29)).to_le_bytes();
    let to_stale = (STALE_AT.wrapping_sub(GP_HANDLER + 52)).to_le_bytes();
    let to_loop = (VIEW_LOOP.wrapping_sub(GP_HANDLER + 65)).to_le_bytes();
    flat(&[
        // +0: pop ax (the faulting IP)
        &[0x58],
        // +1: cmp ax, WRITE_IP
        &[0x3d, w[0], w[1]],
        // +4: jne +29
        &[0x75, 29 - 6],
        // +6: mov cs:[0x81a], ax
        &[0x2e, 0xa3, ip[0], ip[1]],
        // +10: mov dword cs:[0x808], GP
        &[0x2e, 0x66, 0xc7, 0x06, gp[0], gp[1], g[0], g[1], g[2], g[3]],
        // +20: lock inc word cs:[0x816]
        &[0xf0, 0x2e, 0xff, 0x06, n[0], n[1]],
        // +26: jmp RACE
        &[0xe9, to_race[0], to_race[1]],
        // +29: cmp ax, VIEW_WRITE_IP
        &[0x3d, vw[0], vw[1]],
        // +32: je +52
        &[0x74, 52 - 34],
        // +34: cmp ax, RACE_WRITE_IP
        &[0x3d, rw[0], rw[1]],
        // +37: jne +65
        &[0x75, 65 - 39],
        // +39: mov cs:[0x826], ax
        &[0x2e, 0xa3, rip[0], rip[1]],
        // +43: lock inc word cs:[0x824]
        &[0xf0, 0x2e, 0xff, 0x06, rn[0], rn[1]],
        // +49: jmp STALE
        &[0xe9, to_stale[0], to_stale[1]],
        // +52: mov cs:[VIEW_GP_IP_AT], ax
        &[0x2e, 0xa3, vip[0], vip[1]],
        // +56: lock inc word cs:[VIEW_GP_AT]
        &[0xf0, 0x2e, 0xff, 0x06, vn[0], vn[1]],
        // +62: jmp VIEW_LOOP
        &[0xe9, to_loop[0], to_loop[1]],
        // +65: push ax (then on into ON_OTHER, which pops it)
        &[0x50],
    ])
};

/// Every other vector's handler, after [`ON_GP`]: record the IP, then
/// [`OTHER`]; halt.
pub const ON_OTHER: [u8; 19] = {
    let ip = OTHER_IP_AT.to_le_bytes();
    let at = OTHER_AT.to_le_bytes();
    let o = OTHER.to_le_bytes();
    flat(&[
        // +0: pop ax (the IP the event pushed)
        &[0x58],
        // +1: mov cs:[0x81c], ax
        &[0x2e, 0xa3, ip[0], ip[1]],
        // +5: mov dword cs:[0x810], OTHER
        &[0x2e, 0x66, 0xc7, 0x06, at[0], at[1], o[0], o[1], o[2], o[3]],
        // +15: cli
        &[0xfa],
        // +16: hlt
        &[0xf4],
        // +17: jmp +16
        &[0xeb, 0xfd],
    ])
};

/// Where the other vectors' handler starts.
pub const OTHER_HANDLER: u16 = GP_HANDLER + ON_GP.len() as u16;

// The write at WRITE_IP is MAIN's `mov dword [TARGET], PATTERN`; the code
// ends before the LIDT operand, the IVT before the marks, and the marks
// well below the stack (every processor starts at SP 0x1000 and pushes
// at most one frame of three words).
const _: () = {
    assert!(MAIN[WRITE_IP as usize] == 0x66 && MAIN[WRITE_IP as usize + 2] == 0x06);
    assert!(MAIN[WRITE_IP as usize + 3] == TARGET as u8);
    assert!(MAIN[WRITE_IP as usize + 4] == (TARGET >> 8) as u8);
    let w = (RACE_WRITE_IP - RACE_AT) as usize;
    assert!(RACE[w] == 0x66 && RACE[w + 1] == 0xa3 && RACE[w + 2] == RACE_TARGET as u8);
    let v = (VIEW_WRITE_IP - VIEW_AT) as usize;
    assert!(VIEW[v] == 0x66 && VIEW[v + 1] == 0xa3 && VIEW[v + 2] == VIEW_TARGET as u8);
    assert!(VIEW[v + 3] == (VIEW_TARGET >> 8) as u8);
    let l = (VIEW_LOOP - VIEW_AT) as usize;
    assert!(VIEW[l] == 0xbc && VIEW[v - 2] == 0x74 && VIEW[VIEW.len() - 4] == 0xfa);
    assert!(VIEW_GP_IP_AT + 2 <= STACK_TOP - 6);
    assert!(STALE_DONE_AT + 4 <= STACK_TOP - 6);
    assert!(ON_GP[ON_GP.len() - 1] == 0x50 && OTHER_HANDLER == GP_HANDLER + ON_GP.len() as u16);
    // STALE's jumps: the one to VIEW from +15, the store without a
    // monitor at +52, the read at +132, the watch's loop at +146.
    assert!(STALE[12] == 0xe9 && STALE[52] == 0x66 && STALE[54] == 0x36);
    assert!(STALE[132] == 0x66 && STALE[133] == 0xa1 && STALE[146] == 0xf3);
    assert!(HALTED_AT + 2 <= STACK_TOP - 6);
    assert!(STALE[STALE.len() - 9] == 0x66 && STALE[STALE.len() - 7] == 0x06);
    assert!(RACE_GP_IP_AT + 2 <= STACK_TOP - 6);
    assert!(OTHER_HANDLER as usize + ON_OTHER.len() <= IDTR as usize);
    assert!(IVT as usize + 256 * 4 <= RAN_AT as usize);
    assert!(OTHER_IP_AT + 2 <= STACK_TOP - 6);
};

fn put(at: u64, bytes: &[u8]) {
    // SAFETY: `at` lies in the code page `install` was given: usable RAM
    // below 1 MiB, identity-mapped, which nothing else of this kernel uses
    // and no other processor runs yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
}

/// Clears the page at `page` (below 1 MiB, page-aligned) and puts the
/// code, the LIDT operand and the IVT in it.
pub fn install(page: u64) {
    // SAFETY: as in `put`.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 0x1000) };
    put(page, &MAIN);
    put(page + u64::from(RACE_AT), &RACE);
    put(page + u64::from(STALE_AT), &STALE);
    put(page + u64::from(VIEW_AT), &VIEW);
    put(page + u64::from(GP_HANDLER), &ON_GP);
    put(page + u64::from(OTHER_HANDLER), &ON_OTHER);
    let base = (page + u64::from(IVT)) as u32;
    let mut idtr = [0u8; 6];
    idtr[..2].copy_from_slice(&(256u16 * 4 - 1).to_le_bytes());
    idtr[2..].copy_from_slice(&base.to_le_bytes());
    put(page + u64::from(IDTR), &idtr);
    let segment = (page >> 4) as u16;
    for vector in 0..256u64 {
        let handler = if vector == 13 {
            GP_HANDLER
        } else {
            OTHER_HANDLER
        };
        let mut entry = [0u8; 4];
        entry[..2].copy_from_slice(&handler.to_le_bytes());
        entry[2..].copy_from_slice(&segment.to_le_bytes());
        put(page + u64::from(IVT) + vector * 4, &entry);
    }
}

/// Posts `value` at `off` ([`STOP_AT`], [`CTX_AT`], [`ROUND_AT`],
/// [`GO_AT`], [`PTE_AT`], [`NEW_PTE_AT`]) in the
/// code page at `page`, for the processors in [`RACE`] and [`VIEW`].
pub fn post(page: u64, off: u16, value: u32) {
    assert!(matches!(
        off,
        STOP_AT | CTX_AT | ROUND_AT | GO_AT | PTE_AT | NEW_PTE_AT
    ));
    // SAFETY: a mark in the code page `install` was given (see `put`),
    // aligned; the other processors read it, hence volatile.
    unsafe { core::ptr::write_volatile((page + u64::from(off)) as *mut u32, value) };
}

/// What the processors left in the code page.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    /// [`RAN`] written: one ran the code.
    pub ran: bool,
    /// CPUID.1:ECX there.
    pub ecx: u32,
    /// [`ON_GP`] ran, at the pushed IP.
    pub gp: Option<u16>,
    /// The write to the locked page went through.
    pub wrote: bool,
    /// [`ON_OTHER`] ran, at the pushed IP.
    pub other: Option<u16>,
    /// How many ran, took the #GP, wrote.
    pub counts: [u16; 3],
    /// The race loop's count.
    pub heart: u32,
    /// How many race writes faulted, and the IP the last pushed.
    pub race_faults: (u16, u16),
    /// [`VIEW`]: the OR of the switch statuses, how many reached the
    /// rounds, how many rounds' writes landed and faulted, and the IP
    /// the last fault pushed.
    pub view: ViewMarks,
    /// [`STALE`]: its calls' statuses, the page's first dword at the
    /// lock's return and after the watch, and whether it is done.
    pub stale: StaleMarks,
}

/// What [`STALE`] left.
#[derive(Debug, Clone, Copy)]
pub struct StaleMarks {
    /// `UpdatePageTable`, `RegisterRegion`, `LockRegion` (0 without a
    /// monitor: not made).
    pub statuses: [u32; 3],
    /// The page's first dword right after `UpdatePageTable` returned and
    /// right before `LockRegion` (0 without a monitor: not read).
    pub reads: [u32; 2],
    /// The page's first dword the moment the calls returned.
    pub at_return: u32,
    /// The same after the watch.
    pub after: u32,
    /// Done ([`STALE_DONE_AT`] is 1).
    pub done: bool,
}

/// What [`VIEW`] left.
#[derive(Debug, Clone, Copy)]
pub struct ViewMarks {
    /// The OR of the `SwitchContext` statuses.
    pub switch: u32,
    /// Processors in the rounds.
    pub in_rounds: u16,
    /// Writes that landed.
    pub wrote: u16,
    /// Writes that faulted, and the IP the last one pushed.
    pub faults: (u16, u16),
    /// Processors that halted at the end.
    pub halted: u16,
}

impl Marks {
    /// Reads the marks from the code page at `page`.
    pub fn read(page: u64) -> Self {
        let u32_at = |off: u16| {
            // SAFETY: the code page (see `put`); other processors write it,
            // hence the volatile read; aligned.
            unsafe { core::ptr::read_volatile((page + u64::from(off)) as *const u32) }
        };
        let u16_at = |off: u16| {
            // SAFETY: as above.
            unsafe { core::ptr::read_volatile((page + u64::from(off)) as *const u16) }
        };
        Self {
            ran: u32_at(RAN_AT) == RAN,
            ecx: u32_at(ECX_AT),
            gp: (u32_at(GP_AT) == GP).then(|| u16_at(GP_IP_AT)),
            wrote: u32_at(WROTE_AT) == WROTE,
            other: (u32_at(OTHER_AT) == OTHER).then(|| u16_at(OTHER_IP_AT)),
            counts: [
                u16_at(RAN_COUNT_AT),
                u16_at(GP_COUNT_AT),
                u16_at(WROTE_COUNT_AT),
            ],
            heart: u32_at(HEART_AT),
            race_faults: (u16_at(RACE_GP_COUNT_AT), u16_at(RACE_GP_IP_AT)),
            view: ViewMarks {
                switch: u32_at(SWITCH_AT),
                in_rounds: u16_at(IN_AT),
                wrote: u16_at(VIEW_WROTE_AT),
                faults: (u16_at(VIEW_GP_AT), u16_at(VIEW_GP_IP_AT)),
                halted: u16_at(HALTED_AT),
            },
            stale: StaleMarks {
                statuses: STALE_STATUS_AT.map(u32_at),
                reads: STALE_READS_AT.map(u32_at),
                at_return: u32_at(STALE_AT_RETURN_AT),
                after: u32_at(STALE_AFTER_AT),
                done: u32_at(STALE_DONE_AT) == 1,
            },
        }
    }

    /// Whether [`STALE`] is done, read alone (the BSP's write loop
    /// polls it).
    pub fn stale_done(page: u64) -> bool {
        // SAFETY: a mark in the code page (see `put`), aligned; another
        // processor writes it, hence volatile.
        unsafe { core::ptr::read_volatile((page + u64::from(STALE_DONE_AT)) as *const u32) == 1 }
    }

    /// Whether a processor got to the end of the code (or to a handler).
    pub fn finished(&self) -> bool {
        self.wrote || self.gp.is_some() || self.other.is_some()
    }

    /// Whether CPUID.1:ECX.VMX (bit 5) was set where the code ran.
    pub fn vmx_visible(&self) -> bool {
        self.ecx & (1 << 5) != 0
    }
}
