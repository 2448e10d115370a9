//! End-to-end boots: each case on each available backend, one table.

use crate::images::Images;
use qemu_harness::bochs::Bochs;
use qemu_harness::kvm::Kvm;
use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Backend, GuestModule, RunReport, RunSpec, Verdict, VmxSupport};
use std::path::PathBuf;
use std::time::Duration;

mod cases;

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
    let checks = match report.parsed_checks() {
        Ok(c) => c,
        Err(e) => return Verdict::Unexpected(e),
    };
    if let Some(bad) = checks.iter().find(|c| !c.ok) {
        return Verdict::Unexpected(format!("check `{}` failed: {}", bad.check, bad.observed));
    }
    let with_vmx: &[&str] = match vmx {
        VmxSupport::Available => case.required_with_vmx,
        VmxSupport::Unavailable => &[],
    };
    for name in case.required_checks.iter().chain(with_vmx) {
        if !checks.iter().any(|c| c.check == *name) {
            return Verdict::Unexpected(format!("check `{name}` was not reported"));
        }
    }
    for text in case.console_must_contain {
        if !report.console.contains(text) {
            return Verdict::Unexpected(format!("console lacks `{text}`"));
        }
    }
    Verdict::Ok
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

/// The backends available here, best first for the main job.
pub fn backends() -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = Vec::new();
    let kvm = qemu_harness::kvm_usable();
    if kvm && qemu_harness::kvm_nested_vmx() {
        v.push(Box::new(Kvm::new()));
        v.push(Box::new(Qemu::new(Accel::Kvm)));
        v.push(Box::new(Bochs));
    } else {
        v.push(Box::new(Bochs));
        if kvm {
            v.push(Box::new(Kvm::new()));
            v.push(Box::new(Qemu::new(Accel::Kvm)));
        }
    }
    v.push(Box::new(Qemu::new(Accel::Tcg)));
    v
}

/// The run spec of `case` on `backend`.
pub fn spec(images: &Images, bad: &(PathBuf, PathBuf), case: &Case, backend: &str) -> RunSpec {
    let guest = match case.module {
        Module::Guest => GuestModule::File(images.guest.clone()),
        Module::Guest32 => GuestModule::File(images.guest32.clone()),
        Module::Missing => GuestModule::None,
        Module::Corrupt => GuestModule::File(bad.0.clone()),
        Module::Elf32 => GuestModule::File(bad.1.clone()),
    };
    let timeout = match (case.hangs, backend) {
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

/// Why `case` cannot run on `backend` on this host, if it cannot. Such a
/// row is reported as skipped with this reason, never as passed.
pub fn skip_reason(case: &Case, backend: &dyn Backend) -> Option<&'static str> {
    let kvm_backend = matches!(backend.name(), "kvm" | "qemu-kvm");
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    // Where the image stops at "VMX unavailable" the guest never reaches
    // ring 3, and that outcome is still checked.
    let guest_runs = !case.needs_vmx || backend.vmx() == VmxSupport::Available;
    (case.ring3 && guest_runs && kvm_backend && pvm).then_some(
        "this host's KVM is kvm_pvm, which faults a plain guest's first SYSCALL \
         (CPL-3 fetch of the syscall entry); Bochs and QEMU/TCG run the case",
    )
}

/// One row of the results table.
pub struct Row {
    /// The case.
    pub case: &'static str,
    /// The backend.
    pub backend: String,
    /// What was expected.
    pub expected: String,
    /// What happened (or why the run could not happen).
    pub result: Result<(RunReport, Verdict), String>,
    /// Why the row was not run here (see [`skip_reason`]).
    pub skipped: Option<&'static str>,
}

impl Row {
    /// Whether the row is as expected.
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((_, Verdict::Ok)))
    }
}

/// Runs every case on every backend, printing progress.
pub fn run_matrix(images: &Images, backends: &[Box<dyn Backend>]) -> Result<Vec<Row>, String> {
    let bad = bad_modules(images)?;
    let cases = cases();
    let total = cases.len() * backends.len();
    let mut rows = Vec::new();
    for backend in backends {
        for case in &cases {
            if let Some(why) = skip_reason(case, backend.as_ref()) {
                eprintln!(
                    "[{:>2}/{total}] {:<9} {:<17} SKIPPED: {why}",
                    rows.len() + 1,
                    backend.name(),
                    case.name
                );
                rows.push(Row {
                    case: case.name,
                    backend: backend.name().to_string(),
                    expected: expectation(case, backend.vmx()).describe(),
                    result: Err(why.to_string()),
                    skipped: Some(why),
                });
                continue;
            }
            let spec = spec(images, &bad, case, backend.name());
            eprint!(
                "[{:>2}/{total}] {:<9} {:<17} ",
                rows.len() + 1,
                backend.name(),
                case.name
            );
            let result = backend
                .run(&spec)
                .map(|r| {
                    let v = judge(case, backend.vmx(), &r);
                    (r, v)
                })
                .map_err(|e| e.to_string());
            match &result {
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
            rows.push(Row {
                case: case.name,
                backend: backend.name().to_string(),
                expected: expectation(case, backend.vmx()).describe(),
                result,
                skipped: None,
            });
        }
    }
    Ok(rows)
}

/// Prints the results table and the closing count line.
pub fn print_table(rows: &[Row]) -> bool {
    println!();
    println!(
        "{:<18} {:<9} {:<44} {:<6} observed",
        "case", "backend", "expected", ""
    );
    println!("{}", "-".repeat(110));
    for r in rows {
        let observed = match (&r.result, r.skipped) {
            (_, Some(why)) => format!("not run: {why}"),
            (Ok((rep, _)), None) => rep.summary(),
            (Err(e), None) => format!("harness error: {e}"),
        };
        let mark = match (r.ok(), r.skipped) {
            (_, Some(_)) => "skip",
            (true, None) => "ok",
            (false, None) => "FAIL",
        };
        println!(
            "{:<18} {:<9} {:<44} {:<6} {}",
            r.case,
            r.backend,
            r.expected,
            mark,
            truncate(&observed, 80)
        );
    }
    let passed = rows.iter().filter(|r| r.ok()).count();
    let skipped = rows.iter().filter(|r| r.skipped.is_some()).count();
    let failed = rows.len() - passed - skipped;
    println!();
    println!("e2e: {passed} passed, {failed} failed, {skipped} skipped");
    failed == 0
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}
