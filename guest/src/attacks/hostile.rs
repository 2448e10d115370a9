//! Hostile hypercalls, one per malformed class of the ABI: each must get
//! its documented status and change nothing (invariant 11; 8 for the
//! second lock). Made by the kernel in the trusted context — the attacker
//! of DESIGN.md §2 is any code at CPL0 in NR-mode — except the `VMCALL`
//! from ring 3, which `container-a`'s user code makes.

use super::{Obs, Suite};
use crate::arch::instr::{Reply, hypercall, hypercall_raw};
use crate::kernel::{self, DATA_PAGE};
use guest::attack;
use guest::tasks::{CONTAINER_A, user_op};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{MAX_CONTEXTS, RegionKind};

/// An address far above any RAM the backends give the guest.
const OUT_OF_RAM: u64 = 0x40_0000_0000;

fn name(s: Result<Status, u64>) -> &'static str {
    s.map_or("undefined status", Status::name)
}

impl Suite<'_> {
    /// Attack `attack`: `reply` must fail (blocked), with its documented
    /// status (as promised).
    fn refused(&mut self, attack: &str, what: &str, reply: impl FnOnce() -> Reply) {
        let want = attack::by_name(attack)
            .and_then(|a| a.status)
            .expect("hostile attacks name a status");
        self.attack(attack, |_| {
            let r = reply();
            let mut obs = Obs::new(
                r.status != Ok(Status::Success),
                None,
                format_args!("{what}: {} (documented: {})", name(r.status), want.name()),
            );
            obs.counts = r.status == Ok(want);
            obs
        });
    }
}

/// Runs the hostile hypercalls.
pub fn run(s: &mut Suite<'_>) {
    let page = DATA_PAGE.addr();
    let rodata = RegionKind::Rodata as u64;
    s.refused("hostile-unaligned", "RegisterRegion(base+8)", || {
        hypercall(Call::RegisterRegion, [page + 8, 0x1000, rodata, 0])
    });
    s.refused("hostile-empty", "RegisterRegion(len 0)", || {
        hypercall(Call::RegisterRegion, [page, 0, rodata, 0])
    });
    let text = crate::kernel::protect::regions()[0];
    s.refused(
        "hostile-overlap",
        "RegisterRegion(text's first page)",
        || hypercall(Call::RegisterRegion, [text.base, 0x1000, rodata, 0]),
    );
    s.refused("hostile-out-of-ram", "RegisterRegion(256 GiB)", || {
        hypercall(Call::RegisterRegion, [OUT_OF_RAM, 0x1000, rodata, 0])
    });
    let monitor = s.monitor.unwrap_or(0) & !0xfff;
    s.refused(
        "hostile-monitor-range",
        "RegisterRegion(monitor page)",
        || hypercall(Call::RegisterRegion, [monitor, 0x1000, rodata, 0]),
    );
    s.refused("hostile-unknown-call", "call 15", || {
        hypercall_raw(15, [0; 4])
    });
    s.refused("hostile-bad-context", "DestroyContext(0x7777)", || {
        hypercall(Call::DestroyContext, [0x7777, 0, 0, 0])
    });
    s.refused("hostile-dead-context", "DestroyContext(destroyed)", || {
        let c = hypercall(Call::CreateContext, [0; 4]);
        if c.status != Ok(Status::Success) {
            return c;
        }
        let d = hypercall(Call::DestroyContext, [c.value0, 0, 0, 0]);
        if d.status != Ok(Status::Success) {
            return d;
        }
        hypercall(Call::DestroyContext, [c.value0, 0, 0, 0])
    });
    s.refused("hostile-exhausted", "CreateContext until full", || {
        let mut made = [0u64; MAX_CONTEXTS + 1];
        let mut n = 0;
        let last = loop {
            let r = hypercall(Call::CreateContext, [0; 4]);
            if r.status != Ok(Status::Success) || n == made.len() {
                break r;
            }
            made[n] = r.value0;
            n += 1;
        };
        for &c in &made[..n] {
            hypercall(Call::DestroyContext, [c, 0, 0, 0]);
        }
        last
    });
    let text_id = s.reg.text_id;
    s.refused("hostile-relock", "LockRegion(text) again", || {
        hypercall(Call::LockRegion, [text_id.unwrap_or(u64::MAX), 0, 0, 0])
    });
    let entry = kernel::layout().spaces.alias_entry(4);
    s.refused("hostile-unaligned-pte", "UpdatePageTable(entry+4)", || {
        hypercall(Call::UpdatePageTable, [entry + 4, 0, 0, 0])
    });
    s.refused("hostile-cpl3-vmcall", "VMCALL Null at CPL3", || {
        let d = kernel::run(CONTAINER_A, [user_op::VMCALL, Call::Null.raw(), 0, 0]);
        Reply {
            status: Status::from_raw(d.result),
            value0: 0,
            value1: 0,
        }
    });
}
