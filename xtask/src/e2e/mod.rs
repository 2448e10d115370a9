//! End-to-end boots: each case on each available backend, one table.

use crate::images::Images;
use qemu_harness::{
    Availability, Backend, Expect, GuestModule, Probed, RunReport, RunSpec, Verdict, VmxSupport,
};
use std::path::PathBuf;
use std::time::Duration;

mod cases;
pub mod conformance;
pub mod ecam;
pub mod linux;
pub mod platform;

pub use cases::{Case, Module, boot_case, cases, expectation};

/// Judges a run of `case`: the outcome and, where the guest ran, that
/// every check held, the required checks were reported and the console
/// shows the required records.
pub fn judge(case: &Case, vmx: VmxSupport, report: &RunReport) -> Verdict {
    let verdict = Verdict::judge(report, &expectation(case, vmx));
    let guest_ran = vmx == VmxSupport::Available || !case.needs_vmx;
    if verdict != Verdict::Ok || !guest_ran {
        return verdict;
    }
    let with_vmx: &[&str] = match vmx {
        VmxSupport::Available => case.required_with_vmx,
        VmxSupport::Unavailable => &[],
    };
    judge_checks(
        report,
        case.required_checks,
        with_vmx,
        case.console_must_contain,
    )
}

/// Every check `report` carries held, each of `required` and `also` was
/// reported, and the console contains each of `console` (audit records).
pub fn judge_checks(
    report: &RunReport,
    required: &[&str],
    also: &[&str],
    console: &[Said],
) -> Verdict {
    let checks = match report.parsed_checks() {
        Ok(c) => c,
        Err(e) => return Verdict::Unexpected(e),
    };
    if let Some(bad) = checks.iter().find(|c| !c.ok) {
        return Verdict::Unexpected(format!("check `{}` failed: {}", bad.check, bad.observed));
    }
    for name in required.iter().chain(also) {
        if !checks.iter().any(|c| c.check == *name) {
            return Verdict::Unexpected(format!("check `{name}` was not reported"));
        }
    }
    for said in console {
        let found = match said {
            Said::Monitor(text) => report.monitor_lines().any(|l| l.contains(text)),
            Said::Guest(text) => report.console.contains(text),
        };
        if !found {
            return Verdict::Unexpected(format!("console lacks {said:?}"));
        }
    }
    Verdict::Ok
}

/// Text a run's console must show, and whose it must be: the monitor's
/// (on a line it marked, `qemu_harness::RunReport::monitor_lines`, which
/// the guest cannot forge) or anyone's (the guest's own lines).
#[derive(Debug, Clone, Copy)]
pub enum Said {
    /// On one of the loader's or the monitor's lines.
    Monitor(&'static str),
    /// Anywhere on the console.
    Guest(&'static str),
}

/// Prints how a row's run ended after its progress prefix (the prefix
/// itself was printed before the run).
pub fn print_outcome(result: &Result<(RunReport, Verdict), String>) {
    match result {
        Ok((r, Verdict::Ok)) => {
            eprintln!("ok ({:.1}s) {}", r.duration.as_secs_f64(), r.summary())
        }
        Ok((r, Verdict::Unexpected(why))) => {
            eprintln!(
                "UNEXPECTED: {why}\n    run directory: {}",
                r.run_dir.display()
            );
            for l in r.last_lines(12) {
                eprintln!("    | {l}");
            }
        }
        Err(e) => eprintln!("ERROR: {e}"),
    }
}

/// Writes the derived bad modules next to the images.
pub fn bad_modules(images: &Images) -> Result<(PathBuf, PathBuf), String> {
    let corrupt = images.dir.join("corrupt.bin");
    // Deterministic noise that starts like nothing in particular.
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&corrupt, noise).map_err(|e| format!("{}: {e}", corrupt.display()))?;
    let elf32 = images.dir.join("elf32.bin");
    let mut bytes =
        std::fs::read(&images.guest).map_err(|e| format!("{}: {e}", images.guest.display()))?;
    bytes[4] = 1; // EI_CLASS = ELFCLASS32
    std::fs::write(&elf32, bytes).map_err(|e| format!("{}: {e}", elf32.display()))?;
    Ok((corrupt, elf32))
}

/// Every backend, best first for the main job, probed on this host; each
/// decision is printed with its evidence.
pub fn backends() -> Vec<Probed> {
    let probed = qemu_harness::probe::backends(&crate::images::root().join("target/runs/probe"));
    for p in &probed {
        eprintln!("xtask: backend {}", p.describe());
    }
    probed
}

/// Whether the VMX backend that every run needs (Bochs) was found
/// available among `backends`; the reason when not.
pub fn vmx_backend_ran(backends: &[Probed]) -> Result<(), String> {
    match backends.iter().find(|p| p.backend.name() == "bochs") {
        Some(p) if p.availability.is_available() => Ok(()),
        Some(p) => Err(format!(
            "the VMX backend, Bochs, is unavailable on this host: {}",
            p.availability.evidence()
        )),
        None => Err("the VMX backend, Bochs, was not probed".into()),
    }
}

/// The run spec of `case` on `backend`.
pub fn spec(images: &Images, bad: &(PathBuf, PathBuf), case: &Case, on: &dyn Backend) -> RunSpec {
    let backend = on.name();
    let guest = match case.module {
        Module::Guest => GuestModule::File(images.guest.clone()),
        Module::Guest32 => GuestModule::File(images.guest32.clone()),
        Module::Missing => GuestModule::None,
        Module::Corrupt => GuestModule::File(bad.0.clone()),
        Module::Elf32 => GuestModule::File(bad.1.clone()),
    };
    // A hanging case gets a short timeout only where the hang is what is
    // expected; where the image must stop first at "VMX unavailable" it
    // gets the normal one (a paravirtual KVM emulates the entry stub
    // slowly: seconds under load).
    let hangs = case.hangs && expectation(case, on.vmx()) == Expect::Timeout;
    let timeout = match (hangs, backend) {
        (true, "bochs") => Duration::from_secs(25),
        (true, "kvm") => Duration::from_secs(3),
        (true, _) => Duration::from_secs(5),
        (false, "bochs") => Duration::from_secs(120),
        (false, _) => Duration::from_secs(60),
    };
    RunSpec {
        name: case.name.to_string(),
        image: images.okernel.clone(),
        guest,
        cmdline: case.cmdline.to_string(),
        guest_cmdline: case.guest_cmdline.to_string(),
        timeout,
        run_dir: crate::images::root()
            .join("target/runs")
            .join(format!("{}-{backend}", case.name)),
        gdb: false,
    }
}

/// Why `case` cannot run on `backend` on this host, if it cannot: ring-3
/// cases on a KVM whose probe could not run a plain guest's ring-3 code
/// ([`qemu_harness::kvm_runs_ring3`]). Such a row is reported as
/// unavailable with the probe's evidence, never as passed.
pub fn unavailable_reason(images: &Images, case: &Case, backend: &dyn Backend) -> Option<String> {
    let kvm_backend = matches!(backend.name(), "kvm" | "qemu-kvm");
    // Where the image stops at "VMX unavailable" the guest never reaches
    // ring 3, and that outcome is still checked.
    let guest_runs = !case.needs_vmx || backend.vmx() == VmxSupport::Available;
    if !(case.ring3 && guest_runs && kvm_backend) {
        return None;
    }
    let dir = crate::images::root().join("target/runs/probe/kvm-ring3");
    qemu_harness::kvm_runs_ring3(&images.okernel, &images.guest, &dir)
        .err()
        .map(|why| format!("this host's KVM cannot run ring-3 code: {why}"))
}

/// One row of the results table.
pub struct Row {
    /// The case.
    pub case: &'static str,
    /// The backend.
    pub backend: String,
    /// What was expected.
    pub expected: String,
    /// What happened.
    pub state: RowState,
}

/// What became of a row.
pub enum RowState {
    /// It ran: the report and its verdict, or why the run could not
    /// happen (a harness error, a failure).
    Ran(Result<(RunReport, Verdict), String>),
    /// It could not run on this host: the backend (or, for one case, the
    /// host's KVM) is unavailable, with the probe's evidence.
    Unavailable(String),
}

impl Row {
    /// Whether the row is as expected.
    pub fn ok(&self) -> bool {
        matches!(self.state, RowState::Ran(Ok((_, Verdict::Ok))))
    }

    /// Whether the row could not run on this host.
    pub fn unavailable(&self) -> bool {
        matches!(self.state, RowState::Unavailable(_))
    }
}

/// Runs every case on every available backend, printing progress; the
/// cases of an unavailable backend are rows with its reason.
pub fn run_matrix(images: &Images, backends: &[Probed]) -> Result<Vec<Row>, String> {
    let bad = bad_modules(images)?;
    let cases = cases();
    let total = cases.len() * backends.len();
    let mut rows = Vec::new();
    for probed in backends {
        let backend = probed.backend.as_ref();
        for case in &cases {
            let expected = expectation(case, backend.vmx()).describe();
            let why = match &probed.availability {
                Availability::Unavailable(why) => Some(format!("backend unavailable: {why}")),
                Availability::Available(_) => unavailable_reason(images, case, backend),
            };
            let progress = format!(
                "[{:>2}/{total}] {:<9} {:<17}",
                rows.len() + 1,
                backend.name(),
                case.name
            );
            if let Some(why) = why {
                eprintln!(
                    "{progress} UNAVAILABLE ON THIS HOST: {}",
                    truncate(&why, 160)
                );
                rows.push(Row {
                    case: case.name,
                    backend: backend.name().to_string(),
                    expected,
                    state: RowState::Unavailable(why),
                });
                continue;
            }
            let spec = spec(images, &bad, case, backend);
            eprint!("{progress} ");
            let result = backend
                .run(&spec)
                .map(|r| {
                    let v = judge(case, backend.vmx(), &r);
                    (r, v)
                })
                .map_err(|e| e.to_string());
            print_outcome(&result);
            rows.push(Row {
                case: case.name,
                backend: backend.name().to_string(),
                expected,
                state: RowState::Ran(result),
            });
        }
    }
    rows.extend(platform::run(images, backends, &platform::cases()));
    rows.extend(ecam::run(images, backends));
    rows.extend(conformance::run(images, backends));
    Ok(rows)
}

/// Prints the results table and the closing count line (rows unavailable
/// on this host are counted as skipped there, and explained below it);
/// true when no row failed.
pub fn print_table(rows: &[Row]) -> bool {
    println!();
    println!(
        "{:<18} {:<9} {:<44} {:<7} observed",
        "case", "backend", "expected", ""
    );
    println!("{}", "-".repeat(110));
    for r in rows {
        let (mark, observed) = match &r.state {
            RowState::Unavailable(why) => ("unavail", format!("unavailable on this host: {why}")),
            RowState::Ran(Ok((rep, v))) => {
                (if *v == Verdict::Ok { "ok" } else { "FAIL" }, rep.summary())
            }
            RowState::Ran(Err(e)) => ("FAIL", format!("harness error: {e}")),
        };
        println!(
            "{:<18} {:<9} {:<44} {:<7} {}",
            r.case,
            r.backend,
            r.expected,
            mark,
            truncate(&observed, 80)
        );
    }
    let passed = rows.iter().filter(|r| r.ok()).count();
    let unavailable = rows.iter().filter(|r| r.unavailable()).count();
    let failed = rows.len() - passed - unavailable;
    println!();
    println!("e2e: {passed} passed, {failed} failed, {unavailable} skipped");
    if unavailable > 0 {
        println!(
            "e2e: the {unavailable} skipped rows are unavailable on this host (reasons in the table)"
        );
    }
    failed == 0
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu_harness::HarnessError;

    #[test]
    fn the_monitors_text_must_be_on_a_line_it_marked() {
        let r = |console: &str| RunReport::from_console("b", "t", console.to_string(), "/r".into());
        let audit = [Said::Monitor("okernel: audit #0")];
        // The guest printing the same text unmarked does not count.
        assert!(matches!(
            judge_checks(&r("okernel: audit #0\n"), &[], &[], &audit),
            Verdict::Unexpected(_)
        ));
        assert_eq!(
            judge_checks(
                &r("\u{1}[WARN  loader] okernel: audit #0\n"),
                &[],
                &[],
                &audit
            ),
            Verdict::Ok
        );
        // Guest text may be anywhere.
        let hello = [Said::Guest("hello")];
        assert_eq!(judge_checks(&r("hello\n"), &[], &[], &hello), Verdict::Ok);
    }

    /// A backend that reports `console` for every run.
    struct Fake(&'static str, &'static str);

    impl Backend for Fake {
        fn name(&self) -> &str {
            self.0
        }
        fn vmx(&self) -> VmxSupport {
            VmxSupport::Available
        }
        fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError> {
            Ok(RunReport::from_console(
                self.0,
                &spec.name,
                self.1.to_string(),
                spec.run_dir.clone(),
            ))
        }
    }

    fn probed(name: &'static str, availability: Availability) -> Probed {
        Probed {
            backend: Box::new(Fake(name, "")),
            availability,
        }
    }

    fn row(state: RowState) -> Row {
        Row {
            case: "boot",
            backend: "b".into(),
            expected: "pass".into(),
            state,
        }
    }

    #[test]
    fn unavailable_rows_neither_pass_nor_fail_but_failures_fail() {
        let unavailable = row(RowState::Unavailable("no emulator".into()));
        assert!(!unavailable.ok() && unavailable.unavailable());
        let ran = |console: &str| {
            let r = RunReport::from_console("b", "boot", console.into(), "/tmp".into());
            let v = Verdict::judge(&r, &qemu_harness::Expect::pass());
            row(RowState::Ran(Ok((r, v))))
        };
        let pass = ran("OKERNEL-RESULT: pass\n");
        assert!(pass.ok());
        assert!(print_table(&[unavailable, pass]));
        let silent = ran("");
        assert!(!silent.ok() && !silent.unavailable());
        assert!(
            !print_table(&[silent]),
            "a backend that ran and said nothing fails"
        );
        assert!(!print_table(&[row(RowState::Ran(Err("harness".into())))]));
    }

    #[test]
    fn the_run_needs_bochs_available() {
        let good = [
            probed("bochs", Availability::Available("BIOS ran".into())),
            probed("qemu-kvm", Availability::Unavailable("MSR".into())),
        ];
        assert_eq!(vmx_backend_ran(&good), Ok(()));
        let bad = [probed(
            "bochs",
            Availability::Unavailable("plugin missing".into()),
        )];
        let why = vmx_backend_ran(&bad).unwrap_err();
        assert!(why.contains("plugin missing"), "{why}");
        assert!(vmx_backend_ran(&good[1..]).is_err());
    }
}
