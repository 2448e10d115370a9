//! `cargo xtask doctor`: what this machine has and what will run on it —
//! the toolchain and its pinned target and components, each Debian
//! package, each backend available or not with the evidence, and what
//! this host's KVM offers. It changes nothing: `run` and `test` install
//! what is missing themselves (apt as root, rustup).

use crate::{deps, e2e, images, toolchain};

/// Prints the report; true when everything `cargo xtask test` needs is
/// there or will be installed by it, and the VMX backend can run.
pub fn doctor() -> Result<bool, String> {
    let mut ok = true;
    println!("toolchain");
    match toolchain::state() {
        Ok((version, pinned, missing)) => {
            println!("  {version} (pinned: {})", pinned.channel);
            for t in &pinned.targets {
                println!(
                    "  target {t:<28} {}",
                    have(!missing.contains(&toolchain::Missing::Target(t.clone())))
                );
            }
            for c in &pinned.components {
                println!(
                    "  component {c:<25} {}",
                    have(!missing.contains(&toolchain::Missing::Component(c.clone())))
                );
            }
            if !missing.is_empty() {
                let how = if crate::on_path("rustup") {
                    "the first build adds them with rustup"
                } else {
                    "rustup is not on the PATH: install them by hand"
                };
                println!("  missing: {} ({how})", toolchain::describe(&missing));
            }
        }
        Err(e) => {
            println!("  cannot tell: {e}");
            ok = false;
        }
    }
    println!("\nDebian packages");
    if crate::on_path("dpkg-query") {
        let mut missing = 0;
        for need in deps::ALL {
            for p in need.packages {
                let here = deps::installed(p);
                missing += usize::from(!here);
                println!("  {p:<16} {:<13} {}", have(here), need.why);
            }
        }
        if missing > 0 {
            println!(
                "  {missing} missing: {}",
                if deps::is_root() {
                    "run and test install them with apt (running as root)"
                } else {
                    "run and test print the apt-get command (not root)"
                }
            );
        }
    } else {
        println!("  not a Debian system: packages are not checked");
    }
    println!("\nKVM");
    let host = qemu_harness::KvmHost::get();
    println!("  /dev/kvm: {}", host.describe());
    println!(
        "  nested VMX: {}",
        if host.nested_vmx() {
            "yes: the monitor runs under KVM (kvm, qemu-kvm backends)"
        } else {
            "no: under KVM the image must end with `VMX unavailable`"
        }
    );
    let built = images::root().join("target/okernel");
    let (image, guest) = (built.join("okernel.elf"), built.join("guest.elf"));
    if host.problem.is_none() {
        if image.is_file() && guest.is_file() {
            let dir = images::root().join("target/runs/probe/kvm-ring3");
            match qemu_harness::kvm_runs_ring3(&image, &guest, &dir) {
                Ok(e) => println!("  ring-3 code: runs ({e})"),
                Err(e) => println!(
                    "  ring-3 code: does not run, so ring-3 cases are unavailable on KVM here: {e}"
                ),
            }
        } else {
            println!("  ring-3 code: not probed (build the images first: cargo xtask build)");
        }
    }
    println!("\nbackends (probed)");
    let backends = qemu_harness::probe::backends(&images::root().join("target/runs/probe"));
    for p in &backends {
        println!("  {}", p.describe());
    }
    if let Err(why) = e2e::vmx_backend_ran(&backends) {
        println!("\n{why}: `cargo xtask run` and `test` will fail");
        ok = false;
    }
    Ok(ok)
}

fn have(yes: bool) -> &'static str {
    if yes { "installed" } else { "MISSING" }
}
