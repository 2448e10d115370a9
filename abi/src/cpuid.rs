//! The okernel CPUID leaves.
//!
//! Leaves `0x4000_0000..=0x4000_00FF` are reserved for hypervisors
//! (SDM Vol. 2A, CPUID: "Hypervisor" range is software-defined; Intel never
//! uses it). okernel answers:
//!
//! | leaf          | EAX                 | EBX, ECX, EDX            |
//! |---------------|---------------------|--------------------------|
//! | `0x4000_0000` | highest okernel leaf| signature [`SIGNATURE`]  |
//! | `0x4000_0001` | packed ABI version  | 0                        |

/// The hypervisor base leaf.
pub const LEAF_SIGNATURE: u32 = 0x4000_0000;
/// The leaf that carries the ABI version in EAX.
pub const LEAF_VERSION: u32 = 0x4000_0001;
/// The highest okernel leaf.
pub const LEAF_MAX: u32 = LEAF_VERSION;

/// The 12-byte signature returned in EBX, ECX, EDX of [`LEAF_SIGNATURE`].
pub const SIGNATURE: [u8; 12] = *b"OKernelShim!";

/// Splits [`SIGNATURE`] into the (EBX, ECX, EDX) register values.
pub const fn signature_registers() -> (u32, u32, u32) {
    let s = SIGNATURE;
    (
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    )
}

/// Whether (EBX, ECX, EDX) of leaf `0x4000_0000` carry the okernel signature.
pub const fn is_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    let (b, c, d) = signature_registers();
    ebx == b && ecx == c && edx == d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips() {
        let (b, c, d) = signature_registers();
        assert!(is_signature(b, c, d));
        assert!(!is_signature(b, c, d ^ 1));
    }
}
