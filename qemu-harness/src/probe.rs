//! Which backends this host can run, each decision with its evidence.
//!
//! Backends are probed, not assumed: an emulator that cannot start here
//! is *unavailable on this host*, with the reason in its own words, which
//! is neither a pass nor a failure of the image; one that starts and then
//! misbehaves is a failure like any other. The VMX backend, Bochs, must
//! be available for a run to pass (the caller decides that).

use crate::bochs::Bochs;
use crate::host::KvmHost;
use crate::kvm::Kvm;
use crate::qemu::{Accel, Qemu};
use crate::{Backend, VmxSupport};
use std::path::Path;

/// Whether a backend can run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// It can; the evidence (and any work-around applied).
    Available(String),
    /// It cannot; why, in the words of the tool that said so.
    Unavailable(String),
}

impl Availability {
    /// Whether the backend can run.
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available(_))
    }

    /// The evidence or the reason.
    pub fn evidence(&self) -> &str {
        match self {
            Availability::Available(e) | Availability::Unavailable(e) => e,
        }
    }
}

/// A backend and what its probe found.
pub struct Probed {
    /// The backend, configured as the probe found it must run.
    pub backend: Box<dyn Backend>,
    /// Whether it can run here.
    pub availability: Availability,
}

impl Probed {
    /// One line: `name: available (evidence)` or `name: unavailable on
    /// this host: reason`.
    pub fn describe(&self) -> String {
        let vmx = match self.backend.vmx() {
            VmxSupport::Available => "VMX",
            VmxSupport::Unavailable => "no VMX",
        };
        match &self.availability {
            Availability::Available(e) => {
                format!("{}: available, {vmx} ({e})", self.backend.name())
            }
            Availability::Unavailable(why) => {
                format!("{}: unavailable on this host: {why}", self.backend.name())
            }
        }
    }
}

/// Every backend, best first for the main job, each probed; the probes'
/// files go under `dir` (one folder each). With nested VMX under KVM the
/// KVM backends come first; Bochs is otherwise the VMX backend.
pub fn backends(dir: &Path) -> Vec<Probed> {
    let host = KvmHost::get();
    let kvm_backends = || -> Vec<Probed> {
        match &host.problem {
            Some(why) => vec![
                unavailable(Box::new(Kvm::new()), why),
                unavailable(Box::new(Qemu::new(Accel::Kvm)), why),
            ],
            None => {
                let (qemu, availability) = Qemu::new(Accel::Kvm).probe(&dir.join("qemu-kvm"));
                vec![
                    Probed {
                        backend: Box::new(Kvm::new()),
                        availability: Availability::Available(format!(
                            "/dev/kvm {}",
                            host.describe()
                        )),
                    },
                    Probed {
                        backend: Box::new(qemu),
                        availability,
                    },
                ]
            }
        }
    };
    let bochs = Probed {
        backend: Box::new(Bochs),
        availability: Bochs::probe(&dir.join("bochs")),
    };
    let mut v = Vec::new();
    if host.nested_vmx() {
        v.extend(kvm_backends());
        v.push(bochs);
    } else {
        v.push(bochs);
        v.extend(kvm_backends());
    }
    let (tcg, availability) = Qemu::new(Accel::Tcg).probe(&dir.join("qemu-tcg"));
    v.push(Probed {
        backend: Box::new(tcg),
        availability,
    });
    v
}

fn unavailable(backend: Box<dyn Backend>, why: &str) -> Probed {
    Probed {
        backend,
        availability: Availability::Unavailable(why.to_string()),
    }
}
