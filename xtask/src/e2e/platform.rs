//! The platform attack rows: attacks on the machine around the monitor
//! that each need their own boot, in pairs — the demo guest's scenario
//! with `mode=direct` (no monitor: the negative control, where the attack
//! must succeed) and under okernel (where it must be blocked and the
//! console must show what blocked it).
//!
//! - `scenario=smp` (attacks `ap-start-outside-vmx` and
//!   `ap-write-locked-page`, `guest/src/smp/`) on Bochs with 2
//!   processors: without a monitor the other processor runs the guest's
//!   start-up code with VMX visible and writes the page the guest did not
//!   lock; under okernel the loader reports it parked in VMX root, the
//!   monitor reports it started under the monitor by the guest's SIPI, it
//!   runs the code with VMX hidden, and its write to the page the guest
//!   locked on the first processor is denied (#GP, audited); and on 4
//!   processors (three parked, racing for their slots, three started).
//! - `scenario=sleep` (attack `acpi-sleep-resume-outside-vmx`,
//!   `guest/src/sleep.rs`): without a monitor Bochs suspends to RAM and
//!   its BIOS resumes the guest's code outside VMX; under okernel the
//!   monitor refuses the sleep (seven `exit` audit records).
//! - `scenario=smm` (attack `smm-handler-from-the-guest`,
//!   `guest/src/smm.rs`): without a monitor the guest opens SMRAM, puts
//!   its handler there and an SMI runs it; under okernel SMRAM is locked
//!   and its control register refused.
//! - `scenario=dma` (attack `isa-dma-over-locked-page`, `guest/src/dma.rs`)
//!   on Bochs with a floppy whose sectors repeat the guest's pattern:
//!   without a monitor the floppy controller's DMA writes the page; under
//!   okernel (the page locked read-only) default deny drops the 8237's
//!   and the controller's ports and the page keeps its bytes.
//! - `scenario=bar` (attack `pci-bar-over-locked-page`, `guest/src/bar.rs`)
//!   on Bochs with its PCI VGA adapter: without a monitor the adapter's
//!   frame-buffer BAR moved over a page makes the page read what the
//!   device answers (0xFF); under okernel (the page locked read-only) the
//!   BAR write is refused and audited.

use super::{Row, RowState, print_outcome};
use crate::images::Images;
use qemu_harness::bochs::{Bochs, BochsConfig, DEFAULT_MODEL};
use qemu_harness::{Availability, GuestModule, Probed, RunReport, RunSpec, Verdict};
use std::time::Duration;

/// One row.
pub struct PlatformCase {
    /// Its name in the table.
    pub name: &'static str,
    /// The guest's scenario.
    pub scenario: &'static str,
    /// The attacks' check lines (`attack-...`), one each.
    pub attacks: &'static [&'static str],
    /// Processors (Bochs `cpu: count=`).
    pub cpus: u32,
    /// `mode=direct`: no monitor, the attack must succeed.
    pub direct: bool,
    /// What the loader or monitor must print (under okernel), and on how
    /// many of its lines: `None` for at least one.
    pub console: Vec<(String, Option<usize>)>,
    /// What Bochs' log must say (the emulator's own account of the
    /// attack's effect, for a negative control).
    pub emulator_log: &'static [&'static str],
    /// What is expected, for the table.
    pub expected: &'static str,
    /// A floppy in drive A whose every sector repeats the DMA attack's
    /// pattern.
    pub floppy: bool,
    /// Bochs' PCI VGA adapter (a device with a movable memory BAR).
    pub pci_vga: bool,
    /// For the console-forgery rows: whether the guest's forged result
    /// line (`fail: FORGED by the guest`) must be the run's result (bare)
    /// or no line of the monitor's may say `FORGED` (under okernel).
    pub forged: Option<bool>,
    /// A negative control under a planted-defect build of the monitor.
    pub planted: Option<Planted>,
}

/// A row under a monitor built with one deliberate defect: the attack
/// that defect opens must succeed, every other attack of the row must
/// still be blocked.
#[derive(Debug, Clone, Copy)]
pub struct Planted {
    /// The loader's feature (`planted-no-shootdown`).
    pub feature: &'static str,
    /// What the guest's command line adds, so that it expects the
    /// attacks to succeed.
    pub guest_arg: &'static str,
    /// The check lines of the attacks the defect opens.
    pub attacks: &'static [&'static str],
}

/// What the loader prints once the other `cpus - 1` processors are in
/// VMX root.
fn parked_line(cpus: u32) -> String {
    format!(
        "{} application processor(s) parked in VMX root (the MADT lists {cpus} processors enabled",
        cpus - 1
    )
}

/// What the monitor prints for each processor the guest's SIPI starts
/// (`scenario=smp`: vector 0x08).
const SIPI_LINE: &str =
    "okernel: SIPI: processor starts at 0x8000 (vector 0x08) in real mode, under the monitor";

/// A row on one processor with no extra device and no emulator log:
/// `(scenario, attack)`, and under okernel (`!direct`) the monitor's line
/// `console`.
fn one_cpu(
    name: &'static str,
    (scenario, attack): (&'static str, &'static [&'static str]),
    direct: bool,
    console: &str,
    expected: &'static str,
) -> PlatformCase {
    PlatformCase {
        name,
        scenario,
        attacks: attack,
        cpus: 1,
        direct,
        console: if direct {
            vec![]
        } else {
            vec![(console.to_string(), None)]
        },
        emulator_log: &[],
        expected,
        floppy: false,
        pci_vga: false,
        forged: None,
        planted: None,
    }
}

/// The rows `cargo xtask test` runs (and `cargo xtask platform` alone).
pub fn cases() -> Vec<PlatformCase> {
    let smp = |name, cpus, direct, expected| PlatformCase {
        name,
        scenario: "smp",
        attacks: &[
            "attack-ap-start-outside-vmx",
            "attack-ap-write-locked-page",
            "attack-race-write-vs-lock",
            "attack-race-stale-mapping",
            "attack-race-view-switch",
        ],
        cpus,
        direct,
        // Every other processor parked, then each started by the guest's
        // SIPI under the monitor.
        console: if direct {
            vec![]
        } else {
            vec![
                (parked_line(cpus), None),
                (SIPI_LINE.to_string(), Some(cpus as usize - 1)),
            ]
        },
        emulator_log: &[],
        expected,
        floppy: false,
        pci_vga: false,
        forged: None,
        planted: None,
    };
    // The view switch's negative control: the monitor built to run every
    // exit in the context the previous one left.
    let shared_context = |name, cpus, expected| PlatformCase {
        planted: Some(Planted {
            feature: "planted-shared-context",
            guest_arg: "contexts=shared",
            attacks: &["attack-race-view-switch"],
        }),
        ..smp(name, cpus, false, expected)
    };
    let sleep = |name, direct, expected| PlatformCase {
        name,
        scenario: "sleep",
        attacks: &["attack-acpi-sleep-resume-outside-vmx"],
        cpus: 1,
        direct,
        console: if direct {
            vec![]
        } else {
            vec![("sleep refused, soft off allowed".to_string(), None)]
        },
        // Bare, the guest's code must have run after Bochs moved the PM
        // block and suspended through it (not through the unmoved one).
        emulator_log: if direct {
            &[
                "new PM base address: 0x1000",
                "ACPI control: suspend to ram",
                "S3 resume jump to 0900:0000",
            ]
        } else {
            &[]
        },
        expected,
        floppy: false,
        pci_vga: false,
        forged: None,
        planted: None,
    };
    let dma = |name, direct, expected| PlatformCase {
        name,
        scenario: "dma",
        attacks: &["attack-isa-dma-over-locked-page"],
        cpus: 1,
        direct,
        console: if direct {
            vec![]
        } else {
            vec![(
                "every other port not in okernel's table is denied".to_string(),
                None,
            )]
        },
        // Bare, Bochs' own account of the transfer.
        emulator_log: &[],
        expected,
        floppy: true,
        pci_vga: false,
        forged: None,
        planted: None,
    };
    let forge = |name, direct, expected| PlatformCase {
        forged: Some(direct),
        ..one_cpu(
            name,
            ("forge", &["attack-forge-monitor-console-line"]),
            direct,
            "okernel: audit log: ",
            expected,
        )
    };
    let smm = |name, direct, expected| {
        one_cpu(
            name,
            ("smm", &["attack-smm-handler-from-the-guest"]),
            direct,
            "SMRAM control locked (D_LCK)",
            expected,
        )
    };
    let bar = |name, direct, expected| PlatformCase {
        pci_vga: true,
        ..one_cpu(
            name,
            ("bar", &["attack-pci-bar-over-locked-page"]),
            direct,
            "okernel: audit log: ",
            expected,
        )
    };
    vec![
        smp(
            "smp-no-monitor",
            2,
            true,
            "2 CPUs, no monitor: the AP runs guest code outside VMX, writes the page",
        ),
        smp(
            "smp",
            2,
            false,
            "2 CPUs: AP parked, started under the monitor, its write to the locked page denied, no write after a lock returned",
        ),
        smp(
            "smp-4cpu",
            4,
            false,
            "4 CPUs: 3 APs parked, started under the monitor, writes denied, the race lost",
        ),
        PlatformCase {
            planted: Some(Planted {
                feature: "planted-no-shootdown",
                guest_arg: "shootdown=off",
                attacks: &["attack-race-write-vs-lock", "attack-race-stale-mapping"],
            }),
            ..smp(
                "smp-race-no-shootdown",
                2,
                false,
                "monitor without its shootdown: a write lands after the lock returned, in both races",
            )
        },
        shared_context(
            "smp-shared-context",
            2,
            "monitor whose exits share one context: the BSP leaving takes the AP's context with it (destroyed under it, or its write lands)",
        ),
        shared_context(
            "smp-4cpu-shared-context",
            4,
            "4 CPUs, exits sharing one context: the BSP leaving takes the APs along, their writes land",
        ),
        sleep(
            "sleep-no-monitor",
            true,
            "no monitor: S3, resumed outside VMX",
        ),
        sleep("sleep", false, "S3 refused and audited, blocked"),
        dma(
            "dma-no-monitor",
            true,
            "no monitor: the floppy's DMA writes the page",
        ),
        dma(
            "dma",
            false,
            "page locked; DMA ports denied and audited, blocked",
        ),
        forge(
            "forge-no-monitor",
            true,
            "no monitor: the guest's marked result line wins",
        ),
        forge(
            "forge",
            false,
            "the mark dropped and audited, the monitor's result wins",
        ),
        smm(
            "smm-no-monitor",
            true,
            "no monitor: SMRAM opened, the guest's SMI handler runs",
        ),
        smm("smm", false, "SMRAM locked, its control refused, blocked"),
        bar(
            "bar-no-monitor",
            true,
            "no monitor: a VGA BAR moved over the page, it reads the device's 0xFF",
        ),
        bar(
            "bar",
            false,
            "page locked; the BAR move refused and audited, blocked",
        ),
    ]
}

fn spec(images: &Images, case: &PlatformCase) -> Result<RunSpec, String> {
    let (image, guest_arg) = match case.planted {
        Some(p) => (
            crate::images::build_planted_image(p.feature)?,
            format!(" {}", p.guest_arg),
        ),
        None => (images.okernel.clone(), String::new()),
    };
    Ok(RunSpec {
        name: case.name.to_string(),
        image,
        guest: GuestModule::File(images.guest.clone()),
        cmdline: if case.direct {
            "log=info mode=direct"
        } else {
            "log=info"
        }
        .to_string(),
        guest_cmdline: format!("scenario={}{guest_arg}", case.scenario),
        timeout: Duration::from_secs(120),
        run_dir: crate::images::root().join("target/runs").join(case.name),
        gdb: false,
    })
}

/// The run's spec and Bochs machine: the case's processors, and for the
/// DMA rows a floppy image (in the run directory) whose every sector
/// repeats the guest's pattern.
fn machine(images: &Images, case: &PlatformCase) -> Result<(RunSpec, BochsConfig), String> {
    let spec = spec(images, case)?;
    let mut config = BochsConfig {
        model: DEFAULT_MODEL,
        cpus: case.cpus,
        pci_vga: case.pci_vga,
        ..BochsConfig::default()
    };
    if case.floppy {
        std::fs::create_dir_all(&spec.run_dir)
            .map_err(|e| format!("{}: {e}", spec.run_dir.display()))?;
        let path = spec.run_dir.join("floppy.img");
        std::fs::write(
            &path,
            FLOPPY_PATTERN.repeat(1_474_560 / FLOPPY_PATTERN.len()),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        config.floppy = Some(path);
    }
    Ok((spec, config))
}

/// What every sector of the DMA rows' floppy repeats (the guest's
/// `dma::PATTERN`).
const FLOPPY_PATTERN: &[u8; 16] = b"OKERNEL-DMA-TEST";

/// The verdict on one run: passed, each attack line present once and
/// holding, its result the mode's (`succeeded` bare, `blocked` under
/// okernel), under okernel the case's console lines (on as many lines as
/// it says), and `emulator_log`'s lines, in order, in `log` (Bochs'
/// log).
pub fn judge(report: &RunReport, case: &PlatformCase, log: &str) -> Verdict {
    let bad = |why: String| Verdict::Unexpected(format!("{}: {why}", report.summary()));
    let checks = match report.parsed_checks() {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    for &attack in case.attacks {
        let opened = case.planted.is_some_and(|p| p.attacks.contains(&attack));
        let want = if case.direct || opened {
            "succeeded"
        } else {
            "blocked"
        };
        let lines: Vec<_> = checks.iter().filter(|c| c.check == attack).collect();
        let [line] = lines.as_slice() else {
            return bad(format!("{} `{attack}` lines, not one", lines.len()));
        };
        if !line.ok || line.result.as_deref() != Some(want) {
            return bad(format!(
                "`{attack}` must be {want} and hold: {:?}, {}",
                line.result, line.observed
            ));
        }
    }
    for (text, count) in &case.console {
        let n = report
            .monitor_lines()
            .filter(|l| l.contains(text.as_str()))
            .count();
        match count {
            None if n == 0 => return bad(format!("no line of the monitor's says `{text}`")),
            Some(want) if n != *want => {
                return bad(format!(
                    "{n} lines of the monitor's say `{text}`, not {want}"
                ));
            }
            _ => {}
        }
    }
    let mut rest = log;
    for line in case.emulator_log {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => return bad(format!("Bochs' log lacks `{line}` (in this order)")),
        }
    }
    let forged_line = report.monitor_lines().any(|l| l.contains("FORGED"));
    match case.forged {
        // Bare: the guest's marked line is the result the runner reads.
        Some(true) => {
            return if report.outcome() == Some(okernel_abi::result::Outcome::Fail)
                && report.detail().contains("FORGED")
                && forged_line
            {
                Verdict::Ok
            } else {
                bad(
                    "the forged result line did not win (the negative control proves nothing)"
                        .into(),
                )
            };
        }
        Some(false) if forged_line => {
            return bad("a line of the guest's passed for the monitor's".into());
        }
        _ => {}
    }
    if report.outcome() != Some(okernel_abi::result::Outcome::Pass) {
        return bad("the run did not pass".into());
    }
    Verdict::Ok
}

/// Runs `cases` on Bochs.
pub fn run(images: &Images, backends: &[Probed], cases: &[PlatformCase]) -> Vec<Row> {
    let bochs = backends.iter().find(|p| p.backend.name() == "bochs");
    let mut rows = Vec::new();
    for case in cases {
        let progress = format!("[platform] {:<9} {:<17}", "bochs", case.name);
        let state = match bochs.map(|p| &p.availability) {
            Some(Availability::Available(_)) => {
                eprint!("{progress} ");
                let result = machine(images, case)
                    .and_then(|(spec, config)| {
                        Bochs::run_config(&spec, config).map_err(|e| e.to_string())
                    })
                    .map(|r| {
                        let log = std::fs::read_to_string(r.run_dir.join("bochs.log"))
                            .unwrap_or_default();
                        let v = judge(&r, case, &log);
                        (r, v)
                    });
                print_outcome(&result);
                RowState::Ran(result)
            }
            Some(Availability::Unavailable(why)) => {
                eprintln!("{progress} UNAVAILABLE ON THIS HOST: {why}");
                RowState::Unavailable(format!("backend unavailable: {why}"))
            }
            None => RowState::Unavailable("no bochs backend was probed".into()),
        };
        rows.push(Row {
            case: case.name,
            backend: "bochs".into(),
            expected: case.expected.into(),
            state,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str) -> PlatformCase {
        cases().into_iter().find(|c| c.name == name).unwrap()
    }

    /// A run whose monitor printed `console` (each line marked) and
    /// whose guest printed the attacks' lines `(check, result, ok)` and a
    /// passing result.
    fn report_of(lines: &[(&str, &str, bool)], console: &str) -> RunReport {
        let mut console: String = console.lines().map(|l| format!("\u{1}{l}\n")).collect();
        for (attack, result, ok) in lines {
            console.push_str(&format!(
                "OKERNEL-CHECK: {{\"check\":\"{attack}\",\"invariant\":1,\"ok\":{ok},\"observed\":\"x\",\"attack\":\"a\",\"expected\":\"e\",\"result\":\"{result}\",\"audit\":\"none\"}}\n"
            ));
        }
        console.push_str("OKERNEL-RESULT: pass\n");
        RunReport::from_console("bochs", "t", console, std::path::PathBuf::from("/r"))
    }

    /// The same with one attack line.
    fn report(attack: &str, result: &str, ok: bool, console: &str) -> RunReport {
        report_of(&[(attack, result, ok)], console)
    }

    #[test]
    fn smp_rows_need_every_attack_the_parked_line_and_each_start() {
        let start = "attack-ap-start-outside-vmx";
        let write = "attack-ap-write-locked-page";
        let race = "attack-race-write-vs-lock";
        let stale = "attack-race-stale-mapping";
        let view = "attack-race-view-switch";
        let ok = |r: &RunReport, c: &str| judge(r, &case(c), "") == Verdict::Ok;
        let both = |result, ok_| {
            [
                (start, result, ok_),
                (write, result, ok_),
                (race, result, ok_),
                (stale, result, ok_),
                (view, result, ok_),
            ]
        };
        let parked = |cpus| format!("[INFO  loader] {}, 0 not enabled)", parked_line(cpus));
        let sipi = format!("[INFO  loader] {SIPI_LINE}");
        let console = |cpus: u32, starts: usize| {
            let mut c = parked(cpus);
            for _ in 0..starts {
                c.push('\n');
                c.push_str(&sipi);
            }
            c
        };
        // Bare: both succeeded, no console line needed.
        assert!(ok(
            &report_of(&both("succeeded", true), ""),
            "smp-no-monitor"
        ));
        assert!(!ok(
            &report_of(&both("blocked", true), ""),
            "smp-no-monitor"
        ));
        assert!(!ok(&report(start, "succeeded", true, ""), "smp-no-monitor"));
        // Under okernel: both blocked, parked, one start per AP.
        assert!(ok(
            &report_of(&both("blocked", true), &console(2, 1)),
            "smp"
        ));
        assert!(ok(
            &report_of(&both("blocked", true), &console(4, 3)),
            "smp-4cpu"
        ));
        // One attack line missing, one not holding, the write through.
        assert!(!ok(&report(start, "blocked", true, &console(2, 1)), "smp"));
        assert!(!ok(&report(write, "blocked", true, &console(2, 1)), "smp"));
        let mixed = [
            (start, "blocked", true),
            (write, "succeeded", true),
            (race, "blocked", true),
            (stale, "blocked", true),
            (view, "blocked", true),
        ];
        assert!(!ok(&report_of(&mixed, &console(2, 1)), "smp"));
        let failed = [
            (start, "blocked", false),
            (write, "blocked", true),
            (race, "blocked", true),
            (stale, "blocked", true),
            (view, "blocked", true),
        ];
        assert!(!ok(&report_of(&failed, &console(2, 1)), "smp"));
        let raced = [
            (start, "blocked", true),
            (write, "blocked", true),
            (race, "succeeded", true),
            (stale, "succeeded", true),
            (view, "blocked", true),
        ];
        assert!(!ok(&report_of(&raced, &console(2, 1)), "smp"));
        // Under the planted no-shootdown build both races must succeed.
        let half_raced = [
            (start, "blocked", true),
            (write, "blocked", true),
            (race, "succeeded", true),
            (stale, "blocked", true),
            (view, "blocked", true),
        ];
        assert!(!ok(
            &report_of(&half_raced, &console(2, 1)),
            "smp-race-no-shootdown"
        ));
        // The view switch's row missing, or through.
        let no_view = [
            (start, "blocked", true),
            (write, "blocked", true),
            (race, "blocked", true),
            (stale, "blocked", true),
        ];
        assert!(!ok(&report_of(&no_view, &console(2, 1)), "smp"));
        let switched = [
            (start, "blocked", true),
            (write, "blocked", true),
            (race, "blocked", true),
            (stale, "blocked", true),
            (view, "succeeded", true),
        ];
        assert!(!ok(&report_of(&switched, &console(2, 1)), "smp"));
        // Its planted-defect row: the view switch succeeded, the rest
        // blocked.
        assert!(ok(
            &report_of(&switched, &console(2, 1)),
            "smp-shared-context"
        ));
        assert!(!ok(
            &report_of(&both("blocked", true), &console(2, 1)),
            "smp-shared-context"
        ));
        assert!(!ok(
            &report_of(&raced, &console(2, 1)),
            "smp-shared-context"
        ));
        // The planted-defect row: the race succeeded, the rest blocked.
        assert!(ok(
            &report_of(&raced, &console(2, 1)),
            "smp-race-no-shootdown"
        ));
        assert!(!ok(
            &report_of(&both("blocked", true), &console(2, 1)),
            "smp-race-no-shootdown"
        ));
        assert!(!ok(
            &report_of(&mixed, &console(2, 1)),
            "smp-race-no-shootdown"
        ));
        // No start line (the AP never ran under the monitor), too few or
        // too many for the processors, no parked line, another count's.
        assert!(!ok(
            &report_of(&both("blocked", true), &console(2, 0)),
            "smp"
        ));
        assert!(!ok(
            &report_of(&both("blocked", true), &console(4, 1)),
            "smp-4cpu"
        ));
        assert!(!ok(
            &report_of(&both("blocked", true), &console(2, 2)),
            "smp"
        ));
        assert!(!ok(&report_of(&both("blocked", true), &sipi), "smp"));
        assert!(!ok(
            &report_of(&both("blocked", true), &console(2, 3)),
            "smp-4cpu"
        ));
        // The guest printing the line does not count (unmarked).
        let unmarked = RunReport::from_console(
            "bochs",
            "t",
            format!(
                "{sipi}\n{}",
                report_of(&both("blocked", true), &parked(2)).console
            ),
            std::path::PathBuf::from("/r"),
        );
        assert!(!ok(&unmarked, "smp"));
    }

    #[test]
    fn each_run_needs_its_own_result_and_okernel_its_console_line() {
        let smp = "attack-ap-start-outside-vmx";
        let ok = |r: &RunReport, c: &str| judge(r, &case(c), "") == Verdict::Ok;
        // Sleep: the resumed code's line bare; under okernel the refusal.
        let sleep = "attack-acpi-sleep-resume-outside-vmx";
        let refused = "ACPI sleep controls: ...: sleep refused, soft off allowed";
        let bochs = "new PM base address: 0x1000\nACPI control: suspend to ram\nS3 resume jump to 0900:0000";
        let bare =
            |r: &RunReport, log: &str| judge(r, &case("sleep-no-monitor"), log) == Verdict::Ok;
        assert!(bare(&report(sleep, "succeeded", true, ""), bochs));
        // The guest's code ran, but Bochs did not move the block (the
        // sleep went through the unmoved one): the control proves less.
        assert!(!bare(
            &report(sleep, "succeeded", true, ""),
            "ACPI control: suspend to ram\nS3 resume jump to 0900:0000"
        ));
        assert!(!bare(&report(sleep, "succeeded", true, ""), ""));
        assert!(ok(&report(sleep, "blocked", true, refused), "sleep"));
        assert!(!ok(&report(sleep, "succeeded", true, refused), "sleep"));
        assert!(!ok(&report(sleep, "blocked", true, ""), "sleep"));
        // Another attack's line does not count.
        assert!(!ok(&report(smp, "blocked", true, refused), "sleep"));
        // DMA: the bytes landed bare; under okernel blocked with the
        // loader's default-deny line.
        let dma = "attack-isa-dma-over-locked-page";
        let denied = "...; every other port not in okernel's table is denied";
        assert!(ok(&report(dma, "succeeded", true, ""), "dma-no-monitor"));
        assert!(!ok(&report(dma, "blocked", true, ""), "dma-no-monitor"));
        assert!(ok(&report(dma, "blocked", true, denied), "dma"));
        assert!(!ok(&report(dma, "succeeded", false, denied), "dma"));
        assert!(!ok(&report(dma, "blocked", true, ""), "dma"));
        // The monitor's line must be marked: the same text from the
        // guest (unmarked) does not count.
        let unmarked = RunReport::from_console(
            "bochs",
            "t",
            format!("{denied}\n{}", report(dma, "blocked", true, "").console),
            std::path::PathBuf::from("/r"),
        );
        assert!(!ok(&unmarked, "dma"));
        // Forgery: bare, the guest's marked failing result must win;
        // under okernel the monitor's pass, and no marked FORGED line.
        let forge = "attack-forge-monitor-console-line";
        let forged = "OKERNEL-RESULT: fail: FORGED by the guest";
        let ended = "[INFO  loader] okernel: audit log: 2 records\nOKERNEL-RESULT: pass";
        assert!(ok(
            &report(forge, "succeeded", true, forged),
            "forge-no-monitor"
        ));
        assert!(!ok(
            &report(forge, "succeeded", true, ""),
            "forge-no-monitor"
        ));
        assert!(ok(&report(forge, "blocked", true, ended), "forge"));
        let leaked = format!("{ended}\n[WARN  loader] okernel: audit #0 FORGED by the guest");
        assert!(!ok(&report(forge, "blocked", true, &leaked), "forge"));
        assert!(!ok(&report(forge, "blocked", true, forged), "forge"));
        // Each DMA row has its floppy, each BAR row the PCI VGA adapter,
        // no other row either.
        assert!(cases().iter().all(|c| c.floppy == (c.scenario == "dma")));
        assert!(cases().iter().all(|c| c.pci_vga == (c.scenario == "bar")));
    }
}
