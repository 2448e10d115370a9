//! Exit with a reason: RSI = guest-physical address, RDX = length. The
//! reason is read only from guest RAM that the EPT view maps readable,
//! outside monitor memory and below the monitor's identity map; anything
//! else is `InvalidArgument` and the run goes on.

use std::cell::RefCell;

use okernel_abi::hypercall::{Call, EXIT_REASON_MAX, Status};
use okernel_abi::result::Outcome;

use super::*;
use crate::hw::phys::PhysMemory;
use crate::launch::ept_view::build_base_view;
use crate::mem::{MemoryError, RangeList, ViewMemory};
use crate::memmap::{Gpa, Hpa, MemoryKind, MemoryRange, PhysRange};
use crate::vcpu::memory::{GuestMemory, NoGuestMemory};
use crate::vcpu::reason::{GuestReason, ReasonError};
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

const fn ram(start: u64, end: u64) -> MemoryRange {
    MemoryRange {
        range: PhysRange { start, end },
        kind: MemoryKind::Ram,
    }
}

const MAP: [MemoryRange; 5] = [
    ram(0, 0x9_f000),
    ram(0x10_0000, 0x800_0000),
    MemoryRange {
        range: PhysRange {
            start: 0xfee0_0000,
            end: 0xfee0_1000,
        },
        kind: MemoryKind::Mmio,
    },
    MemoryRange {
        range: PhysRange {
            start: 0x9_f000,
            end: 0x10_0000,
        },
        kind: MemoryKind::Reserved,
    },
    // RAM above the monitor's identity map.
    ram(0x1_0000_0000, 0x1_0010_0000),
];
const MONITOR: [PhysRange; 1] = [PhysRange {
    start: 0x40_0000,
    end: 0x48_0123,
}];
const POOL: PhysRange = PhysRange {
    start: 0x100_0000,
    end: 0x140_0000,
};

/// Where the tests put their strings, and the fake physical memory there.
const TEXT: u64 = 0x20_0000;
const TEXT_LEN: usize = 0x3000;

/// Physical memory for the tests: `TEXT_LEN` bytes at `TEXT`; it records
/// every copy, and panics on one outside that window (the checks must
/// have refused it before).
#[derive(Debug, Default)]
struct FakePhys {
    bytes: RefCell<Vec<u8>>,
    copies: RefCell<Vec<(u64, usize)>>,
}

impl FakePhys {
    fn new() -> Self {
        Self {
            bytes: RefCell::new(vec![0; TEXT_LEN]),
            copies: RefCell::default(),
        }
    }
}

impl PhysMemory for FakePhys {
    fn copy(&self, hpa: Hpa, buf: &mut [u8]) {
        let hpa = hpa.0;
        let at = usize::try_from(hpa - TEXT).unwrap();
        assert!(at + buf.len() <= TEXT_LEN, "copy outside the window");
        buf.copy_from_slice(&self.bytes.borrow()[at..at + buf.len()]);
        self.copies.borrow_mut().push((hpa, buf.len()));
    }

    fn write(&self, hpa: Hpa, bytes: &[u8]) {
        let hpa = hpa.0;
        let at = usize::try_from(hpa - TEXT).unwrap();
        assert!(at + bytes.len() <= TEXT_LEN, "write outside the window");
        self.bytes.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

type Memory = ViewMemory<Heap, FakePhys>;

fn memory() -> Memory {
    let caps = vcpu().ept;
    let mut view = build_base_view(Heap::default(), caps, &MAP, &MONITOR, POOL).unwrap();
    // A RAM page the view does not map (as a policy view would do).
    view.unmap(ept::Gpa(0x30_0000), 0x1000).unwrap();
    Memory::new(view, &MAP, &MONITOR, POOL, FakePhys::new()).unwrap()
}

fn vcpu_with_memory() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy, Memory> {
    let v = vcpu();
    Vcpu::with_memory(v.vmcs, v.cpu, v.policy, v.cr, v.ept, memory())
}

/// Puts `bytes` at guest-physical `gpa` (inside the fake window).
fn put(v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy, Memory>, gpa: u64, bytes: &[u8]) {
    let at = usize::try_from(gpa - TEXT).unwrap();
    v.memory.phys().bytes.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
}

fn exit<M: GuestMemory>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy, M>,
    outcome: u64,
    gpa: u64,
    len: u64,
) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rax, Call::Exit.raw());
    v.regs.set(Gpr::Rdi, outcome);
    v.regs.set(Gpr::Rsi, gpa);
    v.regs.set(Gpr::Rdx, len);
    run(v, ExitReason::Vmcall, 0, 3)
}

/// The call was refused: InvalidArgument, RIP advanced, the run goes on,
/// no reason kept.
fn assert_refused<M: GuestMemory>(
    v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy, M>,
    r: Result<ExitAction, ExitError>,
) {
    assert_advanced(v, r, 3);
    assert_eq!(v.regs.rax(), Status::InvalidArgument.raw());
    assert!(v.guest_reason.is_empty());
}

const FAIL: u64 = Outcome::Fail.code() as u64;

#[test]
fn a_reason_in_guest_ram_ends_the_run_with_it() {
    let mut v = vcpu_with_memory();
    put(&v, TEXT + 0x10, b"checks failed: 2");
    let r = exit(&mut v, FAIL, TEXT + 0x10, 16);
    assert_eq!(r, Ok(ExitAction::Stop(Outcome::Fail)));
    assert_eq!(v.guest_reason.as_str(), "checks failed: 2");
    assert_eq!(rip(&v), RIP, "the run ends: RIP is not advanced");
}

#[test]
fn zero_length_is_no_reason_and_rsi_is_not_looked_at() {
    for gpa in [0, 0x40_0000, u64::MAX] {
        let mut v = vcpu_with_memory();
        let r = exit(&mut v, FAIL, gpa, 0);
        assert_eq!(r, Ok(ExitAction::Stop(Outcome::Fail)));
        assert!(v.guest_reason.is_empty());
        assert!(v.memory.phys().copies.borrow().is_empty());
    }
    // Also without any guest memory.
    let mut v = vcpu();
    let pass = u64::from(Outcome::Pass.code());
    assert_eq!(
        exit(&mut v, pass, 0x1234, 0),
        Ok(ExitAction::Stop(Outcome::Pass))
    );
}

#[test]
fn a_reason_may_cross_a_page_boundary() {
    let mut v = vcpu_with_memory();
    let text = "é".repeat(64); // 128 bytes, the maximum
    let gpa = TEXT + 0x1000 - 50;
    put(&v, gpa, text.as_bytes());
    let r = exit(&mut v, FAIL, gpa, EXIT_REASON_MAX);
    assert_eq!(r, Ok(ExitAction::Stop(Outcome::Fail)));
    assert_eq!(v.guest_reason.as_str(), text);
    assert_eq!(
        *v.memory.phys().copies.borrow(),
        [(gpa, 50), (TEXT + 0x1000, 78)]
    );
}

#[test]
fn a_reason_outside_guest_ram_is_refused() {
    // MMIO, firmware-reserved, a gap in the map, across the end of RAM.
    for gpa in [0xfee0_0000, 0x9_f800, 0x900_0000, 0x800_0000 - 4] {
        let mut v = vcpu_with_memory();
        let r = exit(&mut v, FAIL, gpa, 8);
        assert_refused(&v, r);
    }
    assert_eq!(
        memory().check(Gpa(0xfee0_0000), 8),
        Err(MemoryError::NotRam(0xfee0_0000))
    );
    assert_eq!(
        memory().check(Gpa(0x800_0000 - 4), 8),
        Err(MemoryError::NotRam(0x800_0000))
    );
}

#[test]
fn a_reason_in_monitor_memory_is_refused() {
    // The loader's range (and its page-aligned tail), the frame pool, and
    // a range that starts in RAM and runs into the monitor.
    for gpa in [0x40_0000, 0x48_0f00, 0x100_0800, 0x3f_fff8] {
        let mut v = vcpu_with_memory();
        let r = exit(&mut v, FAIL, gpa, 16);
        assert_refused(&v, r);
        assert!(v.memory.phys().copies.borrow().is_empty(), "{gpa:#x} read");
    }
    assert_eq!(
        memory().check(Gpa(0x3f_fff8), 16),
        Err(MemoryError::Monitor(0x40_0000))
    );
}

#[test]
fn a_reason_the_view_does_not_map_is_refused() {
    let mut v = vcpu_with_memory();
    let r = exit(&mut v, FAIL, 0x30_0800, 8);
    assert_refused(&v, r);
    assert_eq!(
        memory().check(Gpa(0x2f_fffc), 8),
        Err(MemoryError::NotReadable(0x30_0000))
    );
}

#[test]
fn a_reason_the_view_maps_without_read_is_refused() {
    let mut m = memory();
    m.view_mut()
        .protect(ept::Gpa(TEXT), 0x1000, ept::Perms::NONE)
        .unwrap();
    assert_eq!(m.check(Gpa(TEXT), 4), Err(MemoryError::NotReadable(TEXT)));
}

#[test]
fn a_reason_beyond_the_identity_map_is_refused() {
    let mut v = vcpu_with_memory();
    let r = exit(&mut v, FAIL, 0x1_0000_0000, 8);
    assert_refused(&v, r);
    assert_eq!(
        memory().check(Gpa(0x1_0000_0000), 8),
        Err(MemoryError::Unreachable(0x1_0000_0000))
    );
}

#[test]
fn a_reason_that_wraps_is_refused() {
    let mut v = vcpu_with_memory();
    let r = exit(&mut v, FAIL, u64::MAX - 3, 8);
    assert_refused(&v, r);
}

#[test]
fn a_reason_longer_than_the_maximum_is_refused() {
    for len in [EXIT_REASON_MAX + 1, 0x1_0000, u64::MAX] {
        let mut v = vcpu_with_memory();
        put(&v, TEXT, &[b'a'; 200]);
        let r = exit(&mut v, FAIL, TEXT, len);
        assert_refused(&v, r);
        assert!(v.memory.phys().copies.borrow().is_empty());
    }
    assert_eq!(
        GuestReason::read(&NoGuestMemory, Gpa(TEXT), 129),
        Err(ReasonError::TooLong(129))
    );
}

#[test]
fn a_reason_that_is_not_utf8_is_refused() {
    for bytes in [&b"ok \xff"[..], b"\xc3", b"\xed\xa0\x80", b"caf\xc3"] {
        let mut v = vcpu_with_memory();
        put(&v, TEXT, bytes);
        let r = exit(&mut v, FAIL, TEXT, bytes.len() as u64);
        assert_refused(&v, r);
    }
}

#[test]
fn a_bad_outcome_is_refused_before_the_reason_is_read() {
    let mut v = vcpu_with_memory();
    put(&v, TEXT, b"why");
    let r = exit(&mut v, 0x99, TEXT, 3);
    assert_refused(&v, r);
    assert!(v.memory.phys().copies.borrow().is_empty());
}

#[test]
fn exit_at_cpl3_is_denied_and_reads_nothing() {
    let mut v = vcpu_with_memory();
    put(&v, TEXT, b"why");
    let ss = v.vmcs.get(Guest32::SsAccessRights);
    v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
    let r = exit(&mut v, FAIL, TEXT, 3);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::PermissionDenied.raw());
    assert!(v.memory.phys().copies.borrow().is_empty());
}

#[test]
fn a_32_bit_guest_passes_32_bit_addresses_and_lengths() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let base = vcpu_with(BasePolicy, entry);
    let mut v = Vcpu::with_memory(
        base.vmcs,
        base.cpu,
        base.policy,
        base.cr,
        base.ept,
        memory(),
    );
    put(&v, TEXT, b"32-bit");
    let r = exit(
        &mut v,
        0xdead_0000_0000_0000 | FAIL,
        0xffff_ffff_0000_0000 | TEXT,
        0x1_0000_0000 | 6,
    );
    assert_eq!(r, Ok(ExitAction::Stop(Outcome::Fail)));
    assert_eq!(v.guest_reason.as_str(), "32-bit");
    // In 64-bit mode the same registers are out of range.
    let mut v = vcpu_with_memory();
    put(&v, TEXT, b"32-bit");
    let r = exit(&mut v, FAIL, 0xffff_ffff_0000_0000 | TEXT, 6);
    assert_refused(&v, r);
}

#[test]
fn control_characters_are_shown_as_spaces() {
    let mut v = vcpu_with_memory();
    let text = b"line 1\nline 2\x1b[31m\x00";
    put(&v, TEXT, text);
    let r = exit(&mut v, FAIL, TEXT, text.len() as u64);
    assert_eq!(r, Ok(ExitAction::Stop(Outcome::Fail)));
    assert_eq!(v.guest_reason.as_str(), "line 1\nline 2\x1b[31m\0");
    assert_eq!(v.guest_reason.to_string(), "line 1 line 2 [31m ");
}

#[test]
fn view_memory_refuses_too_many_ranges() {
    let many = [ram(0, 0x1000); 65];
    let caps = vcpu().ept;
    let view = build_base_view(Heap::default(), caps, &MAP, &MONITOR, POOL).unwrap();
    assert!(Memory::new(view, &many, &MONITOR, POOL, FakePhys::new()).is_err());
    let mut list = RangeList::<1>::new();
    assert!(list.push(PhysRange { start: 0, end: 1 }));
    assert!(!list.push(PhysRange { start: 1, end: 2 }));
}
