//! Control registers as the kernel reads them back (under okernel: the
//! read shadows and whatever bits the monitor owns, SDM Vol. 3C §25.6.6),
//! after writes a kernel makes: CR0.NE and CR0.CD+NW toggled and restored
//! (NE is fixed to 1 in VMX operation, Appendix A.7, so the monitor must
//! own and shadow it), CR4.VMXE set (VMX hidden: #GP as on a CPU
//! without VMX), and the values themselves.

use super::{Seen, at};
use crate::probes::*;
use crate::report::Checks;
use crate::trap::probe;

const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR4_VMXE: u64 = 1 << 13;

fn cr0() -> u64 {
    x86_64::registers::control::Cr0::read_raw()
}

/// Runs the checks.
pub fn run_all(c: &mut Checks) {
    c.line("cr0", true, format_args!("0x{:x}", cr0()));
    c.line("cr4", true, format_args!("0x{:x}", crate::cpu::cr4()));
    for (name, bit) in [("cr0-ne", CR0_NE), ("cr0-cd-nw", CR0_CD | CR0_NW)] {
        let before = cr0();
        // Toggle the bit, read back, restore, read back.
        let (clear, set) = (&conf_cr0_and, &conf_cr0_or);
        let (toggle, restore) = if before & bit != 0 {
            ((clear, !bit), (set, bit))
        } else {
            ((set, bit), (clear, !bit))
        };
        let toggled = probe(toggle.0.entry(), toggle.1).map(|_| cr0());
        let restored = probe(restore.0.entry(), restore.1).map(|_| cr0());
        match (toggled, restored) {
            // Relative to CR0 before, whose value is its own line.
            (Ok(a), Ok(b)) => c.line(
                name,
                a == before ^ bit && b == before,
                format_args!(
                    "toggled: {}, restored: {}",
                    if a == before ^ bit {
                        "exactly those bits changed"
                    } else {
                        "OTHER BITS CHANGED"
                    },
                    if b == before {
                        "as before"
                    } else {
                        "NOT AS BEFORE"
                    }
                ),
            ),
            (a, b) => c.line(
                name,
                false,
                format_args!(
                    "toggle: {}, restore: {}",
                    Seen {
                        result: &a,
                        at: toggle.0.at,
                        next: toggle.0.next
                    },
                    Seen {
                        result: &b,
                        at: restore.0.at,
                        next: restore.0.next
                    }
                ),
            ),
        }
    }
    let [_, _, ecx, _] = crate::cpu::cpuid(1, 0);
    let vmx = ecx & super::intercepts::CPUID1_ECX_VMX != 0;
    let d = &conf_cr4_or;
    let r = probe(d.entry(), CR4_VMXE);
    // Where it took, CR4.VMXE goes off again before anything else runs.
    if r.is_ok() {
        let cr4 = crate::cpu::cr4();
        // SAFETY: clearing VMXE outside VMX operation changes nothing
        // else (the kernel never executed VMXON).
        unsafe { crate::cpu::set_cr4(cr4 & !CR4_VMXE) };
    }
    // SDM Vol. 3A §2.5: setting VMXE where CPUID lists no VMX is #GP(0).
    let want = if vmx { None } else { Some(at(13, 0)) };
    super::report(c, "mov-cr4-set-vmxe", &r, want, d.at, d.next);
}
