//! Ports the platform's firmware tables name, which the monitor mediates
//! beside the fixed ones of [`crate::exit::io`]: ACPI sleep and reset.
//!
//! A guest that puts the machine to sleep (S2, S3, S4) is resumed by the
//! firmware at the waking vector in the FACS — memory the guest can write
//! — in real mode and without VMX, with the monitor's memory in RAM and
//! nothing guarding it (`docs/threat-model.md`, "ACPI sleep"). So a
//! write to PM1 control that sets SLP_EN is refused unless its SLP_TYP
//! is the soft-off type (`\_S5`, ACPI 6.5 §7.4.2.6): power-off stays
//! possible, sleep does not; SMI_CMD's S4BIOS_REQ (firmware-driven S4,
//! §5.2.9) and an I/O reset register's reset value (§4.8.3.6) are refused
//! as the other reset paths are. Refused writes are dropped and audited
//! by [`crate::exit::io::handle`]. The rules are the virtual CPU's
//! (`Vcpu::platform`), set by the loader.
//!
//! PM1 control is a 16-bit register (ACPI 6.5 §4.8.3.2.1, Table 4.13):
//! SLP_TYP in bits 12:10 and SLP_EN in bit 13, both in its high byte, so
//! the rule judges the byte written at `port + 1`, however the write is
//! sized (a word at `port`, a byte at `port + 1`, a dword).

/// PM1 control's high byte: SLP_EN (bit 13 of the register).
const SLP_EN: u8 = 1 << 5;

/// A port rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// ACPI PM1 control at `port` (PM1a or PM1b): a write that sets
    /// SLP_EN is refused unless its SLP_TYP is `off`, the `\_S5` type
    /// for this register (`None`: every sleep or power-off is refused).
    SleepControl {
        /// The register's port.
        port: u16,
        /// Soft-off's SLP_TYP.
        off: Option<u8>,
    },
    /// ACPI SMI_CMD at `port`: only the values the FADT names for the OS
    /// are performed — ACPI_ENABLE, ACPI_DISABLE, PSTATE_CNT, CST_CNT
    /// (`allowed`, 0: unused) — so S4BIOS_REQ (firmware-driven S4, which
    /// resumes like S3) and every vendor SMI command are refused.
    SmiCommand {
        /// The port.
        port: u16,
        /// The values performed.
        allowed: [u8; 4],
    },
    /// Writing byte `value` to `port` is refused (the reset register's
    /// reset value).
    RefuseByte {
        /// The port.
        port: u16,
        /// The refused value.
        value: u8,
    },
    /// A PCI configuration dword no write may change, named as
    /// CONFIG_ADDRESS selects it (enable bit, bus, device, function,
    /// register): the chipset register that places the ACPI PM I/O block
    /// (PIIX4's PMBA, ICH's PMBASE) — moved, PM1 control would answer at
    /// a port the rules above do not name — and the host bridge's SMRAM
    /// control (opened, SMRAM takes the guest's code for the next SMI).
    PciConfigLocked {
        /// CONFIG_ADDRESS of the dword.
        address: u32,
    },
}

/// The most rules a platform gives: PM1a, PM1b, SMI_CMD, reset, and
/// five locked configuration dwords (two PM bases, SMRAM control, the two
/// of PCIEXBAR).
pub const MAX_RULES: usize = 10;

/// The most I/O blocks a platform passes to the guest: the FADT's PM1a
/// and PM1b event blocks, PM2 control, the PM timer, GPE0 and GPE1.
pub const MAX_PASSED: usize = 6;

/// An I/O block the guest reaches without an exit: `len` ports from
/// `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBlock {
    /// The first port.
    pub first: u16,
    /// How many ports.
    pub len: u16,
}

impl PortBlock {
    /// Whether `port` is in the block.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && u32::from(port) < u32::from(self.first) + u32::from(self.len)
    }
}

/// A platform's port rules and the I/O blocks it passes to the guest
/// (none: nothing beyond the fixed ports of `crate::exit::port_table`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformPorts {
    rules: [Option<PortRule>; MAX_RULES],
    passed: [Option<PortBlock>; MAX_PASSED],
}

impl PlatformPorts {
    /// The rules `rules`; `None` when there are more than [`MAX_RULES`].
    pub fn new(rules: &[PortRule]) -> Option<Self> {
        let mut p = Self::default();
        if rules.len() > MAX_RULES {
            return None;
        }
        for (slot, r) in p.rules.iter_mut().zip(rules) {
            *slot = Some(*r);
        }
        Some(p)
    }

    /// These rules, passing `blocks` too (the ACPI fixed-hardware blocks
    /// the guest's ACPI driver reads and writes: event status, the PM
    /// timer, GPEs); `None` when there are more than [`MAX_PASSED`]. A
    /// port that a rule names stays mediated even inside a block.
    pub fn passing(mut self, blocks: &[PortBlock]) -> Option<Self> {
        if blocks.len() > MAX_PASSED {
            return None;
        }
        for (slot, b) in self.passed.iter_mut().zip(blocks) {
            *slot = Some(*b);
        }
        Some(self)
    }

    /// The blocks passed to the guest.
    pub fn passed(&self) -> impl Iterator<Item = PortBlock> + '_ {
        self.passed.iter().flatten().copied()
    }

    /// Whether the guest reaches `port` without an exit: in a passed
    /// block and named by no rule.
    pub fn passes(&self, port: u16) -> bool {
        self.passed().any(|b| b.contains(port)) && !self.mediates(port)
    }

    /// Whether a rule names `port` (it is intercepted and performed once
    /// the write is judged).
    pub fn mediates(&self, port: u16) -> bool {
        self.ports().any(|p| p == port)
    }

    /// The rules.
    pub fn rules(&self) -> impl Iterator<Item = PortRule> + '_ {
        self.rules.iter().flatten().copied()
    }

    /// Every port the I/O bitmaps must intercept for these rules (PM1
    /// control: both its bytes).
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.rules()
            .flat_map(|r| match r {
                PortRule::SleepControl { port, .. } => [Some(port), port.checked_add(1)],
                PortRule::RefuseByte { port, .. } | PortRule::SmiCommand { port, .. } => {
                    [Some(port), None]
                }
                // 0xCFC-0xCFF are intercepted anyway (`crate::exit::io`).
                PortRule::PciConfigLocked { .. } => [None, None],
            })
            .flatten()
    }

    /// Whether a configuration write through CONFIG_ADDRESS `address`
    /// (the dword the data ports then reach) is refused.
    pub fn config_locked(&self, address: u32) -> bool {
        const DWORD: u32 = 0x80ff_fffc;
        address & (1 << 31) != 0
            && self.rules().any(|r| {
                matches!(r, PortRule::PciConfigLocked { address: a } if a & DWORD == address & DWORD)
            })
    }

    /// Whether a write of byte `value` to `port` may happen.
    pub fn write_allowed(&self, port: u16, value: u8) -> bool {
        self.rules().all(|r| match r {
            PortRule::SleepControl { port: p, off } => {
                port != p.wrapping_add(1)
                    || value & SLP_EN == 0
                    || off == Some((value >> 2) & 0b111)
            }
            PortRule::RefuseByte { port: p, value: v } => port != p || value != v,
            PortRule::SmiCommand { port: p, allowed } => {
                port != p || (value != 0 && allowed.contains(&value))
            }
            PortRule::PciConfigLocked { .. } => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_configuration_dword_is_refused_whatever_byte_and_only_it() {
        // PIIX4 function 0:1.3, PMBA at 0x40.
        let p = PlatformPorts::new(&[PortRule::PciConfigLocked {
            address: 0x8000_0b40,
        }])
        .unwrap();
        assert!(p.config_locked(0x8000_0b40));
        assert!(p.config_locked(0x8000_0b42), "a byte of the same dword");
        assert!(!p.config_locked(0x0000_0b40), "CONFIG_ADDRESS disabled");
        assert!(!p.config_locked(0x8000_0b44));
        assert!(!p.config_locked(0x8000_0c40), "another function");
        assert_eq!(p.ports().count(), 0);
    }

    fn bochs() -> PlatformPorts {
        PlatformPorts::new(&[
            PortRule::SleepControl {
                port: 0xb004,
                off: Some(0),
            },
            PortRule::SmiCommand {
                port: 0xb2,
                allowed: [0xf1, 0xf0, 0, 0],
            },
        ])
        .unwrap()
    }

    #[test]
    fn sleep_is_refused_and_soft_off_and_everything_else_allowed() {
        let p = bochs();
        // High byte of PM1 control: SLP_EN | SLP_TYP=1 (S3) refused;
        // SLP_EN | SLP_TYP=0 (soft off) allowed; SLP_TYP without SLP_EN
        // (only staged) allowed; the low byte (SCI_EN...) allowed.
        assert!(!p.write_allowed(0xb005, SLP_EN | 1 << 2));
        assert!(!p.write_allowed(0xb005, SLP_EN | 7 << 2));
        assert!(p.write_allowed(0xb005, SLP_EN));
        assert!(p.write_allowed(0xb005, 1 << 2));
        assert!(p.write_allowed(0xb004, 0xff));
        // SMI_CMD: ACPI_ENABLE and ACPI_DISABLE performed; S4BIOS_REQ,
        // a vendor command, and 0 (an unused slot) refused.
        assert!(p.write_allowed(0xb2, 0xf1) && p.write_allowed(0xb2, 0xf0));
        assert!(!p.write_allowed(0xb2, 0xf2));
        assert!(!p.write_allowed(0xb2, 0x55));
        assert!(!p.write_allowed(0xb2, 0x00));
        assert!(p.write_allowed(0x80, SLP_EN | 1 << 2));
        assert_eq!(p.ports().collect::<Vec<_>>(), [0xb004, 0xb005, 0xb2]);
    }

    #[test]
    fn without_a_soft_off_type_every_sleep_is_refused() {
        let p = PlatformPorts::new(&[PortRule::SleepControl {
            port: 0x404,
            off: None,
        }])
        .unwrap();
        assert!(!p.write_allowed(0x405, SLP_EN));
        assert!(p.write_allowed(0x405, 0));
        assert!(PlatformPorts::new(&[PortRule::RefuseByte { port: 1, value: 1 }; 11]).is_none());
        assert_eq!(PlatformPorts::default().ports().count(), 0);
    }

    #[test]
    fn passed_blocks_spare_the_ports_a_rule_names() {
        // Bochs' PIIX4 PM block: PM1 event 0xB000+4, PM1 control 0xB004+2
        // (a rule), the PM timer 0xB008+4; GPE0 0xAFE0+4.
        let blocks = [
            PortBlock {
                first: 0xb000,
                len: 12,
            },
            PortBlock {
                first: 0xafe0,
                len: 4,
            },
        ];
        let p = bochs().passing(&blocks).unwrap();
        assert!(p.passes(0xb000) && p.passes(0xb003) && p.passes(0xb00b));
        assert!(
            !p.passes(0xb004) && !p.passes(0xb005),
            "PM1 control: a rule"
        );
        assert!(p.mediates(0xb005) && !p.mediates(0xb000));
        assert!(!p.passes(0xb00c) && !p.passes(0xafdf) && p.passes(0xafe3));
        assert!(bochs().passing(&[blocks[0]; 7]).is_none());
        let top = PortBlock {
            first: 0xfffe,
            len: 4,
        };
        assert!(top.contains(0xffff) && !top.contains(0) && !top.contains(1));
    }
}
