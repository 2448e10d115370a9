//! The `conformance` case (issue 18): the conformance kernel
//! (`conformance/`) booted bare by okernel's loader (`mode=direct`, no
//! monitor) and under okernel, on Bochs, its `conf-*` lines compared one
//! by one. A difference not listed in [`KNOWN`] fails the case with the
//! first differing line; so does a listed one whose okernel side is not
//! what the table says, and a bare run whose own checks do not all hold
//! (the reference must be sane).

use super::{Row, RowState, print_outcome};
use crate::images::Images;
use qemu_harness::bochs::{Bochs, BochsConfig};
use qemu_harness::{Availability, Check, GuestModule, Probed, RunReport, RunSpec, Verdict};
use std::time::Duration;

/// Why a line may differ between the bare run and the run under okernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// What okernel is for: the guest must not see or use VMX, and may
    /// see okernel's own CPUID leaves.
    ByDesign,
    /// A defect not fixed yet: listed so the case tracks it (and fails
    /// when it changes), named as a defect in `docs/vmx-core.md`.
    Defect,
    /// Bochs, the bare reference, is not what the SDM prescribes there and
    /// okernel is: the line's own check accepts both.
    Reference,
}

/// One row of the table of differences.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The check (`conf-...`).
    pub check: &'static str,
    /// What the run under okernel must show there.
    pub okernel: &'static str,
    /// By design, the reference's, or a defect.
    pub kind: Kind,
    /// Why.
    pub why: &'static str,
}

const GP_AT: &str = "#GP(0x0) rip=at rf=1 tf=0 if=0 frame=aligned";

/// The lines that may differ, and how (`docs/vmx-core.md`, "What a
/// guest can observe of okernel and why", holds the same table). A
/// listed line may also match: a fixed defect, or an MSR okernel passes
/// through, needs no change here to pass (remove its row then).
pub const KNOWN: &[Known] = &[
    Known {
        check: "conf-cpuid-1-vmx",
        okernel: "0",
        kind: Kind::ByDesign,
        why: "VMX is hidden (DESIGN.md invariant 12)",
    },
    Known {
        check: "conf-cpuid-1-hypervisor",
        okernel: "1",
        kind: Kind::ByDesign,
        why: "CPUID.1:ECX[31] says a hypervisor is present, as every hypervisor's does",
    },
    Known {
        check: "conf-cpuid-40000000",
        okernel: "eax=0x40000001 ebx=0x72654b4f ecx=0x536c656e edx=0x216d6968",
        kind: Kind::ByDesign,
        why: "okernel's CPUID leaves (\"OKernelShim!\", max leaf 0x40000001) for its client",
    },
    Known {
        check: "conf-rdmsr-feature-control",
        okernel: "0x1",
        kind: Kind::ByDesign,
        why: "VMX hidden: IA32_FEATURE_CONTROL reads locked with both VMXON enables clear",
    },
    Known {
        check: "conf-rdmsr-vmx-basic",
        okernel: GP_AT,
        kind: Kind::ByDesign,
        why: "VMX hidden: the VMX capability MSRs raise #GP(0), as on a CPU without VMX",
    },
    Known {
        check: "conf-mov-cr4-set-vmxe",
        okernel: GP_AT,
        kind: Kind::ByDesign,
        why: "VMX hidden: setting CR4.VMXE raises #GP(0), as on a CPU without VMX",
    },
    Known {
        check: "conf-lidt-same-value",
        okernel: GP_AT,
        kind: Kind::ByDesign,
        why: "descriptor-table loads are refused after LockDescriptorTables (invariant 4; the kernel locks them under okernel only)",
    },
    Known {
        check: "conf-eip-wraps-at-4gib-compat",
        okernel: "#UD(0x0) rip=next rf=1 tf=0 if=0 frame=aligned cs=0x38",
        kind: Kind::Reference,
        why: "after the wrap Bochs 2.7 saves RIP 0x100000000 (its 64-bit RIP not truncated); EIP is 32 bits wide in compatibility mode (SDM Vol. 1 §3.5), so the saved RIP is 0, as okernel's advance leaves it",
    },
];

/// What a comparison found: the lines compared and the listed
/// differences seen.
#[derive(Debug, PartialEq, Eq)]
pub struct Compared {
    /// Lines compared.
    pub lines: usize,
    /// The rows of [`KNOWN`] that differed as listed.
    pub listed: Vec<&'static str>,
}

/// Compares the `conf-` lines of the bare run with those of the run
/// under okernel: Ok(the number of lines compared), or the first
/// difference that [`KNOWN`] does not allow.
pub fn compare(bare: &[Check], monitor: &[Check]) -> Result<Compared, String> {
    let conf = |c: &&Check| c.check.starts_with("conf-");
    let bare: Vec<&Check> = bare.iter().filter(conf).collect();
    let monitor: Vec<&Check> = monitor.iter().filter(conf).collect();
    let mut listed = Vec::new();
    if let Some(bad) = bare.iter().find(|c| !c.ok) {
        return Err(format!(
            "the bare reference run failed its own check `{}`: {}",
            bad.check, bad.observed
        ));
    }
    for (i, b) in bare.iter().enumerate() {
        let Some(m) = monitor.get(i) else {
            return Err(format!(
                "line {}: `{}` is missing under okernel (the run ended after {} lines)",
                i + 1,
                b.check,
                monitor.len()
            ));
        };
        if m.check != b.check {
            return Err(format!(
                "line {}: bare has `{}`, okernel has `{}`",
                i + 1,
                b.check,
                m.check
            ));
        }
        if m.ok == b.ok && m.observed == b.observed {
            continue;
        }
        match KNOWN.iter().find(|k| k.check == b.check) {
            Some(k) if k.okernel == m.observed => listed.push(k.check),
            Some(k) => {
                return Err(format!(
                    "line {}: `{}`: the table allows `{}` under okernel ({:?}: {}), it shows `{}` (bare: `{}`)",
                    i + 1,
                    b.check,
                    k.okernel,
                    k.kind,
                    k.why,
                    m.observed,
                    b.observed
                ));
            }
            None => {
                return Err(format!(
                    "line {}: `{}` differs: bare `{}`, under okernel `{}`{}",
                    i + 1,
                    b.check,
                    b.observed,
                    m.observed,
                    if m.ok {
                        ""
                    } else {
                        " (not what the SDM prescribes)"
                    }
                ));
            }
        }
    }
    if monitor.len() > bare.len() {
        return Err(format!(
            "okernel's run has {} lines more than the bare one, from `{}`",
            monitor.len() - bare.len(),
            monitor[bare.len()].check
        ));
    }
    if bare.is_empty() {
        return Err("no conformance line was reported".into());
    }
    Ok(Compared {
        lines: bare.len(),
        listed,
    })
}

fn spec(images: &Images, direct: bool) -> RunSpec {
    let name = if direct {
        "conformance-bare"
    } else {
        "conformance-okernel"
    };
    RunSpec {
        name: name.to_string(),
        image: images.okernel.clone(),
        guest: GuestModule::File(images.conformance.clone()),
        cmdline: if direct {
            "log=info mode=direct"
        } else {
            "log=info"
        }
        .to_string(),
        guest_cmdline: String::new(),
        timeout: Duration::from_secs(120),
        run_dir: crate::images::root().join("target/runs").join(name),
        gdb: false,
    }
}

/// The verdict on the two runs.
pub fn judge(bare: &RunReport, monitor: &RunReport) -> Verdict {
    for r in [bare, monitor] {
        if r.timed_out || r.outcome().is_none() {
            return Verdict::Unexpected(format!("{}: {}", r.name, r.summary()));
        }
    }
    let parsed = bare
        .parsed_checks()
        .and_then(|b| Ok((b, monitor.parsed_checks()?)));
    match parsed.and_then(|(b, m)| compare(&b, &m)) {
        Ok(c) => {
            let count = |kind| {
                KNOWN
                    .iter()
                    .filter(|k| k.kind == kind && c.listed.contains(&k.check))
                    .count()
            };
            eprint!(
                "{} lines compared, {} differ as listed ({} by design, {} Bochs' reference, {} known defects: docs/vmx-core.md) ",
                c.lines,
                c.listed.len(),
                count(Kind::ByDesign),
                count(Kind::Reference),
                count(Kind::Defect)
            );
            // A listed row that matched: a fixed defect (remove its row).
            let equal: Vec<&str> = KNOWN
                .iter()
                .filter(|k| !c.listed.contains(&k.check))
                .map(|k| k.check)
                .collect();
            if !equal.is_empty() {
                eprint!("listed but equal: {} ", equal.join(", "));
            }
            Verdict::Ok
        }
        Err(why) => Verdict::Unexpected(why),
    }
}

/// Boots the kernel bare and under okernel on Bochs: one row.
pub fn run(images: &Images, backends: &[Probed]) -> Vec<Row> {
    let progress = format!("[conformance] {:<9} {:<17}", "bochs", "conformance");
    let bochs = backends.iter().find(|p| p.backend.name() == "bochs");
    let state = match bochs.map(|p| (&p.availability, p)) {
        Some((Availability::Available(_), _)) => {
            eprint!("{progress} ");
            // Both runs on a Bochs that raises #GP(0) for an MSR it does
            // not implement, as hardware does, instead of ignoring it:
            // the reference is then the SDM's for unknown MSRs too.
            let boot = |direct| {
                let machine = BochsConfig {
                    ignore_bad_msrs: false,
                    ..BochsConfig::default()
                };
                Bochs::run_config(&spec(images, direct), machine)
            };
            let result = boot(true)
                .and_then(|bare| Ok((bare, boot(false)?)))
                .map(|(bare, monitor)| {
                    let v = judge(&bare, &monitor);
                    (monitor, v)
                })
                .map_err(|e| e.to_string());
            print_outcome(&result);
            RowState::Ran(result)
        }
        Some((Availability::Unavailable(why), _)) => {
            eprintln!("{progress} UNAVAILABLE ON THIS HOST: {why}");
            RowState::Unavailable(format!("backend unavailable: {why}"))
        }
        None => RowState::Unavailable("no bochs backend was probed".into()),
    };
    vec![Row {
        case: "conformance",
        backend: "bochs".into(),
        expected: "bare = okernel but the by-design table".into(),
        state,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool, observed: &str) -> Check {
        serde_json::from_str(&format!(
            "{{\"check\":\"{name}\",\"invariant\":0,\"ok\":{ok},\"observed\":\"{observed}\"}}"
        ))
        .unwrap()
    }

    #[test]
    fn equal_lines_pass_and_any_other_difference_fails_with_the_first() {
        let bare = [
            check("conf-ud2", true, "#UD"),
            check("conf-int3", true, "#BP"),
        ];
        assert_eq!(compare(&bare, &bare).map(|c| c.lines), Ok(2));
        let other = [
            check("conf-ud2", true, "#UD"),
            check("conf-int3", true, "#GP"),
        ];
        let why = compare(&bare, &other).unwrap_err();
        assert!(why.contains("line 2") && why.contains("`#GP`"), "{why}");
        let short = compare(&bare, &bare[..1]).unwrap_err();
        assert!(short.contains("missing"), "{short}");
        let long = compare(&bare[..1], &bare).unwrap_err();
        assert!(long.contains("more"), "{long}");
        assert!(compare(&[], &[]).is_err(), "no lines is no comparison");
        let failed_reference = [check("conf-ud2", false, "#GP")];
        assert!(compare(&failed_reference, &failed_reference).is_err());
    }

    #[test]
    fn a_listed_difference_must_be_the_listed_one() {
        let bare = [check("conf-cpuid-1-vmx", true, "1")];
        let hidden = [check("conf-cpuid-1-vmx", true, "0")];
        assert_eq!(
            compare(&bare, &hidden).map(|c| c.listed),
            Ok(vec!["conf-cpuid-1-vmx"])
        );
        assert_eq!(
            compare(&bare, &bare).map(|c| c.listed.len()),
            Ok(0),
            "a listed line may match (a fixed defect)"
        );
        let why = compare(&bare, &[check("conf-cpuid-1-vmx", true, "2")]).unwrap_err();
        assert!(why.contains("the table allows"), "{why}");
    }

    fn console(lines: &[(&str, &str)], end: &str) -> RunReport {
        let mut text = String::new();
        for (name, observed) in lines {
            text.push_str(&format!(
                "OKERNEL-CHECK: {{\"check\":\"{name}\",\"invariant\":0,\"ok\":true,\"observed\":\"{observed}\"}}\n"
            ));
        }
        text.push_str(end);
        RunReport::from_console("bochs", "conformance", text, "/tmp".into())
    }

    #[test]
    fn the_judge_needs_two_finished_runs_whose_lines_agree() {
        let lines = [("conf-ud2", "#UD"), ("conf-cpuid-1-vmx", "1")];
        let bare = console(&lines, "OKERNEL-RESULT: pass\n");
        let hidden = [("conf-ud2", "#UD"), ("conf-cpuid-1-vmx", "0")];
        let monitor = console(&hidden, "OKERNEL-RESULT: pass\n");
        assert_eq!(judge(&bare, &monitor), Verdict::Ok);
        // The okernel run may fail its own checks (a listed defect)...
        let failed = console(
            &hidden,
            "OKERNEL-RESULT: fail: guest ended the run (fail)\n",
        );
        assert_eq!(judge(&bare, &failed), Verdict::Ok);
        // ...but not end without a result, or time out.
        let silent = console(&hidden, "");
        assert!(matches!(judge(&bare, &silent), Verdict::Unexpected(_)));
        let mut late = console(&hidden, "OKERNEL-RESULT: pass\n");
        late.timed_out = true;
        assert!(matches!(judge(&bare, &late), Verdict::Unexpected(_)));
        let other = console(
            &[("conf-ud2", "#GP"), ("conf-cpuid-1-vmx", "0")],
            "OKERNEL-RESULT: pass\n",
        );
        match judge(&bare, &other) {
            Verdict::Unexpected(why) => assert!(why.contains("conf-ud2"), "{why}"),
            Verdict::Ok => panic!("a difference passed"),
        }
    }

    /// Boots the kernel twice on Bochs (about a minute): `cargo test -p
    /// xtask conformance_on_bochs -- --ignored`.
    #[test]
    #[ignore = "boots Bochs twice"]
    fn conformance_on_bochs() {
        let images = crate::images::build().unwrap();
        let backends = super::super::backends();
        let rows = run(&images, &backends);
        assert!(rows[0].ok(), "the conformance row failed (see above)");
    }
}
