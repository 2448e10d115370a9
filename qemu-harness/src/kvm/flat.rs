//! Tiny PVH images built from a few bytes of 32-bit code: an ELF64 file
//! with one `PT_LOAD` segment and a `PT_NOTE` segment holding
//! `XEN_ELFNOTE_PHYS32_ENTRY`, exactly what the loader's entry stub
//! provides. The harness's own tests (triple fault, tight loop, snapshot)
//! and the reset benchmark boot these.

use super::boot::XEN_ELFNOTE_PHYS32_ENTRY;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// An ELF64 x86-64 executable whose single segment holds `code` at
/// physical (and virtual) address `load`, entered at `load` through the
/// PVH note.
pub fn pvh_elf(code: &[u8], load: u32) -> Vec<u8> {
    let note_off = EHDR_SIZE + 2 * PHDR_SIZE;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz ("Xen\0")
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&(XEN_ELFNOTE_PHYS32_ENTRY as u32).to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&load.to_le_bytes());
    let code_off = (note_off + note.len()).next_multiple_of(16);

    let mut f = vec![0u8; code_off];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // EM_X86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, u64::from(load)); // e_entry
    put64(&mut f, 32, EHDR_SIZE as u64); // e_phoff
    put16(&mut f, 52, EHDR_SIZE as u16);
    put16(&mut f, 54, PHDR_SIZE as u16);
    put16(&mut f, 56, 2); // e_phnum

    let load_ph = EHDR_SIZE;
    put32(&mut f, load_ph, 1); // PT_LOAD
    put32(&mut f, load_ph + 4, 7); // RWX
    put64(&mut f, load_ph + 8, code_off as u64);
    put64(&mut f, load_ph + 16, u64::from(load));
    put64(&mut f, load_ph + 24, u64::from(load));
    put64(&mut f, load_ph + 32, code.len() as u64);
    put64(&mut f, load_ph + 40, code.len() as u64);
    put64(&mut f, load_ph + 48, 0x1000);

    let note_ph = EHDR_SIZE + PHDR_SIZE;
    put32(&mut f, note_ph, 4); // PT_NOTE
    put32(&mut f, note_ph + 4, 4);
    put64(&mut f, note_ph + 8, note_off as u64);
    put64(&mut f, note_ph + 32, note.len() as u64);
    put64(&mut f, note_ph + 40, note.len() as u64);
    put64(&mut f, note_ph + 48, 4);

    f[note_off..note_off + note.len()].copy_from_slice(&note);
    f.extend_from_slice(code);
    f
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Ready-made 32-bit code (entered in flat protected mode, paging off).
pub mod code {
    /// `jmp $`: spins forever without a single exit.
    pub const SPIN: &[u8] = &[0xeb, 0xfe];
    /// `cli; hlt; jmp $-3`: halts with interrupts off forever.
    pub const HALT: &[u8] = &[0xfa, 0xf4, 0xeb, 0xfd];

    /// `lidt [idtr]` of a zero-limit IDT, then `xor ecx, ecx; div ecx`:
    /// the #DE cannot be delivered (#GP), nor can the #GP (#DF), nor the
    /// #DF: a triple fault (SDM Vol. 3A §7.15, "Interrupt 8—Double Fault
    /// Exception"). `load` is where the code lies; the 6-byte IDTR follows
    /// it. Returns the code and the offset of the `div`. (`int3` or `ud2`
    /// would do on bare metal, but KVM intercepts #BP/#UD and may try to
    /// emulate them instead.)
    pub fn triple_fault(load: u32) -> (Vec<u8>, usize) {
        let idtr = load + 16;
        let mut c = vec![0x0f, 0x01, 0x1d]; // lidt [disp32]
        c.extend_from_slice(&idtr.to_le_bytes());
        c.extend_from_slice(&[0x31, 0xc9]); // xor ecx, ecx
        c.extend_from_slice(&[0xf7, 0xf1]); // div ecx, at offset 9
        c.resize(16, 0x90);
        c.extend_from_slice(&[0; 6]); // IDTR: limit 0, base 0
        (c, 9)
    }

    /// Writes `text` to the I/O port `port`, one `out dx, al` per byte.
    pub fn print(port: u16, text: &[u8]) -> Vec<u8> {
        let mut c = vec![0x66, 0xba]; // mov dx, port
        c.extend_from_slice(&port.to_le_bytes());
        for &b in text {
            c.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
        }
        c
    }

    /// Writes the byte `value` to the exit port (`mov al, value; out 0xf4,
    /// al`), then spins.
    pub fn exit_with(value: u8) -> Vec<u8> {
        vec![0xb0, value, 0xe6, 0xf4, 0xeb, 0xfe]
    }

    /// Dirties registers, an MSR and `pages` pages of memory from `dst`,
    /// then writes `value` to the exit port:
    /// `mov edi, dst; mov ecx, pages*1024; mov eax, 0x5a5a5a5a; rep stosd;
    /// mov ecx, 0x174; mov eax, 0x10; xor edx, edx; wrmsr
    /// (IA32_SYSENTER_CS); mov ebx, 0x1234567; mov esi, 0x89abcdef;
    /// mov al, value; out 0xf4, al; jmp $`.
    pub fn dirty(dst: u32, pages: u32, value: u8) -> Vec<u8> {
        let mut c = vec![0xbf];
        c.extend_from_slice(&dst.to_le_bytes());
        c.push(0xb9);
        c.extend_from_slice(&(pages * 1024).to_le_bytes());
        c.push(0xb8);
        c.extend_from_slice(&0x5a5a_5a5au32.to_le_bytes());
        c.extend_from_slice(&[0xf3, 0xab]); // rep stosd
        c.push(0xb9);
        c.extend_from_slice(&0x174u32.to_le_bytes());
        c.push(0xb8);
        c.extend_from_slice(&0x10u32.to_le_bytes());
        c.extend_from_slice(&[0x31, 0xd2, 0x0f, 0x30]); // xor edx, edx; wrmsr
        c.push(0xbb);
        c.extend_from_slice(&0x0123_4567u32.to_le_bytes());
        c.push(0xbe);
        c.extend_from_slice(&0x89ab_cdefu32.to_le_bytes());
        c.extend_from_slice(&exit_with(value));
        c
    }

    /// A stand-in for the fuzz executor's mailbox transport
    /// ([`okernel_abi::fuzz::mailbox`]) at `mailbox`: rings the doorbell
    /// (`mov dx, 0xf5; mov eax, mailbox; out dx, eax`) with an empty
    /// result, then for every case writes a passing 13-byte result frame
    /// whose `ops_total` is the case length and `ops_run` the first case
    /// byte, and rings again. A case starting with 0xEE spins forever;
    /// one starting with 0xDD writes 0x12 (panic) to the exit port.
    pub fn fuzz_echo(mailbox: u32) -> Vec<u8> {
        use okernel_abi::fuzz::mailbox::{CASE, CASE_LEN, RESULT, RESULT_LEN};
        let result_len = mailbox + RESULT_LEN as u32;
        let frame = mailbox + RESULT as u32;
        let mut c = Vec::new();
        let store32 = |c: &mut Vec<u8>, addr: u32, v: u32| {
            c.extend_from_slice(&[0xc7, 0x05]); // mov dword [addr], imm32
            c.extend_from_slice(&addr.to_le_bytes());
            c.extend_from_slice(&v.to_le_bytes());
        };
        store32(&mut c, result_len, 0);
        c.extend_from_slice(&[0x66, 0xba, 0xf5, 0x00]); // mov dx, 0xf5
        let top = c.len();
        c.push(0xb8); // mov eax, mailbox
        c.extend_from_slice(&mailbox.to_le_bytes());
        c.push(0xef); // out dx, eax
        c.extend_from_slice(&[0x0f, 0xb6, 0x0d]); // movzx ecx, byte [case]
        c.extend_from_slice(&(mailbox + CASE as u32).to_le_bytes());
        c.extend_from_slice(&[0x80, 0xf9, 0xee, 0x74, 0xfe]); // cmp cl, 0xee; je $
        c.extend_from_slice(&[0x80, 0xf9, 0xdd, 0x75, 0x06]); // cmp cl, 0xdd; jne +6
        c.extend_from_slice(&[0xb0, 0x12, 0xe6, 0xf4, 0xeb, 0xfe]); // mov al, 0x12; out 0xf4, al; jmp $
        c.extend_from_slice(&[0x66, 0x89, 0x0d]); // mov [frame + 3], cx: ops_run
        c.extend_from_slice(&(frame + 3).to_le_bytes());
        c.extend_from_slice(&[0x8b, 0x0d]); // mov ecx, [case_len]
        c.extend_from_slice(&(mailbox + CASE_LEN as u32).to_le_bytes());
        c.extend_from_slice(&[0x66, 0x89, 0x0d]); // mov [frame + 1], cx: ops_total
        c.extend_from_slice(&(frame + 1).to_le_bytes());
        c.extend_from_slice(&[0xc6, 0x05]); // mov byte [frame], 0: pass
        c.extend_from_slice(&frame.to_le_bytes());
        c.push(0);
        store32(&mut c, frame + 5, 0); // exits
        store32(&mut c, frame + 9, 0); // no hits, no message
        store32(&mut c, result_len, 13);
        let back = top as i64 - (c.len() as i64 + 5);
        c.push(0xe9); // jmp top
        c.extend_from_slice(&(back as i32).to_le_bytes());
        c
    }
}
