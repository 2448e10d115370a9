//! Facts about the machine the runners run on.

use std::path::Path;

/// Whether `/dev/kvm` exists and this user may open it read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Why `/dev/kvm` cannot be used, in words; `None` when it can.
pub fn kvm_problem() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("/dev/kvm does not exist (no KVM on this host)".to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some("/dev/kvm is not accessible (add this user to the `kvm` group)".to_string())
        }
        Err(e) => Some(format!("/dev/kvm cannot be opened: {e}")),
    }
}

/// Whether KVM here offers nested VMX to its guests: `kvm_intel` loaded
/// with `nested=1` (`Y`) and `/dev/kvm` usable.
pub fn kvm_nested_vmx() -> bool {
    let nested = Path::new("/sys/module/kvm_intel/parameters/nested");
    kvm_usable()
        && std::fs::read_to_string(nested)
            .map(|s| matches!(s.trim(), "Y" | "y" | "1"))
            .unwrap_or(false)
}
