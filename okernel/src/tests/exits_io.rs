//! I/O instruction exits (issue 13): the I/O bitmaps, port 0x92's A20
//! and fast-reset emulation, and the keyboard controller's and the reset
//! control register's reset commands, through the fake VMCS and CPU.

use super::policy::{PVcpu, pvcpu};
use super::*;
use crate::exit::io::{self, IoQualification};
use crate::exit::port_table;
use crate::launch::setup;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vcpu::platform_ports::{PlatformPorts, PortBlock};
use crate::vmx::controls::PrimaryProcBased;
use crate::vmx::fields::Control64;
use crate::vmx::regs::Gpr;

fn io_exit(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>, q: u64) -> Result<ExitAction, ExitError> {
    run(v, ExitReason::IoInstruction, q, 1)
}

fn out(
    v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>,
    port: u16,
    size: u8,
    value: u64,
) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rax, value);
    io_exit(v, IoQualification::new(port, size, false).0)
}

/// Whether bitmap `page` (A or B) makes `port` exit.
fn exits(port: u16) -> bool {
    let page = io::base_bitmap(port >= 0x8000);
    let bit = usize::from(port & 0x7fff);
    page[bit / 8] & (1 << (bit % 8)) != 0
}

#[test]
fn the_qualification_decodes_as_table_28_5() {
    // OUT DX, AX to 0xCF8 (size 1 = 2 bytes, DX encoding).
    let q = IoQualification(0x0cf8_0041);
    assert_eq!(
        (q.size(), q.is_in(), q.string(), q.rep(), q.port()),
        (2, false, false, false, 0xcf8)
    );
    // REP INSD from 0x1F0.
    let q = IoQualification(0x01f0_0000 | 0b11_1011);
    assert_eq!(
        (q.size(), q.is_in(), q.string(), q.rep(), q.port()),
        (4, true, true, true, 0x1f0)
    );
    assert_eq!(IoQualification::new(0x92, 1, true).0, 0x0092_0008);
}

#[test]
fn the_base_bitmaps_pass_exactly_the_port_table() {
    // Default deny: every port exits but the passed ones, walked whole.
    let passed: Vec<u32> = (0..=0xffffu32).filter(|&p| !exits(p as u16)).collect();
    let mut table: Vec<u32> = port_table::PASSED
        .iter()
        .flat_map(|r| u32::from(r.first)..=u32::from(r.last))
        .chain(port_table::FUZZ_DOORBELL.map(u32::from))
        .collect();
    table.sort_unstable();
    assert_eq!(passed, table);
    // PICs, PIT, KBC data, 0x61, RTC, POST, four UARTs (COM1 without its
    // data port and line control), VGA, ELCR, CONFIG_ADDRESS; the
    // doorbell in fuzz builds.
    assert_eq!(
        passed.len(),
        2 + 4 + 1 + 1 + 2 + 1 + 2 + 8 * 4 - 2 + 0x30 + 2 + 1 + usize::from(cfg!(feature = "fuzz"))
    );
    for p in 0..=0xffffu16 {
        let want = if io::intercepted(p) {
            io::PortClass::Mediated
        } else if port_table::passed(p) {
            io::PortClass::Passed
        } else {
            io::PortClass::Denied
        };
        assert_eq!(io::class(p, &Default::default()), want, "{p:#x}");
    }
    // The VMCS points at them and "use I/O bitmaps" is on.
    let mut vm = FakeVmcs::new();
    let caps = check::probe(&mut FakeCpu::vmx_capable()).unwrap();
    let cr = CrConfig::new(caps.cr0_fixed, caps.cr4_fixed);
    setup::write_controls(
        &mut vm,
        &caps,
        entry64().mode,
        0x5000,
        setup::io_bitmaps(),
        0x6000,
        &cr,
    )
    .unwrap();
    let (a, b) = setup::io_bitmaps();
    assert_eq!(
        (vm.get(Control64::IoBitmapA), vm.get(Control64::IoBitmapB)),
        (a, b)
    );
    assert_eq!((a % 4096, b % 4096), (0, 0), "page-aligned");
    let primary = vm.get(crate::vmx::fields::Control32::PrimaryProcessorBasedControls);
    assert_ne!(
        primary & u64::from(PrimaryProcBased::USE_IO_BITMAPS.bits()),
        0
    );
    assert_eq!(
        primary & u64::from(PrimaryProcBased::UNCONDITIONAL_IO_EXITING.bits()),
        0
    );
}

#[test]
fn port_a_reads_a20_on_and_keeps_the_rest_of_rax() {
    let mut v = vcpu();
    v.regs.set(Gpr::Rax, 0x1234_5678_9abc_def0);
    let r = io_exit(&mut v, IoQualification::new(0x92, 1, true).0);
    assert_advanced(&v, r, 1);
    assert_eq!(v.regs.rax(), 0x1234_5678_9abc_de02);
    assert!(v.audit.is_empty());
    // A dword IN at 0x90 also reads 0x90, 0x91 and 0x93, which are
    // denied: the whole access reads all ones (zero-extended), audited.
    v.regs.set(Gpr::Rax, u64::MAX);
    let r = io_exit(&mut v, IoQualification::new(0x90, 4, true).0);
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!(v.regs.rax(), 0xffff_ffff);
    assert_eq!(v.audit.len(), 1);
}

#[test]
fn com1_line_control_is_mediated_and_performed() {
    // LCR exits (so that, with several processors, no change of DLAB or
    // parity lands between the data port's check and its write on
    // another processor): performed both ways, not audited.
    assert_eq!(
        io::class(0x3fb, &PlatformPorts::default()),
        io::PortClass::Mediated
    );
    let mut v = vcpu();
    let r = out(&mut v, 0x3fb, 1, 0x83);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0x3fb, 1, 0x83)]);
    assert!(v.audit.is_empty());
}

#[test]
fn the_guest_cannot_send_the_monitors_line_mark() {
    use okernel_abi::result::LINE_MARK;
    // Any other byte to COM1's transmitter (8N1): performed.
    let mut v = vcpu();
    v.cpu.set_port(0x3fb, 0x03);
    let r = out(&mut v, 0x3f8, 1, 0x41);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0x3f8, 1, 0x41)]);
    assert!(v.audit.is_empty());
    // SOH with DLAB clear (8N1): dropped, audited.
    let mut v = vcpu();
    v.cpu.set_port(0x3fb, 0x03);
    let r = out(&mut v, 0x3f8, 1, u64::from(LINE_MARK));
    dropped(&v, r, 0x3f8);
    // 7 data bits with stick parity (LCR 0x3A): 0x81 would arrive as
    // SOH at an 8N1 receiver: dropped; so is any byte with parity on.
    for lcr in [0x3a, 0x0b] {
        let mut v = vcpu();
        v.cpu.set_port(0x3fb, lcr);
        let r = out(&mut v, 0x3f8, 1, 0x81);
        dropped(&v, r, 0x3f8);
    }
    // With DLAB set it is the divisor latch's low byte: performed.
    let mut v = vcpu();
    v.cpu.set_port(0x3fb, 0x83);
    let r = out(&mut v, 0x3f8, 1, u64::from(LINE_MARK));
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0x3f8, 1, 1)]);
    // A word or dword reaching the transmitter: dropped, whatever it is.
    for (port, size) in [(0x3f8, 2), (0x3f8, 4)] {
        let mut v = vcpu();
        let r = out(&mut v, port, size, 0x4141);
        dropped(&v, r, port);
    }
    // Reads of the receive buffer: performed.
    let mut v = vcpu();
    v.cpu.set_port(0x3f8, 0x5a);
    let r = io_exit(&mut v, IoQualification::new(0x3f8, 1, true).0);
    assert_advanced(&v, r, 1);
    assert_eq!(v.regs.rax() & 0xff, 0x5a);
    assert!(v.audit.is_empty());
}

#[test]
fn a_denied_port_reads_all_ones_and_drops_writes_audited() {
    // The 8237 DMA controller's mode register, channel 2's page register,
    // the floppy controller's FIFO, Bochs' shutdown port, the
    // isa-debug-exit result port, the debug console: dropped, audited
    // with the exit qualification, never performed.
    for port in [0x0bu16, 0x81, 0x3f5, 0x8900, 0xf4, 0xe9, 0xc000] {
        let mut v = vcpu();
        let r = out(&mut v, port, 1, 0x46);
        dropped(&v, r, port);
        assert!(v.cpu.outs().is_empty(), "{port:#x} performed");
    }
    // Reads: all ones in the access's width, the rest of RAX kept.
    for (size, want) in [(1u8, 0x1234_5678_9abc_deff_u64), (2, 0x1234_5678_9abc_ffff)] {
        let mut v = vcpu();
        v.regs.set(Gpr::Rax, 0x1234_5678_9abc_def0);
        let r = io_exit(&mut v, IoQualification::new(0x3f4, size, true).0);
        assert_advanced(&v, r, 1);
        assert_eq!(v.regs.rax(), want);
        assert_eq!(v.audit.len(), 1);
        assert_eq!(v.audit.last().copied().unwrap().qualification >> 16, 0x3f4);
    }
    // A word at COM1's last port also reaches 0x400: denied whole.
    let mut v = vcpu();
    let r = out(&mut v, 0x3ff, 2, 0x4141);
    dropped(&v, r, 0x3ff);
    assert!(v.cpu.outs().is_empty());
    // String I/O to a denied port: #GP, audited.
    let mut v = vcpu();
    let q = IoQualification::new(0x0b, 1, false).0 | 1 << 4;
    let r = io_exit(&mut v, q);
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!(v.audit.len(), 1);
    assert_eq!(
        v.audit.last().copied().unwrap().action,
        AuditAction::InjectGp
    );
}

#[test]
fn a20_on_without_reset_is_a_no_op() {
    let mut v = vcpu();
    let r = out(&mut v, 0x92, 1, 0x02);
    assert_advanced(&v, r, 1);
    assert!(v.audit.is_empty());
}

#[test]
fn a20_off_and_fast_reset_are_dropped_and_audited() {
    for value in [0x00, 0x03, 0x01, 0xfd] {
        let mut v = vcpu();
        let r = out(&mut v, 0x92, 1, value);
        assert_advanced(&v, r, 1);
        let rec = v.audit.last().copied().expect("audited");
        assert_eq!(
            (rec.kind, rec.gpa, rec.action),
            (
                AuditKind::Exit,
                ExitReason::IoInstruction as u64,
                AuditAction::Skip
            ),
            "{value:#x}"
        );
        assert_eq!(rec.qualification >> 16, 0x92);
    }
    // A word OUT at 0x91 carries 0x92's byte in AH.
    let mut v = vcpu();
    let r = out(&mut v, 0x91, 2, 0x0000);
    assert_advanced(&v, r, 1);
    assert_eq!(v.audit.len(), 1);
}

#[test]
fn string_and_rep_io_to_an_intercepted_port_fault() {
    let mut v = vcpu();
    // REP OUTSB to 0x92.
    let r = io_exit(&mut v, 0x0092_0030);
    assert_injected(&v, r, GP);
    assert_eq!(
        v.audit.last().map(|r| r.action),
        Some(AuditAction::InjectGp)
    );
}

fn dropped(v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy>, r: Result<ExitAction, ExitError>, port: u16) {
    assert_advanced(v, r, 1);
    let rec = v.audit.last().copied().expect("audited");
    assert_eq!(
        (rec.kind, rec.action, rec.qualification >> 16),
        (AuditKind::Exit, AuditAction::Skip, u64::from(port))
    );
    assert!(
        v.cpu.outs().is_empty(),
        "nothing written: {:?}",
        v.cpu.outs()
    );
}

#[test]
fn keyboard_controller_reset_and_a20_commands_are_dropped() {
    // Pulse reset (0xFE), pulse all lines (0xF0), write output port
    // (0xD1), A20 off (0xDD).
    for cmd in [0xfe, 0xf0, 0xfc, 0xd1, 0xdd] {
        let mut v = vcpu();
        let r = out(&mut v, 0x64, 1, cmd);
        dropped(&v, r, 0x64);
    }
    // Other commands (read command byte 0x20, disable keyboard 0xAD,
    // pulse nothing 0xFF) are performed.
    for cmd in [0x20u32, 0xad, 0xff] {
        let mut v = vcpu();
        let r = out(&mut v, 0x64, 1, u64::from(cmd));
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.outs(), &[(0x64, 1, cmd)]);
        assert!(v.audit.is_empty());
    }
    // The status register is read from the controller.
    let mut v = vcpu();
    v.cpu.set_port(0x64, 0x1c);
    v.regs.set(Gpr::Rax, 0xffff);
    let r = io_exit(&mut v, IoQualification::new(0x64, 1, true).0);
    assert_advanced(&v, r, 1);
    assert_eq!(v.regs.rax(), 0xff1c);
}

#[test]
fn reset_control_keeps_the_machine_running() {
    // RST_CPU with a hard or soft reset: dropped.
    for value in [0x06, 0x0e, 0x04] {
        let mut v = vcpu();
        let r = out(&mut v, 0xcf9, 1, value);
        dropped(&v, r, 0xcf9);
    }
    // A word at 0xCF8 carries 0xCF9's byte in bits 15:8.
    let mut v = vcpu();
    let r = out(&mut v, 0xcf8, 2, 0x0600);
    dropped(&v, r, 0xcf8);
    // Choosing the reset type without starting it: performed.
    let mut v = vcpu();
    let r = out(&mut v, 0xcf9, 1, 0x02);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0xcf9, 1, 0x02)]);
}

#[test]
fn pci_config_address_dwords_pass_through_the_monitor() {
    // CONFIG_ADDRESS = bus 0, device 1, function 0, register 0x10, with
    // byte 1 = 0x08 (it would be RST_CPU at 0xCF9, but a dword at 0xCF8
    // is CONFIG_ADDRESS).
    let mut v = vcpu();
    let r = out(&mut v, 0xcf8, 4, 0x8000_0810 | 0x0400);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0xcf8, 4, 0x8000_0c10)]);
    assert!(v.audit.is_empty());
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, u64::MAX);
    let r = io_exit(&mut v, IoQualification::new(0xcf8, 4, true).0);
    assert_advanced(&v, r, 1);
    assert_eq!(v.regs.rax(), 0x8000_0c10, "zero-extended");
}

/// Bus 0, device 2, function 0: CONFIG_ADDRESS of register `reg`.
const fn dev(reg: u32) -> u32 {
    0x8000_1000 | reg
}

/// A type-0 device with a 16 MiB memory BAR at 0xE000_0000 (the test
/// memory map's RAM ends at 128 MiB, the monitor lies inside it).
fn with_device(v: &mut FakeCpu) {
    v.set_pci(dev(0x04), 0x0000_0007, 0xffff)
        .set_pci(dev(0x0c), 0, 0)
        .set_pci(dev(0x10), 0xe000_0000, 0xff00_0000)
        .set_pci(dev(0x14), 0xc001, 0xffc0);
}

fn pci_out(v: &mut PVcpu, port: u16, size: u8, value: u32) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, value.into());
    run(
        v,
        ExitReason::IoInstruction,
        IoQualification::new(port, size, false).0,
        1,
    )
}

#[test]
fn a_memory_bar_cannot_move_over_ram() {
    let mut v = pvcpu();
    with_device(&mut v.cpu);
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x10)), Ok(ExitAction::Resume));
    let audits = v.audit.total();
    // Over RAM (the monitor's image at 4 MiB included): dropped, audited.
    for base in [0x0040_0000, 0x0700_0000, 0] {
        let r = pci_out(&mut v, 0xcfc, 4, base);
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.pci(dev(0x10)), 0xe000_0000, "{base:#x}: BAR kept");
    }
    assert_eq!(v.audit.total(), audits + 3);
    assert_eq!(v.audit.last().map(|r| r.kind), Some(AuditKind::Exit));
    // Linux's sizing and restore, and a move within the MMIO hole.
    for (value, now) in [
        (u32::MAX, 0xff00_0000),
        (0xe000_0000, 0xe000_0000),
        (0xd000_0000, 0xd000_0000),
    ] {
        let r = pci_out(&mut v, 0xcfc, 4, value);
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.pci(dev(0x10)), now);
    }
    assert_eq!(v.audit.total(), audits + 3, "none of these audited");
    // A byte of the BAR: dropped.
    let r = pci_out(&mut v, 0xcfd, 1, 0x00);
    assert_advanced(&v, r, 1);
    assert_eq!(v.audit.total(), audits + 4);
    // An I/O BAR (64 ports) moved over denied ports, sized and put
    // back, and the command register: performed.
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x14)), Ok(ExitAction::Resume));
    for (value, now) in [(0x1001, 0x1001), (u32::MAX, 0xffc1), (0x1001, 0x1001)] {
        assert_eq!(pci_out(&mut v, 0xcfc, 4, value), Ok(ExitAction::Resume));
        assert_eq!(v.cpu.pci(dev(0x14)), now);
    }
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x04)), Ok(ExitAction::Resume));
    assert_eq!(pci_out(&mut v, 0xcfc, 4, 0x3), Ok(ExitAction::Resume));
    assert_eq!(v.cpu.pci(dev(0x04)), 0x3);
    assert_eq!(v.audit.total(), audits + 4);
}

#[test]
fn an_io_bar_cannot_move_onto_ports_the_guest_reaches() {
    // The VGA range (passed), the PIC inside 0x00-0x3F (passed among
    // the denied DMA ports), COM1's data port (mediated), the top of
    // the port space with a passed port below: dropped, audited, the
    // BAR kept at 0xC000.
    for base in [0x3c1u32, 0x01, 0x3c1 + 0x3f8 - 0x3e0, 0xffc1] {
        let mut v = pvcpu();
        with_device(&mut v.cpu);
        if base == 0xffc1 {
            v.platform = PlatformPorts::default()
                .passing(&[PortBlock {
                    first: 0xfff0,
                    len: 4,
                }])
                .unwrap();
        }
        assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x14)), Ok(ExitAction::Resume));
        let r = pci_out(&mut v, 0xcfc, 4, base);
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.pci(dev(0x14)), 0xc001, "{base:#x}: BAR kept");
        assert_eq!(v.audit.total(), 1, "{base:#x}");
    }
}

#[test]
fn a_bar_is_judged_where_the_device_will_decode() {
    // 64 ports written at 0xA5: the device decodes 0x80-0xBF (POST, the
    // slave PIC); 0x10081: a 16-bit decoder drops bit 16, 0x80 again.
    for value in [0xa5u32, 0x1_0081] {
        let mut v = pvcpu();
        with_device(&mut v.cpu);
        assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x14)), Ok(ExitAction::Resume));
        let r = pci_out(&mut v, 0xcfc, 4, value);
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.pci(dev(0x14)), 0xc001, "{value:#x}: BAR kept");
        assert_eq!(v.audit.total(), 1, "{value:#x}");
    }
    // A 16 MiB memory BAR written at 0x0080_0000: it decodes from 0,
    // over RAM.
    let mut v = pvcpu();
    with_device(&mut v.cpu);
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x10)), Ok(ExitAction::Resume));
    let r = pci_out(&mut v, 0xcfc, 4, 0x0080_0000);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.pci(dev(0x10)), 0xe000_0000);
    assert_eq!(v.audit.total(), 1);
}

#[test]
fn a_data_write_with_config_address_bits_1_0_set_is_refused() {
    // CONFIG_ADDRESS register 0x0F: a bridge that keeps bits 1:0 writes
    // bytes 0x0F-0x12, BAR 0's low bytes among them.
    let mut v = pvcpu();
    with_device(&mut v.cpu);
    v.cpu.set_port(0xcf8, dev(0x0c) | 3);
    let r = pci_out(&mut v, 0xcfc, 4, 0x0101_0101);
    dropped_pci(&v, r);
    assert_eq!(v.cpu.pci(dev(0x10)), 0xe000_0000);
}

#[test]
fn an_expansion_rom_cannot_move_over_ram() {
    // A 64 KiB ROM BAR at 0xE100_0000 (decode off).
    let mut v = pvcpu();
    with_device(&mut v.cpu);
    v.cpu.set_pci(dev(0x30), 0xe100_0000, 0xffff_0001);
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x30)), Ok(ExitAction::Resume));
    // Enabled over the monitor's image at 4 MiB: dropped, audited.
    let r = pci_out(&mut v, 0xcfc, 4, 0x0040_0001);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.pci(dev(0x30)), 0xe100_0000);
    assert_eq!(v.audit.total(), 1);
    // Sizing, Linux restoring an unassigned ROM's 0 (decode off),
    // enabling where it is, a move within the MMIO hole: performed.
    for (value, now) in [
        (0xffff_f800, 0xffff_0000),
        (0, 0),
        (0xe100_0001, 0xe100_0001),
        (0xd000_0001, 0xd000_0001),
    ] {
        assert_eq!(pci_out(&mut v, 0xcfc, 4, value), Ok(ExitAction::Resume));
        assert_eq!(v.cpu.pci(dev(0x30)), now, "{value:#x}");
    }
    assert_eq!(v.audit.total(), 1);
}

#[test]
fn a_bridges_bars_and_rom_are_judged_too() {
    // A type-1 header (a PCI-to-PCI bridge): its ROM BAR at 0x38 enabled
    // over the monitor's image, its BAR 0 moved over RAM: dropped.
    let mut v = pvcpu();
    v.cpu
        .set_pci(dev(0x0c), 0x0001_0000, 0)
        .set_pci(dev(0x10), 0xe000_0000, 0xff00_0000)
        .set_pci(dev(0x38), 0xe100_0000, 0xffff_0001)
        .set_pci(dev(0x1c), 0x0000_f0f0, 0xffff_ffff);
    for (reg, value, kept) in [
        (0x38, 0x0040_0001, 0xe100_0000),
        (0x10, 0x0040_0000, 0xe000_0000),
    ] {
        assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(reg)), Ok(ExitAction::Resume));
        let r = pci_out(&mut v, 0xcfc, 4, value);
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.pci(dev(reg)), kept, "{reg:#x}");
    }
    assert_eq!(v.audit.total(), 2);
    // Its I/O window (0x1C): not judged, performed.
    assert_eq!(pci_out(&mut v, 0xcf8, 4, dev(0x1c)), Ok(ExitAction::Resume));
    assert_eq!(
        pci_out(&mut v, 0xcfc, 4, 0x0000_1010),
        Ok(ExitAction::Resume)
    );
    assert_eq!(v.cpu.pci(dev(0x1c)), 0x1010);
    assert_eq!(v.audit.total(), 2);
}

/// Refused and audited, the BAR kept.
fn dropped_pci(v: &PVcpu, r: Result<ExitAction, ExitError>) {
    assert_advanced(v, r, 1);
    assert_eq!(v.audit.total(), 1);
    assert_eq!(v.audit.last().map(|r| r.kind), Some(AuditKind::Exit));
}

#[test]
fn without_the_memory_map_no_bar_moves() {
    let mut v = vcpu();
    with_device(&mut v.cpu);
    v.cpu.set_port(0xcf8, dev(0x10));
    let r = out(&mut v, 0xcfc, 4, 0xd000_0000);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.pci(dev(0x10)), 0xe000_0000);
    assert_eq!(v.audit.len(), 1);
}

/// Bochs' ACPI (PIIX4 PM at 0xB000): PM1a control at 0xB004, soft off
/// SLP_TYP 0, SMI_CMD 0xB2; a made-up S4BIOS_REQ 0xF2 and reset register
/// 0x4F0 with reset value 6.
fn acpi_vcpu() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    use crate::vcpu::platform_ports::PortRule;
    let mut v = vcpu();
    v.platform = PlatformPorts::new(&[
        PortRule::SleepControl {
            port: 0xb004,
            off: Some(0),
        },
        PortRule::SmiCommand {
            port: 0xb2,
            allowed: [0xf1, 0xf0, 0, 0],
        },
        PortRule::RefuseByte {
            port: 0x4f0,
            value: 6,
        },
        PortRule::PciConfigLocked {
            address: 0x8000_0b40,
        },
    ])
    .unwrap();
    v
}

#[test]
fn a_write_running_into_the_data_ports_is_refused() {
    // A dword at 0xCFB or 0xCF9 and a word at 0xCFB reach 0xCFC's bytes
    // without being a data-port write: dropped, whatever CONFIG_ADDRESS
    // selects (here the locked PM base, which they would move).
    for (port, size) in [(0xcfb, 4), (0xcf9, 4), (0xcfb, 2)] {
        let mut v = acpi_vcpu();
        v.cpu.set_port(0xcf8, 0x8000_0b40);
        let r = out(&mut v, port, size, 0x1001_0000);
        dropped(&v, r, port);
    }
}

#[test]
fn the_acpi_pm_base_cannot_be_moved() {
    // PIIX4's PMBA (0:1.3, register 0x40), as a dword or a byte of it:
    // dropped (moved, PM1 control would answer at an unmediated port).
    for (port, size) in [(0xcfc, 4), (0xcfd, 1), (0xcfc, 2)] {
        let mut v = acpi_vcpu();
        v.cpu.set_port(0xcf8, 0x8000_0b40);
        let r = out(&mut v, port, size, 0x1001);
        dropped(&v, r, port);
    }
    // The next register of the same function: performed.
    let mut v = acpi_vcpu();
    v.cpu.set_port(0xcf8, 0x8000_0b44);
    let r = out(&mut v, 0xcfc, 4, 0x1001);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs().last(), Some(&(0xcfc, 4, 0x1001)));
    // Without the platform's rules the move goes to the device.
    let mut v = vcpu();
    v.cpu.set_port(0xcf8, 0x8000_0b40);
    let r = out(&mut v, 0xcfc, 4, 0x1001);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs().last(), Some(&(0xcfc, 4, 0x1001)));
}

#[test]
fn acpi_sleep_is_dropped_and_audited_and_soft_off_performed() {
    // SLP_EN | SLP_TYP=1 (S3) as a word, as a dword, and as the high
    // byte alone: dropped, the machine keeps running.
    for (port, size, value) in [
        (0xb004, 2, 0x2400u64),
        (0xb004, 4, 0x2401),
        (0xb005, 1, 0x24),
    ] {
        let mut v = acpi_vcpu();
        let r = out(&mut v, port, size, value);
        dropped(&v, r, port);
    }
    // Soft off (SLP_TYP 0, the \_S5 type) and a write without SLP_EN
    // (SCI_EN, a staged type): performed.
    for (size, value) in [(2u8, 0x2000u32), (2, 0x0401), (1, 0x01)] {
        let mut v = acpi_vcpu();
        let r = out(&mut v, 0xb004, size, u64::from(value));
        assert_advanced(&v, r, 1);
        assert_eq!(v.cpu.outs(), &[(0xb004, size, value)]);
        assert!(v.audit.is_empty());
    }
    // S4BIOS_REQ, a vendor SMI command and the reset value: dropped;
    // ACPI_ENABLE and other reset-register values: performed.
    for (port, value) in [(0xb2u16, 0xf2u64), (0xb2, 0x55), (0x4f0, 6)] {
        let mut v = acpi_vcpu();
        let r = out(&mut v, port, 1, value);
        dropped(&v, r, port);
    }
    let mut v = acpi_vcpu();
    let r = out(&mut v, 0xb2, 1, 0xf1);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0xb2, 1, 0xf1)]);
    // Without the sleep rule (the monitor before it), PM1 control passed
    // with its block, the S3 write goes to the device; without the block
    // either, default deny drops it.
    let mut v = vcpu();
    v.platform = PlatformPorts::default()
        .passing(&[PortBlock {
            first: 0xb000,
            len: 12,
        }])
        .unwrap();
    let r = out(&mut v, 0xb004, 2, 0x2400);
    assert_advanced(&v, r, 1);
    assert_eq!(v.cpu.outs(), &[(0xb004, 2, 0x2400)]);
}

#[test]
fn a_runs_bitmaps_add_the_platforms_ports() {
    let mut v = acpi_vcpu();
    // Bochs' PM event block, PM1 control (a rule) and PM timer in one.
    v.platform = v
        .platform
        .passing(&[PortBlock {
            first: 0xb000,
            len: 12,
        }])
        .unwrap();
    let on = |port: u16| {
        let page = io::bitmap(port >= 0x8000, &v.platform);
        let bit = usize::from(port & 0x7fff);
        page[bit / 8] & (1 << (bit % 8)) != 0
    };
    for p in 0..=0xffffu16 {
        assert_eq!(
            on(p),
            io::class(p, &v.platform) != io::PortClass::Passed,
            "{p:#x}"
        );
    }
    let passed: Vec<u32> = (0..=0xffffu32).filter(|&p| !on(p as u16)).collect();
    let base: Vec<u32> = (0..=0xffffu32).filter(|&p| !exits(p as u16)).collect();
    let added: Vec<u32> = passed
        .iter()
        .filter(|p| !base.contains(p))
        .copied()
        .collect();
    assert_eq!(
        added,
        [
            0xb000, 0xb001, 0xb002, 0xb003, 0xb006, 0xb007, 0xb008, 0xb009, 0xb00a, 0xb00b
        ]
    );
    // The rules' ports exit: SMI_CMD, the reset register, PM1 control.
    for p in [0xb2, 0x4f0, 0xb004, 0xb005] {
        assert!(on(p), "{p:#x}");
    }
}
