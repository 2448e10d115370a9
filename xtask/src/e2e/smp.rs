//! The SMP rows: the demo guest's `scenario=smp` (attack
//! `ap-start-outside-vmx`, `guest/src/smp.rs`) on Bochs with 2
//! processors, first with `mode=direct` (no monitor: the negative control,
//! where the other processor must run the guest's start-up code), then
//! under okernel (the loader must report it parked in VMX root and the
//! attack must be blocked), then under okernel on 4 processors (three
//! parked, racing for their slots).

use super::{Row, RowState, print_outcome};
use crate::images::Images;
use qemu_harness::bochs::{Bochs, DEFAULT_MODEL};
use qemu_harness::{Availability, GuestModule, Probed, RunReport, RunSpec, Verdict};
use std::time::Duration;

const ATTACK: &str = "attack-ap-start-outside-vmx";

/// What the loader prints once the other `cpus - 1` processors are in
/// VMX root.
fn parked_line(cpus: u32) -> String {
    format!(
        "{} application processor(s) parked in VMX root (the MADT lists {cpus} processors enabled",
        cpus - 1
    )
}

fn spec(images: &Images, name: &str, direct: bool) -> RunSpec {
    RunSpec {
        name: name.to_string(),
        image: images.okernel.clone(),
        guest: GuestModule::File(images.guest.clone()),
        cmdline: if direct {
            "log=info mode=direct"
        } else {
            "log=info"
        }
        .to_string(),
        guest_cmdline: "scenario=smp".to_string(),
        timeout: Duration::from_secs(120),
        run_dir: crate::images::root().join("target/runs").join(name),
        gdb: false,
    }
}

/// The verdict on one run on `cpus` processors: passed, the attack line
/// present and holding, its result the mode's (`succeeded` bare,
/// `blocked` under okernel), and under okernel the loader's parking line.
pub fn judge(report: &RunReport, direct: bool, cpus: u32) -> Verdict {
    let bad = |why: String| Verdict::Unexpected(format!("{}: {why}", report.summary()));
    let checks = match report.parsed_checks() {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let Some(line) = checks.iter().find(|c| c.check == ATTACK) else {
        return bad(format!("no `{ATTACK}` line"));
    };
    let want = if direct { "succeeded" } else { "blocked" };
    if !line.ok || line.result.as_deref() != Some(want) {
        return bad(format!(
            "`{ATTACK}` must be {want} and hold: {:?}, {}",
            line.result, line.observed
        ));
    }
    let parked = parked_line(cpus);
    if !direct && !report.console.contains(&parked) {
        return bad(format!("the loader did not report `{parked}`"));
    }
    if report.outcome() != Some(okernel_abi::result::Outcome::Pass) {
        return bad("the run did not pass".into());
    }
    Verdict::Ok
}

/// Runs the rows on Bochs.
pub fn run(images: &Images, backends: &[Probed]) -> Vec<Row> {
    let bochs = backends.iter().find(|p| p.backend.name() == "bochs");
    let mut rows = Vec::new();
    for (direct, case, cpus, expected) in [
        (
            true,
            "smp-no-monitor",
            2,
            "2 CPUs, no monitor: the AP runs guest code",
        ),
        (false, "smp", 2, "2 CPUs: AP parked in VMX root, blocked"),
        (false, "smp-4cpu", 4, "4 CPUs: 3 APs parked, blocked"),
    ] {
        let progress = format!("[smp] {:<9} {:<17}", "bochs", case);
        let state = match bochs.map(|p| &p.availability) {
            Some(Availability::Available(_)) => {
                eprint!("{progress} ");
                let result = Bochs::run_with(&spec(images, case, direct), DEFAULT_MODEL, cpus)
                    .map(|r| {
                        let v = judge(&r, direct, cpus);
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
            None => RowState::Unavailable("no bochs backend was probed".into()),
        };
        rows.push(Row {
            case,
            backend: "bochs".into(),
            expected: expected.into(),
            state,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(result: &str, ok: bool, parked: bool) -> RunReport {
        let console = format!(
            "{}OKERNEL-CHECK: {{\"check\":\"{ATTACK}\",\"invariant\":1,\"ok\":{ok},\"observed\":\"x\",\"attack\":\"ap-start-outside-vmx\",\"expected\":\"e\",\"result\":\"{result}\",\"audit\":\"none\"}}\nOKERNEL-RESULT: pass\n",
            if parked {
                format!("[INFO  loader] {}, 0 not enabled)\n", parked_line(2))
            } else {
                String::new()
            }
        );
        RunReport::from_console("bochs", "smp", console, std::path::PathBuf::from("/r"))
    }

    #[test]
    fn each_run_needs_its_own_result_and_okernel_its_parking_line() {
        assert_eq!(
            judge(&report("succeeded", true, false), true, 2),
            Verdict::Ok
        );
        assert_eq!(judge(&report("blocked", true, true), false, 2), Verdict::Ok);
        // The line of another processor count is not this run's.
        assert!(matches!(
            judge(&report("blocked", true, true), false, 4),
            Verdict::Unexpected(_)
        ));
        // Blocked without the loader's line: the processor may simply not
        // exist; succeeded under okernel: the escape; a check that does
        // not hold; the bare run blocked: the attack proves nothing.
        for (r, d) in [
            (report("blocked", true, false), false),
            (report("succeeded", true, true), false),
            (report("blocked", false, true), false),
            (report("blocked", true, false), true),
        ] {
            assert!(matches!(judge(&r, d, 2), Verdict::Unexpected(_)), "{r:?}");
        }
    }
}
