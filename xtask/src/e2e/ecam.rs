//! The ECAM row: okernel booted on QEMU's `q35` machine, whose firmware
//! (SeaBIOS) lists PCI Express configuration space in an ACPI MCFG. QEMU
//! under TCG has no VMX, so the run ends `vmx-unavailable` — but only
//! after the loader built the monitor's configuration, which is what the
//! row checks, on real firmware tables: the loader must find the ECAM
//! window (the MCFG's, and the one PCIEXBAR decodes), remove the MCFG
//! from the root table (so the guest would use configuration ports the
//! monitor mediates), keep the windows out of every EPT view, and lock
//! the host bridge's PCIEXBAR
//! (`loader::acpi::mcfg`, `loader::chipset::pciexbar`). What the guest
//! would then do under VMX is not run here (no machine here has both
//! ECAM and VMX).

use super::{Row, RowState, Said, judge_checks, print_outcome};
use crate::images::Images;
use okernel_abi::result::Outcome;
use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Availability, Backend, GuestModule, Probed, RunSpec, Verdict};
use std::time::Duration;

/// What the loader must say on the q35 machine.
const LOADER_SAYS: &[Said] = &[
    Said::Monitor(
        "PCI Express ECAM [Some((b0000000, c0000000)), None, None, None, Some((b0000000, c0000000))]: kept from the guest (MCFG removed from 1 root table(s)",
    ),
    Said::Monitor("PCIEXBAR at [80000060, 80000064] locked"),
];

/// Runs the row when QEMU/TCG is available.
pub fn run(images: &Images, backends: &[Probed]) -> Vec<Row> {
    let tcg = backends.iter().find(|p| p.backend.name() == "qemu-tcg");
    let progress = format!("[ecam] {:<9} {:<17}", "qemu-tcg", "ecam-q35");
    let state = match tcg.map(|p| &p.availability) {
        Some(Availability::Available(_)) => {
            eprint!("{progress} ");
            let spec = RunSpec {
                name: "ecam-q35".to_string(),
                image: images.okernel.clone(),
                guest: GuestModule::File(images.guest.clone()),
                cmdline: "log=info".to_string(),
                guest_cmdline: "scenario=boot".to_string(),
                timeout: Duration::from_secs(60),
                run_dir: crate::images::root().join("target/runs/ecam-q35"),
                gdb: false,
            };
            let result = Qemu::new(Accel::Tcg)
                .with_machine("q35")
                .run(&spec)
                .map(|r| {
                    let v = match judge_checks(&r, &[], &[], LOADER_SAYS) {
                        Verdict::Ok if r.outcome() == Some(Outcome::VmxUnavailable) => Verdict::Ok,
                        Verdict::Ok => Verdict::Unexpected(format!(
                            "{}: the run must end vmx-unavailable (TCG has no VMX)",
                            r.summary()
                        )),
                        other => other,
                    };
                    (r, v)
                })
                .map_err(|e| e.to_string());
            print_outcome(&result);
            RowState::Ran(result)
        }
        Some(Availability::Unavailable(why)) => {
            eprintln!("{progress} UNAVAILABLE ON THIS HOST: {why}");
            RowState::Unavailable(format!("backend unavailable: {why}"))
        }
        None => RowState::Unavailable("no qemu-tcg backend was probed".into()),
    };
    vec![Row {
        case: "ecam-q35",
        backend: "qemu-tcg".into(),
        expected: "q35's ECAM kept from the guest, PCIEXBAR locked".into(),
        state,
    }]
}
