//! The guest's CPUID, and whether it gets VMX.
//!
//! KVM offers nested VMX when `kvm_intel` runs with `nested=1` *and*
//! KVM_GET_SUPPORTED_CPUID reports CPUID.1:ECX.VMX (bit 5, SDM Vol. 2A
//! Table 3-10). Then the guest keeps the bit, KVM provides the VMX
//! capability MSRs, and IA32_FEATURE_CONTROL starts unlocked (there is no
//! firmware to lock it), so okernel sets and locks it itself (SDM Vol. 3C
//! §24.7 "Enabling and Entering VMX Operation"). Otherwise the bit is
//! cleared and the image must report "VMX unavailable".

use super::KvmError;
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use std::path::Path;

/// CPUID.1:ECX.VMX.
pub const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// Where `kvm_intel` says whether it offers nested VMX.
pub const NESTED_PARAM: &str = "/sys/module/kvm_intel/parameters/nested";

/// Which mode a run ran in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmxMode {
    /// Whether the guest has VMX (nested under KVM).
    pub nested: bool,
    /// Why, in words.
    pub why: String,
}

impl VmxMode {
    /// One line for the console header and the run directory.
    pub fn describe(&self) -> String {
        let mode = if self.nested { "nested VMX" } else { "no VMX" };
        format!("{mode} ({})", self.why)
    }
}

/// What KVM supports for guests (KVM_GET_SUPPORTED_CPUID).
pub fn supported(kvm: &kvm_ioctls::Kvm) -> Result<CpuId, KvmError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(KvmError::ioctl("KVM_GET_SUPPORTED_CPUID"))
}

/// The `kvm_intel` `nested` parameter, trimmed; `None` when the file does
/// not exist (module not loaded, or an AMD host).
pub fn nested_param(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The KVM vendor modules loaded here (`kvm_intel`, `kvm_amd`, or
/// `kvm_pvm`, which runs guests without hardware virtualisation and so
/// never offers VMX), for the run directory.
pub fn kvm_modules() -> Vec<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .filter(|m| Path::new("/sys/module").join(m).is_dir())
        .collect()
}

fn leaf1_ecx(cpuid: &CpuId) -> Option<u32> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 1 && e.index == 0)
        .map(|e| e.ecx)
}

/// Decides the mode from KVM's supported CPUID and the `nested` parameter.
pub fn detect(supported: &CpuId, nested: Option<&str>) -> VmxMode {
    let bit = leaf1_ecx(supported).is_some_and(|ecx| ecx & CPUID_1_ECX_VMX != 0);
    let param_on = matches!(nested, Some("Y" | "y" | "1"));
    let param = match nested {
        Some(v) => format!("kvm_intel nested={v}"),
        None => "kvm_intel nested parameter absent".to_string(),
    };
    let why = match (bit, param_on) {
        (true, true) => format!("{param}, KVM_GET_SUPPORTED_CPUID has CPUID.1:ECX.VMX=1"),
        (true, false) => format!(
            "{param}, although KVM_GET_SUPPORTED_CPUID has CPUID.1:ECX.VMX=1: \
             VMX bit cleared"
        ),
        (false, _) => format!("{param}, KVM_GET_SUPPORTED_CPUID has CPUID.1:ECX.VMX=0"),
    };
    VmxMode {
        nested: bit && param_on,
        why,
    }
}

/// The CPUID the guest gets: what KVM supports, VMX per `mode`, and the
/// APIC IDs of the single vCPU (0) in leaves 1, 0xB and 0x1F.
pub fn for_guest(supported: &CpuId, mode: &VmxMode) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                if !mode.nested {
                    e.ecx &= !CPUID_1_ECX_VMX;
                }
                e.ebx &= 0x00ff_ffff; // initial APIC ID 0
            }
            0xb | 0x1f => e.edx = 0, // x2APIC ID 0
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn with_leaf1_ecx(ecx: u32) -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0x1f,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ecx,
                ebx: 0x0300_0800,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    #[test]
    fn nested_needs_both_the_bit_and_the_parameter() {
        let vmx = with_leaf1_ecx(CPUID_1_ECX_VMX | 1);
        let none = with_leaf1_ecx(1);
        assert!(detect(&vmx, Some("Y")).nested);
        assert!(detect(&vmx, Some("1")).nested);
        assert!(!detect(&vmx, Some("N")).nested);
        assert!(!detect(&vmx, None).nested);
        let m = detect(&none, Some("Y"));
        assert!(!m.nested);
        assert!(m.describe().starts_with("no VMX"), "{}", m.describe());
        assert!(m.why.contains("CPUID.1:ECX.VMX=0"), "{}", m.why);
        assert!(detect(&vmx, None).why.contains("absent"));
    }

    #[test]
    fn guest_cpuid_follows_the_mode() {
        let vmx = with_leaf1_ecx(CPUID_1_ECX_VMX | 1);
        let on = for_guest(&vmx, &detect(&vmx, Some("Y")));
        assert_eq!(leaf1_ecx(&on), Some(CPUID_1_ECX_VMX | 1));
        let off = for_guest(&vmx, &detect(&vmx, Some("N")));
        assert_eq!(leaf1_ecx(&off), Some(1));
        let ebx = off.as_slice().iter().find(|e| e.function == 1).unwrap().ebx;
        assert_eq!(ebx, 0x0000_0800, "APIC ID cleared, the rest kept");
    }

    #[test]
    fn this_host_is_classified_consistently() {
        // Where KVM is usable, the mode follows the real supported CPUID
        // and the real parameter; `kvm_nested_vmx()` must agree on hosts
        // where the CPUID bit and the parameter agree.
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("skipped: {}", crate::kvm_problem().unwrap_or_default());
            return;
        };
        let sup = supported(&kvm).unwrap();
        let mode = detect(&sup, nested_param(Path::new(NESTED_PARAM)).as_deref());
        if mode.nested {
            assert!(crate::kvm_nested_vmx());
        }
        eprintln!("this host: {}", mode.describe());
    }
}
