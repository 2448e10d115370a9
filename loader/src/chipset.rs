//! Chipset registers a guest must not reach, found before the monitor
//! starts: the host bridge's SMRAM control. With D_OPEN set, SMRAM
//! (0xA0000-0xBFFFF) is ordinary memory the guest can fill, and the next
//! SMI (a write to the APM control port 0xB2, which passes through) runs
//! that code in SMM, above VMX, with every physical page in reach.
//! Setting D_LCK makes the register read-only until reset (Intel 440FX
//! datasheet §3.3.35 "SMRAM—System Management RAM Control Register",
//! 0x72; Q35/ICH9 MCH 0x9D); the monitor also refuses guest writes to the
//! register's dword (`okernel::exit::platform_ports`), for chipsets or
//! emulators that do not honour D_LCK.

/// Configuration space through mechanism #1 (CONFIG_ADDRESS values).
pub trait ConfigSpace {
    /// Reads the dword `address` selects.
    fn read(&mut self, address: u32) -> u32;
    /// Writes the dword `address` selects.
    fn write(&mut self, address: u32, value: u32);
}

/// SMRAM control: D_OPEN (bit 6) and D_LCK (bit 4).
const D_OPEN: u32 = 1 << 6;
const D_LCK: u32 = 1 << 4;

/// Host bridges whose SMRAM control okernel knows: (vendor:device,
/// register).
const HOST_BRIDGES: [(u32, u32); 2] = [
    (0x1237_8086, 0x72), // 440FX (Bochs, QEMU pc)
    (0x29c0_8086, 0x9d), // Q35 / ICH9 MCH (QEMU q35)
];

/// What [`lock_smram`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smram {
    /// Not a host bridge okernel knows (0:0.0's vendor and device).
    Unknown(u32),
    /// Locked (D_LCK reads back set, D_OPEN clear); the register's dword.
    Locked(u32),
    /// D_LCK did not stick (the register's dword, what it reads).
    NotLocked(u32, u32),
}

/// Sets D_LCK (and clears D_OPEN) in the SMRAM control of bus 0's host
/// bridge, if okernel knows it, and says whether it holds.
pub fn lock_smram(cfg: &mut dyn ConfigSpace) -> Smram {
    let id = cfg.read(0x8000_0000);
    let Some(&(_, reg)) = HOST_BRIDGES.iter().find(|(i, _)| *i == id) else {
        return Smram::Unknown(id);
    };
    let dword = 0x8000_0000 | (reg & !3);
    let shift = 8 * (reg & 3);
    let v = cfg.read(dword);
    let smram = (v >> shift) & 0xff;
    if smram & D_LCK == 0 || smram & D_OPEN != 0 {
        let locked = (smram | D_LCK) & !D_OPEN;
        cfg.write(dword, (v & !(0xff << shift)) | locked << shift);
    }
    let after = (cfg.read(dword) >> shift) & 0xff;
    if after & D_LCK != 0 && after & D_OPEN == 0 {
        Smram::Locked(dword)
    } else {
        Smram::NotLocked(dword, after)
    }
}

/// The host bridge register that places PCI Express configuration space
/// (ECAM): its configuration dwords, and the window it decodes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pciexbar {
    /// CONFIG_ADDRESS of its two dwords (low: enable, length, base; high:
    /// base bits above 31), which the loader locks: moved, the window
    /// would appear where the EPT maps, around every check of
    /// configuration writes.
    pub dwords: [u32; 2],
    /// The window it decodes, when enabled: [start, end).
    pub window: Option<(u64, u64)>,
}

/// PCIEXBAR of bus 0's host bridge, if okernel knows the bridge: Q35's
/// MCH (8086:29C0, register 0x60: bit 0 enable, bits 2:1 length — 256,
/// 128 or 64 MiB — base bits 35:26; Intel 3 Series/ICH9 MCH datasheet
/// §5.1.12). Read whether or not the firmware lists ECAM in an MCFG: an
/// enabled window is kept from the guest, and the register locked, either
/// way. `None`: another bridge (the loader warns when the platform has
/// ECAM; AMD places it by an MSR, which the monitor's default-deny MSR
/// table refuses).
pub fn pciexbar(cfg: &mut dyn ConfigSpace) -> Option<Pciexbar> {
    const Q35: u32 = 0x29c0_8086;
    if cfg.read(0x8000_0000) != Q35 {
        return None;
    }
    let (lo, hi) = (cfg.read(0x8000_0060), cfg.read(0x8000_0064));
    let window = (lo & 1 != 0).then(|| {
        let len: u64 = match (lo >> 1) & 0b11 {
            1 => 128 << 20,
            2 => 64 << 20,
            _ => 256 << 20,
        };
        let base = ((u64::from(hi) << 32) | u64::from(lo)) & ((1 << 36) - 1) & !(len - 1);
        (base, base + len)
    });
    Some(Pciexbar {
        dwords: [0x8000_0060, 0x8000_0064],
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 440FX whose SMRAM control honours D_LCK (or not).
    struct I440fx {
        smram: u32,
        honours_lock: bool,
    }

    impl ConfigSpace for I440fx {
        fn read(&mut self, address: u32) -> u32 {
            match address {
                0x8000_0000 => 0x1237_8086,
                0x8000_0070 => self.smram << 16,
                _ => 0,
            }
        }
        fn write(&mut self, address: u32, value: u32) {
            if address == 0x8000_0070 && (self.honours_lock || self.smram & D_LCK == 0) {
                self.smram = (value >> 16) & 0xff & if self.honours_lock { 0xff } else { !D_LCK };
            }
        }
    }

    #[test]
    fn the_smram_control_is_locked_closed_and_a_lock_that_does_not_hold_is_said() {
        // SeaBIOS and Bochs leave 0x0A: G_SMRAME | C_BASE_SEG, no D_LCK.
        let mut open = I440fx {
            smram: 0x4a,
            honours_lock: true,
        };
        assert_eq!(lock_smram(&mut open), Smram::Locked(0x8000_0070));
        assert_eq!(open.smram, 0x1a);
        let mut ignoring = I440fx {
            smram: 0x0a,
            honours_lock: false,
        };
        assert_eq!(
            lock_smram(&mut ignoring),
            Smram::NotLocked(0x8000_0070, 0x0a)
        );
        struct Other;
        impl ConfigSpace for Other {
            fn read(&mut self, _: u32) -> u32 {
                0x1234_1022
            }
            fn write(&mut self, _: u32, _: u32) {
                panic!("nothing is written to an unknown bridge");
            }
        }
        assert_eq!(lock_smram(&mut Other), Smram::Unknown(0x1234_1022));
    }

    #[test]
    fn pciexbar_is_read_on_q35_only() {
        /// Bus 0 function 0: this ID and PCIEXBAR's two dwords.
        struct Bridge(u32, u32, u32);
        impl ConfigSpace for Bridge {
            fn read(&mut self, address: u32) -> u32 {
                match address {
                    0x8000_0000 => self.0,
                    0x8000_0060 => self.1,
                    0x8000_0064 => self.2,
                    _ => 0,
                }
            }
            fn write(&mut self, _: u32, _: u32) {}
        }
        // SeaBIOS on q35: 256 MiB at 0xB000_0000, enabled.
        let p = pciexbar(&mut Bridge(0x29c0_8086, 0xb000_0001, 0)).unwrap();
        assert_eq!(p.dwords, [0x8000_0060, 0x8000_0064]);
        assert_eq!(p.window, Some((0xb000_0000, 0xc000_0000)));
        // 64 MiB above 4 GiB; disabled: no window, still locked.
        let p = pciexbar(&mut Bridge(0x29c0_8086, 0x0c00_0005, 0x4)).unwrap();
        assert_eq!(p.window, Some((0x4_0c00_0000, 0x4_1000_0000)));
        assert_eq!(
            pciexbar(&mut Bridge(0x29c0_8086, 0xb000_0000, 0))
                .unwrap()
                .window,
            None
        );
        // The 440FX (0x60 is a DRAM row boundary there), AMD: unknown.
        assert_eq!(pciexbar(&mut Bridge(0x1237_8086, 0xb000_0001, 0)), None);
        assert_eq!(pciexbar(&mut Bridge(0x1480_1022, 0xb000_0001, 0)), None);
    }
}
