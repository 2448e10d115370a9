//! The attack table of the main job: the guest's attack suite run twice on
//! a backend with VMX — under okernel with the guest's protections
//! registered and locked, and with no monitor and no registration (the
//! negative control) — merged into one row per attack.

use crate::images::{self, Images};
use qemu_harness::{Backend, Check, GuestModule, RunSpec};
use std::time::Duration;

/// One attack as both runs saw it.
struct Row {
    attack: String,
    invariant: u8,
    protected: Option<Check>,
    unprotected: Option<Check>,
}

fn spec(images: &Images, backend: &str, name: &str, cmdline: &str, guest: &str) -> RunSpec {
    RunSpec {
        name: name.to_string(),
        image: images.okernel.clone(),
        guest: GuestModule::File(images.guest.clone()),
        cmdline: cmdline.into(),
        guest_cmdline: guest.into(),
        timeout: Duration::from_secs(300),
        run_dir: images::root()
            .join("target/runs")
            .join(format!("{name}-{backend}")),
        gdb: false,
    }
}

fn attack_checks(backend: &dyn Backend, spec: &RunSpec) -> Result<Vec<Check>, String> {
    eprintln!(
        "xtask: attack suite `{}` on {} ...",
        spec.name,
        backend.name()
    );
    let report = backend.run(spec).map_err(|e| e.to_string())?;
    let checks = report.parsed_checks()?;
    if checks.is_empty() {
        return Err(format!(
            "{}: the attack suite reported nothing ({}); see {}",
            spec.name,
            report.summary(),
            report.run_dir.display()
        ));
    }
    Ok(checks)
}

fn cell(c: &Option<Check>) -> String {
    match c {
        None => "not run".into(),
        Some(c) => {
            let r = c.result.as_deref().unwrap_or("?");
            if c.ok {
                r.to_string()
            } else {
                format!("{r} (WRONG)")
            }
        }
    }
}

/// Runs both suites on `backend`, prints the table; true when every attack
/// was blocked with protection, succeeded without, and every legitimate
/// operation worked in both.
pub fn table(backend: &dyn Backend, images: &Images) -> Result<bool, String> {
    let on = attack_checks(
        backend,
        &spec(
            images,
            backend.name(),
            "attacks-protected",
            "log=info",
            "scenario=attacks",
        ),
    )?;
    let off = attack_checks(
        backend,
        &spec(
            images,
            backend.name(),
            "attacks-no-monitor",
            "log=info mode=direct",
            "scenario=attacks protect=off",
        ),
    )?;
    let mut rows: Vec<Row> = Vec::new();
    for (checks, protected) in [(&on, true), (&off, false)] {
        for c in checks.iter().filter(|c| c.attack.is_some()) {
            let name = c.attack.clone().unwrap_or_default();
            let i = match rows.iter().position(|r| r.attack == name) {
                Some(i) => i,
                None => {
                    rows.push(Row {
                        attack: name,
                        invariant: c.invariant,
                        protected: None,
                        unprotected: None,
                    });
                    rows.len() - 1
                }
            };
            let slot = if protected {
                &mut rows[i].protected
            } else {
                &mut rows[i].unprotected
            };
            *slot = Some(c.clone());
        }
    }
    println!(
        "\nattack table on {} (with protection: okernel + locks; without: no monitor, no locks)",
        backend.name()
    );
    println!(
        "{:<40} {:>3}  {:<20} {:<20} audit record (with protection)",
        "attack", "inv", "with protection", "without"
    );
    for r in &rows {
        let audit = r
            .protected
            .as_ref()
            .and_then(|c| c.audit.clone())
            .unwrap_or_default();
        println!(
            "{:<40} {:>3}  {:<20} {:<20} {}",
            r.attack,
            r.invariant,
            cell(&r.protected),
            cell(&r.unprotected),
            audit
        );
    }
    let others: Vec<&Check> = on
        .iter()
        .chain(off.iter())
        .filter(|c| c.attack.is_none() && !c.ok)
        .collect();
    for c in &others {
        println!("FAILED check `{}`: {}", c.check, c.observed);
    }
    let attacks_ok = rows
        .iter()
        .all(|r| r.protected.as_ref().is_some_and(|c| c.ok));
    let controls_ok = off.iter().all(|c| c.ok);
    let blocked = rows
        .iter()
        .filter(|r| r.protected.as_ref().is_some_and(|c| c.ok))
        .count();
    println!(
        "attacks: {blocked} of {} as expected with protection; negative controls {}; other checks {}",
        rows.len(),
        if controls_ok {
            "all as expected"
        } else {
            "NOT all as expected"
        },
        if others.is_empty() {
            "all held"
        } else {
            "NOT all held"
        }
    );
    Ok(attacks_ok && controls_ok && others.is_empty())
}
