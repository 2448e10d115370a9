//! The stores the monitor completes for the guest to a write-trapped MMIO
//! page (the local APIC's, [`super::xapic`]): an EPT violation says where
//! the guest wrote (the guest-physical address) but not what, and gives
//! no instruction length (SDM Vol. 3C §28.2.5: the VM-exit
//! instruction-length field is defined only for exits an instruction
//! causes directly, not for EPT violations). So the monitor decodes the
//! instruction at RIP, in 64-bit mode only, and only the forms a kernel
//! uses to write a 32-bit device register (SDM Vol. 2B "MOV"):
//!
//! | encoding | form |
//! |---|---|
//! | `89 /r` | MOV r/m32, r32 |
//! | `C7 /0 id` | MOV r/m32, imm32 |
//! | `A3 mo64` | MOV moffs32, EAX |
//!
//! with any REX prefix but REX.W (a 64-bit store), and the legacy prefixes
//! that change neither the operand nor the operand size: segment
//! overrides and address size (67). Anything else — an operand-size
//! prefix, LOCK, REP, XCHG, a string store, a vector store — is
//! [`Undecodable`]: the caller refuses it. The decoder reads only the
//! bytes it is given (at most 15, SDM Vol. 2A §2.3.11), so the length it
//! returns is the instruction's.
//!
//! ModR/M and SIB (SDM Vol. 2A §2.1.5, Tables 2-2 and 2-3; §2.2.1.6 for
//! RIP-relative addressing): the memory operand's displacement size
//! follows from mod, rm = 100 adds a SIB byte, and mod = 00 with rm = 101
//! (RIP-relative) or with SIB base = 101 takes a disp32. mod = 11 names
//! a register, not memory: such an instruction cannot write MMIO.

/// The longest instruction (SDM Vol. 2A §2.3.11).
pub const MAX_LEN: usize = 15;

/// What a decoded store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The low 32 bits of general-purpose register `n` (0 RAX … 15 R15,
    /// the order of `crate::vmx::regs::Gpr`'s encoding).
    Register(u8),
    /// An immediate.
    Immediate(u32),
}

/// A decoded 32-bit store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    /// The instruction's length in bytes.
    pub len: u8,
    /// What it writes.
    pub source: Source,
}

/// Why an instruction is not a store the monitor completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecodable {
    /// The bytes end before the instruction does.
    Truncated,
    /// An opcode or prefix outside the table above.
    Unsupported(u8),
    /// A 64-bit store (REX.W), which would write two registers.
    Wide,
    /// A register operand (mod = 11), or C7 with a reg field but 0.
    NotAStore,
}

const REX_W: u8 = 0b1000;
const REX_R: u8 = 0b0100;

/// Decodes the 64-bit-mode instruction at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Store, Undecodable> {
    let bytes = &bytes[..bytes.len().min(MAX_LEN)];
    let mut at = 0;
    let byte = |i: usize| bytes.get(i).copied().ok_or(Undecodable::Truncated);
    // Legacy prefixes: segment overrides (ignored in 64-bit mode but for
    // FS and GS, which change only the address) and address size.
    while matches!(byte(at)?, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67) {
        at += 1;
    }
    // A REX prefix counts only right before the opcode (§2.2.1).
    let mut rex = 0;
    if byte(at)? & 0xf0 == 0x40 {
        rex = byte(at)?;
        at += 1;
    }
    if rex & REX_W != 0 {
        return Err(Undecodable::Wide);
    }
    let opcode = byte(at)?;
    at += 1;
    let source = match opcode {
        0xa3 => {
            // moffs: an 8-byte address (a 67 prefix makes it 4).
            let wide_address = !bytes[..at].contains(&0x67);
            at += if wide_address { 8 } else { 4 };
            byte(at - 1)?;
            return Ok(Store {
                len: at as u8,
                source: Source::Register(0),
            });
        }
        0x89 | 0xc7 => {
            let modrm = byte(at)?;
            at += 1;
            let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
            if md == 0b11 {
                return Err(Undecodable::NotAStore);
            }
            if rm == 0b100 {
                let sib = byte(at)?;
                at += 1;
                if md == 0b00 && sib & 7 == 0b101 {
                    at += 4;
                }
            } else if md == 0b00 && rm == 0b101 {
                at += 4;
            }
            at += match md {
                0b01 => 1,
                0b10 => 4,
                _ => 0,
            };
            if opcode == 0x89 {
                let r = if rex & REX_R != 0 { 8 } else { 0 };
                Source::Register(reg | r)
            } else if reg != 0 {
                return Err(Undecodable::NotAStore);
            } else {
                let imm = [byte(at)?, byte(at + 1)?, byte(at + 2)?, byte(at + 3)?];
                at += 4;
                Source::Immediate(u32::from_le_bytes(imm))
            }
        }
        other => return Err(Undecodable::Unsupported(other)),
    };
    // The last byte of the displacement or immediate must be there.
    byte(at - 1)?;
    Ok(Store {
        len: at as u8,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(len: u8, source: Source) -> Result<Store, Undecodable> {
        Ok(Store { len, source })
    }

    /// Encodings as GNU as writes them (checked by hand with `as` and
    /// `objdump -d`).
    #[test]
    fn the_forms_a_kernel_writes_a_register_with() {
        use Source::{Immediate as I, Register as R};
        let cases: [(&[u8], Result<Store, Undecodable>); 14] = [
            // mov %eax,(%rdx)
            (&[0x89, 0x02], store(2, R(0))),
            // mov %esi,0x300(%rax)
            (&[0x89, 0xb0, 0x00, 0x03, 0x00, 0x00], store(6, R(6))),
            // mov %edi,-0xa03d00 (absolute: SIB, no base, no index)
            (&[0x89, 0x3c, 0x25, 0x00, 0xc3, 0x5f, 0xff], store(7, R(7))),
            // mov %r9d,0xb0(%rcx,%rdx,1)
            (&[0x44, 0x89, 0x8c, 0x11, 0xb0, 0, 0, 0], store(8, R(9))),
            // mov %eax,0x10(%rbp)
            (&[0x89, 0x45, 0x10], store(3, R(0))),
            // mov %ecx,0x1234(%rip)
            (&[0x89, 0x0d, 0x34, 0x12, 0, 0], store(6, R(1))),
            // movl $0x0,0xb0(%rax)
            (&[0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0], store(10, I(0))),
            // movl $0x4500,(%rax,%rbx,4)
            (&[0xc7, 0x04, 0x98, 0x00, 0x45, 0, 0], store(7, I(0x4500))),
            // movl $0x1,%fs:0x8(%rsp)
            (&[0x64, 0xc7, 0x44, 0x24, 0x08, 1, 0, 0, 0], store(9, I(1))),
            // mov %eax,0xfffffffffee00300 (movabs)
            (
                &[0xa3, 0x00, 0x03, 0xe0, 0xfe, 0xff, 0xff, 0xff, 0xff],
                store(9, R(0)),
            ),
            // addr32 mov %eax,0xfee00300
            (&[0x67, 0xa3, 0x00, 0x03, 0xe0, 0xfe], store(6, R(0))),
            // mov %r15d,(%r8) (REX.RB)
            (&[0x45, 0x89, 0x38], store(3, R(15))),
            // A longer buffer: only the instruction counts.
            (&[0x89, 0x02, 0x90, 0x90], store(2, R(0))),
            // mov %esp,(%rsp): SIB with base RSP.
            (&[0x89, 0x24, 0x24], store(3, R(4))),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), want, "{bytes:02x?}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        use Undecodable::*;
        let cases: [(&[u8], Undecodable); 12] = [
            // mov %rax,(%rdx): 64 bits.
            (&[0x48, 0x89, 0x02], Wide),
            // mov %ax,(%rdx): operand-size prefix.
            (&[0x66, 0x89, 0x02], Unsupported(0x66)),
            // lock or: not a store the monitor completes.
            (&[0xf0, 0x09, 0x02], Unsupported(0xf0)),
            // xchg %eax,(%rdx)
            (&[0x87, 0x02], Unsupported(0x87)),
            // rep stos
            (&[0xf3, 0xab], Unsupported(0xf3)),
            // mov %eax,%edx: a register.
            (&[0x89, 0xc2], NotAStore),
            // C7 /1 is not MOV.
            (&[0xc7, 0x08, 0, 0, 0, 0], NotAStore),
            // Truncated: ModR/M, SIB, disp32, imm32, moffs.
            (&[0x89], Truncated),
            (&[0x89, 0x04], Truncated),
            (&[0x89, 0x05, 0, 0, 0], Truncated),
            (&[0xc7, 0x00, 0, 0, 0], Truncated),
            (&[0xa3, 0, 0, 0, 0, 0, 0, 0], Truncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), Err(want), "{bytes:02x?}");
        }
        assert_eq!(decode(&[]), Err(Truncated));
        // Prefixes alone, past the architectural limit: never a store.
        assert_eq!(decode(&[0x2e; 20]), Err(Truncated));
        // A REX prefix not right before the opcode is not one (REX then a
        // segment override: 0x2e is the opcode, unsupported).
        assert_eq!(decode(&[0x44, 0x2e, 0x89, 0x02]), Err(Unsupported(0x2e)));
    }

    /// Every byte string decodes to an error or a store no longer than
    /// the bytes it was given.
    #[test]
    fn a_store_never_reaches_past_its_bytes() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut b = [0u8; 16];
            for v in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            // Bias the opcode towards the forms that decode.
            b[(x as usize >> 8) % 3] = [0x89, 0xc7, 0xa3][(x as usize >> 16) % 3];
            let n = (x >> 24) as usize % 17;
            if let Ok(s) = decode(&b[..n]) {
                assert!(
                    usize::from(s.len) <= n.min(MAX_LEN),
                    "{:02x?} {s:?}",
                    &b[..n]
                );
            }
        }
    }
}
