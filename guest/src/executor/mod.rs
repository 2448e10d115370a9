//! `scenario=fuzz`: the in-guest persistent fuzz executor.
//!
//! The demo container host boots and locks itself as in `scenario=attacks`
//! (unless `protect=off`), registers the executor's gate, and asks the
//! monitor to record its baseline (`okernel_abi::fuzz::CALL_BASELINE`).
//! Then, for each test case from the host:
//!
//! 1. switch to the untrusted context of `container-a` (a kernel path
//!    running on behalf of an untrusted container);
//! 2. run the case's operations (`guest::fuzz::Op`), each under a probe,
//!    each judged at once against the policy model ([`step`],
//!    [`hypercalls`]): the fault, the status, and the audit records it
//!    left (exactly one of the right kind for a denial);
//! 3. come back to the trusted context through the gate, undo what the
//!    case changed ([`journal`]);
//! 4. ask the monitor to verify its invariants against the baseline and
//!    hand over its coverage (`CALL_CHECK`: locked regions' checksums,
//!    locks, pins, MSRs, views); its answer also shows it alive, and the
//!    audit total it reports must be the audit mirror's (below);
//! 5. send the verdict, the coverage and, on a violation, what broke.
//!
//! The executor reads each operation's audit records from its *audit
//! mirror* (`okernel_abi::fuzz::AuditMirror`), a page it registers with
//! the baseline and the monitor rewrites after every exit that audited,
//! instead of with an AuditCount and an AuditRead after every operation:
//! those were half the VM exits of a case, and on Bochs an exit costs far
//! more than its instructions. The fuzz operations still call AuditCount
//! and AuditRead, with any arguments.
//!
//! With no monitor (`mode=direct`) or `protect=off` the same model runs:
//! those are the negative controls, where the executor must report
//! violations.

mod cpu_ops;
mod event_ops;
mod hypercalls;
mod journal;
mod memory_ops;
mod other;
mod port_ops;
mod step;
mod targets;
mod transport;

use crate::arch::instr::hypercall_raw;
use crate::arch::ops;
use crate::arch::traps::probe;
use crate::kernel::{self, Pages, protect};
use crate::report::end;
use crate::report::{Buf, Checks};
use guest::attack::Mode;
use guest::cmdline::Transport;
use guest::fuzz::Op;
use guest::tasks::{CONTAINER_A, CONTAINER_B};
use journal::Journal;
use okernel_abi::fuzz::{
    AuditMirror, CALL_BASELINE, CALL_CHECK, CaseVerdict, CheckReport, GUEST_MAP_BASE,
    GUEST_MAP_SIZE, MAX_CASE, MAX_RESULT, MonitorVerdict, ResultFrame, ResultHeader,
};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::result::Outcome;
use step::{Next, World};
use transport::Link;

/// Where the monitor writes its check report.
static REPORT: Pages<CheckReport> = Pages::new(CheckReport::EMPTY);
/// Where the monitor mirrors its audit log (registered with the baseline).
static MIRROR: Pages<AuditMirror> = Pages::new(AuditMirror::EMPTY);

/// The monitor's audit log as it mirrored it last.
pub(super) fn audit_mirror() -> AuditMirror {
    // SAFETY: the monitor writes the page between the guest's
    // instructions (during VM exits) and nothing in the guest writes it;
    // the volatile read takes what the last exit left.
    unsafe { MIRROR.get().read_volatile() }
}

/// Runs the executor; never returns (the host ends the run). `aps`: the
/// memory map, when another processor is to run beside it (`aps=run`,
/// [`other`]).
pub fn run(
    mode: Mode,
    ram_top: u64,
    monitor: Option<u64>,
    pool: Option<u64>,
    transport: Transport,
    sel: crate::arch::tables::Selectors,
    aps: Option<&[okernel_abi::boot::MemoryRegion]>,
) -> ! {
    let mut checks = Checks::default();
    // First, on the loader's page tables (which map the xAPIC page) and
    // before any lock: once a context exists no SIPI starts anything.
    if let Some(map) = aps {
        match other::start(map, mode != Mode::NoMonitor) {
            Ok(()) => log::info!("fuzz: another processor runs beside the executor"),
            Err(e) => end(Outcome::Fail, format_args!("fuzz: aps=run: {e}")),
        }
    }
    let cr4_pins = match kernel::init(mode, ram_top, sel) {
        Ok(b) => b,
        Err(e) => end(Outcome::Fail, format_args!("fuzz: kernel init: {e}")),
    };
    let has_monitor = mode != Mode::NoMonitor;
    if mode == Mode::Protected {
        protect::register_and_lock(&mut checks, cr4_pins);
    }
    let mut gate = 0;
    if has_monitor {
        let g = hypercall_raw(
            Call::RegisterGate as u64,
            [ops::guest_fuzz_gate as *const () as u64, 0, 0, 0],
        );
        if mode == Mode::Protected && g.status != Ok(Status::Success) {
            end(
                Outcome::Fail,
                format_args!("fuzz: RegisterGate of the executor's gate: {:?}", g.status),
            );
        }
        gate = g.value0;
    }
    // Before the baseline: the APIC's alias slot is part of the page
    // tables the monitor's check compares with it.
    if let Err(s) = crate::arch::apic::map(mode == Mode::Protected) {
        end(
            Outcome::Fail,
            format_args!("fuzz: mapping the local APIC: {s:?}"),
        );
    }
    port_ops::find_memory_bar();
    if has_monitor {
        let b = hypercall_raw(CALL_BASELINE, [MIRROR.addr(), 0, 0, 0]);
        match b.status {
            Ok(Status::Success) => {
                log::info!("fuzz: monitor baseline: {} bytes checksummed", b.value0)
            }
            Ok(Status::UnknownCall) => end(
                Outcome::Fail,
                format_args!(
                    "fuzz: the monitor answers UnknownCall to the fuzz calls: build the okernel image with the `fuzz` feature"
                ),
            ),
            other => end(
                Outcome::Fail,
                format_args!("fuzz: monitor baseline: {other:?}"),
            ),
        }
    }
    let mut world = World {
        targets: targets::Targets::new(monitor, pool),
        monitor: has_monitor,
        own: kernel::context(CONTAINER_A),
        other: kernel::context(CONTAINER_B),
        gate,
        cr0_pins: crate::arch::cpu::CR0_PE | crate::arch::cpu::CR0_WP | crate::arch::cpu::CR0_PG,
        cr4_pins,
        audit_seen: 0,
        current: 0,
        newest: Default::default(),
        other_runs: false,
    };
    log::info!(
        "fuzz: executor ready: mode {mode:?}, context {} (other {}), gate {gate}, transport {transport:?}",
        world.own,
        world.other
    );
    let mut link = match transport {
        Transport::Com2 => Link::Com2,
        Transport::Mailbox => Link::Mailbox,
    }
    .open();
    world.other_runs = aps.is_some();
    let mut case = [0u8; MAX_CASE];
    let mut out = [0u8; MAX_RESULT];
    let mut result_len = None;
    loop {
        let n = link.exchange(result_len.map(|l| &out[..l]), &mut case);
        result_len = Some(run_case(&mut world, &case[..n], &mut out));
    }
}

/// The executor's own coverage: which (operation, outcome) pairs a case
/// saw, deduplicated.
struct GuestHits {
    seen: [u64; GUEST_MAP_SIZE / 64],
    list: [u16; GUEST_MAP_SIZE / 8],
    len: usize,
}

impl GuestHits {
    fn add(&mut self, key: u32) {
        let i = (key.wrapping_mul(0x9e37_79b1) >> 20) as usize % GUEST_MAP_SIZE;
        if self.seen[i / 64] & (1 << (i % 64)) == 0 && self.len < self.list.len() {
            self.seen[i / 64] |= 1 << (i % 64);
            self.list[self.len] = (GUEST_MAP_BASE + i) as u16;
            self.len += 1;
        }
    }
}

/// Runs one case and encodes its result into `out`; returns the length.
fn run_case(w: &mut World, case: &[u8], out: &mut [u8]) -> usize {
    let mut msg = Buf::new();
    let mut verdict = CaseVerdict::Pass;
    let mut hits = GuestHits {
        seen: [0; GUEST_MAP_SIZE / 64],
        list: [0; GUEST_MAP_SIZE / 8],
        len: 0,
    };
    let mut journal = Journal::default();
    step::init_scratch();
    let total = Op::decode_all(case).count();
    let mut ran = 0;
    if w.monitor {
        if w.own != 0
            && hypercall_raw(Call::SwitchContext as u64, [w.own, 0, 0, 0]).status
                == Ok(Status::Success)
        {
            w.current = w.own;
        }
        w.audit_seen = audit_mirror().total;
    }
    let mut prev = 0u32;
    for op in Op::decode_all(case) {
        ran += 1;
        let (next, seen) = w.step(&op, &mut journal, &mut msg);
        let key = u32::from(op.kind()) << 16 | seen.code();
        hits.add(key ^ prev.rotate_left(7));
        prev = key;
        match next {
            Next::Continue => {}
            Next::Gated => break,
            Next::Violation => {
                msg.prefix(format_args!("op {} of {total} ({op:?})", ran - 1));
                verdict = CaseVerdict::GuestOracle;
                break;
            }
        }
    }
    let mut exits = 0;
    let mut mon_hits: &[u16] = &[];
    if w.monitor {
        if let Err(e) = back_to_trusted(w).and_then(|()| journal.undo(w.own, &mut w.targets))
            && verdict == CaseVerdict::Pass
        {
            verdict = CaseVerdict::ResetFailed;
            msg.set(format_args!("{e}"));
        }
        let c = hypercall_raw(CALL_CHECK, [REPORT.addr(), 0, 0, 0]);
        // SAFETY: the monitor wrote the report (or left the last one);
        // nothing else writes the page.
        let r = unsafe { &*REPORT.get() };
        if c.status != Ok(Status::Success) {
            if verdict == CaseVerdict::Pass {
                verdict = CaseVerdict::MonitorDead;
                msg.set(format_args!("the monitor's check failed: {:?}", c.status));
            }
        } else {
            exits = r.exits as u32;
            mon_hits = &r.hit[..(r.hits as usize).min(r.hit.len())];
            if r.verdict != MonitorVerdict::Intact as u32 && verdict == CaseVerdict::Pass {
                verdict = CaseVerdict::MonitorOracle;
                let name = MonitorVerdict::from_raw(r.verdict)
                    .map_or("unknown verdict", MonitorVerdict::name);
                msg.set(format_args!(
                    "monitor check: {name} (subject {:#x}, expected {:#x}, found {:#x})",
                    r.subject, r.expected, r.actual
                ));
            }
            if w.other_runs && !other::moves_on() && verdict == CaseVerdict::Pass {
                verdict = CaseVerdict::MonitorDead;
                msg.set(format_args!(
                    "the other processor stopped running the guest (its count stays at {})",
                    other::heartbeat()
                ));
            }
            let mirrored = audit_mirror().total;
            if r.audit_total != mirrored && verdict == CaseVerdict::Pass {
                verdict = CaseVerdict::GuestOracle;
                msg.set(format_args!(
                    "the monitor's check counts {} audit records but its audit mirror says {mirrored}",
                    r.audit_total
                ));
            }
        }
    }
    if verdict != CaseVerdict::Pass {
        log::warn!("fuzz: {}: {}", verdict.name(), msg.as_str());
    }
    let mut all = [0u16; okernel_abi::fuzz::MAX_HITS + GUEST_MAP_SIZE / 8];
    all[..mon_hits.len()].copy_from_slice(mon_hits);
    all[mon_hits.len()..mon_hits.len() + hits.len].copy_from_slice(&hits.list[..hits.len]);
    let header = ResultHeader {
        verdict: verdict as u8,
        ops_total: total as u16,
        ops_run: ran as u16,
        exits,
        hits: 0,
        message: 0,
    };
    let msg_bytes = msg.as_str().as_bytes();
    ResultFrame::encode(
        header,
        &all[..mon_hits.len() + hits.len],
        &msg_bytes[..msg_bytes.len().min(okernel_abi::fuzz::MAX_MESSAGE)],
        out,
    )
    .unwrap_or(0)
}

/// Returns to the trusted context through the executor's gate.
fn back_to_trusted(w: &mut World) -> Result<(), &'static str> {
    if w.current == 0 {
        return Ok(());
    }
    extern "C" fn switch(gate: u64) -> u64 {
        hypercall_raw(Call::SwitchContext as u64, [0, gate, 0, 0])
            .status
            .map_or(u64::MAX, Status::raw)
    }
    let _ = ops::take_gate_from();
    let r = probe(switch, w.gate);
    if ops::take_gate_from() == ops::NO_GATE {
        if r == Ok(0) {
            w.current = 0;
        }
        return Err(match r {
            Ok(0) => {
                "reset: SwitchContext to the trusted context returned to the caller (gate skipped)"
            }
            _ => "reset: SwitchContext to the trusted context was refused",
        });
    }
    w.current = 0;
    w.audit_seen = audit_mirror().total;
    Ok(())
}
