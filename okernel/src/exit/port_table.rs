//! Which I/O ports the guest reaches directly: default deny (issue 13).
//!
//! Every port is in one of three classes:
//!
//! * **passed** — its bit in the I/O bitmaps is clear, the guest's IN and
//!   OUT reach the device without an exit: the fixed legacy devices of
//!   [`PASSED`] (none of them can write memory) and the ACPI
//!   fixed-hardware blocks the platform's FADT names
//!   ([`crate::vcpu::platform_ports::PlatformPorts::passes`]: PM1 event, PM
//!   timer, GPE, PM2 control);
//! * **mediated** — intercepted and performed by the monitor once the
//!   write is validated: [`super::io::INTERCEPTED`] and the platform's
//!   sleep and reset rules ([`crate::vcpu::platform_ports`]);
//! * **denied** — everything else: intercepted, an IN reads all ones (a
//!   floating bus, what an absent device gives), an OUT is dropped, and
//!   both are audited (`exit` record, I/O instruction, action `skip`).
//!
//! Denied are, among others, the devices that can write memory around
//! EPT — the 8237 ISA DMA controller (0x00–0x1F, page registers
//! 0x81–0x8F, 0xC0–0xDF) with the floppy controller (0x3F0–0x3F7),
//! IDE (0x1F0–0x1F7, 0x170–0x177) and its bus-master DMA, USB UHCI and
//! every other PCI I/O BAR, QEMU's fw_cfg DMA (0x510–0x51B) — and the
//! emulators' control ports: Bochs' shutdown port (0x8900), the
//! `isa-debug-exit` result port (0xF4), the debug console (0xE9), which
//! would let the guest end the run or forge its outcome. A device the
//! guest drives by memory-mapped I/O (a PCI memory BAR) is not covered by
//! the I/O bitmaps: without an IOMMU a bus-master device programmed so
//! still writes anywhere (`docs/threat-model.md`, "DMA").

/// An inclusive range of ports and why the guest may use it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    /// The first port.
    pub first: u16,
    /// The last port.
    pub last: u16,
    /// The device, and why it cannot be turned against the monitor.
    pub why: &'static str,
}

const fn pass(first: u16, last: u16, why: &'static str) -> Passed {
    Passed { first, last, why }
}

/// The fixed ports the guest reaches without an exit (`docs/policy.md`,
/// "Port I/O"). None of these devices masters the bus.
pub const PASSED: &[Passed] = &[
    pass(0x20, 0x21, "8259A master PIC: interrupt routing only"),
    pass(0x40, 0x43, "8254 PIT: timers"),
    pass(
        0x60,
        0x60,
        "keyboard controller data (its command port 0x64 is mediated)",
    ),
    pass(0x61, 0x61, "NMI status and control: PIT gate 2, speaker"),
    pass(0x70, 0x71, "RTC and CMOS RAM"),
    pass(0x80, 0x80, "POST code; Linux's I/O delay"),
    pass(0xa0, 0xa1, "8259A slave PIC"),
    pass(0x2e8, 0x2ef, "COM4 16550 UART"),
    pass(0x2f8, 0x2ff, "COM2 16550 UART"),
    pass(0x3b0, 0x3df, "VGA registers"),
    pass(0x3e8, 0x3ef, "COM3 16550 UART"),
    pass(
        0x3f9,
        0x3fa,
        "COM1 16550 UART: IER (divisor high with DLAB), IIR/FCR (the console's data port 0x3F8 and LCR 0x3FB are mediated)",
    ),
    pass(0x3fc, 0x3ff, "COM1 16550 UART: MCR, LSR, MSR, scratch"),
    pass(0x4d0, 0x4d1, "8259A edge/level control"),
    pass(
        0xcf8,
        0xcf8,
        "PCI CONFIG_ADDRESS (a dword at 0xCF8; its data ports are mediated)",
    ),
];

/// The KVM harness's fuzz doorbell (`okernel_abi::fuzz::DOORBELL_PORT`),
/// passed in fuzz builds only ([`crate::seam::FUZZ_DOORBELL`]): inside the
/// 0xF4–0xF7 window an `isa-debug-exit` device may decode, so a
/// production monitor denies it.
pub const FUZZ_DOORBELL: Option<u16> = crate::seam::FUZZ_DOORBELL;

/// Whether `port` is one of [`PASSED`] (or [`FUZZ_DOORBELL`]).
pub fn passed(port: u16) -> bool {
    PASSED.iter().any(|p| (p.first..=p.last).contains(&port)) || FUZZ_DOORBELL == Some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint_and_spares_the_mediated_ports() {
        for w in PASSED.windows(2) {
            assert!(w[0].first <= w[0].last && w[0].last < w[1].first, "{w:x?}");
        }
        for port in super::super::io::INTERCEPTED {
            assert!(!passed(*port), "{port:#x} is mediated");
        }
    }

    #[test]
    fn no_passed_port_is_in_an_emulators_control_window() {
        // isa-debug-exit (up to 0xF4-0xF7), Bochs' debug console and
        // shutdown port, QEMU's fw_cfg and debugcon (0x402).
        let windows = [
            0xf4..=0xf7u16,
            0xe9..=0xe9,
            0x8900..=0x8900,
            0x510..=0x51b,
            0x402..=0x402,
        ];
        for w in windows {
            for port in w {
                assert!(!passed(port) || FUZZ_DOORBELL == Some(port), "{port:#x}");
            }
        }
    }

    #[test]
    fn dma_capable_and_emulator_control_ports_are_not_passed() {
        // 8237 channels 0-3, page registers, channels 4-7; floppy; IDE;
        // fw_cfg; isa-debug-exit; Bochs shutdown; debug console; A20.
        for port in [
            0x00, 0x04, 0x0a, 0x0b, 0x0c, 0x81, 0x87, 0x8f, 0xc0, 0xd6, 0x3f2, 0x3f5, 0x1f0, 0x1f7,
            0x170, 0x510, 0x514, 0xf4, 0x8900, 0xe9, 0x92, 0xc000,
        ] {
            assert!(!passed(port), "{port:#x}");
        }
        assert!(passed(0x3fd) && passed(0x80) && passed(0x71));
        assert!(!passed(0x3f8), "COM1's transmitter is mediated");
        assert!(!passed(0x3fb), "so is its line control register");
    }
}
