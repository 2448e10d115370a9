//! What the stale-mapping and view-switch rows need of the demo kernel
//! (`super::stale`, `super::view`): its page tables (the alias window the
//! BSP writes through) and, under okernel, the execute rule, its text
//! and page tables locked, and its gate registered.

use crate::arch::instr::hypercall;
use crate::arch::user;
use okernel_abi::boot::EntryMode;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::ExecuteRule;

/// A setup step that failed: what it was and, for a hypercall, its
/// status.
#[derive(Debug, Clone, Copy)]
pub struct Failed {
    what: &'static str,
    status: Option<Result<Status, u64>>,
}

impl core::fmt::Display for Failed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.status {
            Some(Ok(s)) => write!(f, "{}: {}", self.what, s.name()),
            Some(Err(raw)) => write!(f, "{}: status {raw:#x}", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

/// One hypercall of a setup, named in the row if it fails.
pub fn call(what: &'static str, c: Call, args: [u64; 4]) -> Result<u64, Failed> {
    let r = hypercall(c, args);
    if r.status == Ok(Status::Success) {
        return Ok(r.value0);
    }
    Err(Failed {
        what,
        status: Some(r.status),
    })
}

/// Under okernel, before the scenario locks anything (the rule is fixed
/// at the first lock): execute rights outside locked text are left to
/// the guest's page tables, so that the other processors' real-mode code
/// stays executable once [`kernel`] locks the kernel's text.
pub fn prepare(entry: EntryMode) -> Result<(), Failed> {
    if entry != EntryMode::NonRoot {
        return Ok(());
    }
    call(
        "SetExecuteRule",
        Call::SetExecuteRule,
        [ExecuteRule::GuestPageTables as u64, 0, 0, 0],
    )
    .map(|_| ())
}

/// The demo kernel's page tables, loaded; under okernel (after
/// [`prepare`], whose result is `prepared`) its text and page tables
/// locked and its gate registered (`crate::kernel::gate`).
pub fn kernel(
    entry: EntryMode,
    prepared: Result<(), Failed>,
    (ram_top, sel): (u64, crate::arch::tables::Selectors),
) -> Result<(), Failed> {
    prepared?;
    let monitor = entry == EntryMode::NonRoot;
    let mode = if monitor {
        guest::attack::Mode::Protected
    } else {
        guest::attack::Mode::NoMonitor
    };
    crate::kernel::init(mode, ram_top, sel).map_err(|what| Failed { what, status: None })?;
    if !monitor {
        return Ok(());
    }
    let regions = crate::kernel::protect::regions();
    for name in ["text", "page-tables"] {
        let r = regions
            .iter()
            .find(|r| r.name == name)
            .expect("the kernel registers it");
        let id = call(
            name,
            Call::RegisterRegion,
            [r.base, r.len, r.kind as u64, 0],
        )?;
        call(name, Call::LockRegion, [id, 0, 0, 0])?;
    }
    let gate = call(
        "RegisterGate",
        Call::RegisterGate,
        [
            user::guest_trusted_gate as *const () as u64,
            user::gate_stack_top(),
            crate::kernel::layout().spaces.kernel_root,
            0,
        ],
    )?;
    crate::kernel::set_gate(gate);
    Ok(())
}
