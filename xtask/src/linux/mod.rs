//! Debian's Linux kernel as okernel's guest.
//!
//! `cargo xtask linux-image` fetches the current Debian kernel package
//! with apt, extracts the bzImage, unpacks the ELF vmlinux from it (the
//! PVH fast path), builds the client module against Debian's headers of
//! the same kernel and the test initramfs (busybox, `okernel-probe`,
//! `okernel.ko`, `/init`) and caches all of it under `target/linux/<package>/`, with
//! `target/linux/{bzImage,vmlinux,initramfs.cpio.gz,version.txt}` linked
//! to the current one. `cargo xtask linux` boots it.

mod bzimage;
mod client;
mod fetch;
mod initramfs;

use crate::images;
use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Backend, GuestModule, RunReport, RunSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Linux guest's files.
#[derive(Debug, Clone)]
pub struct LinuxImage {
    /// `linux-image-6.1.0-57-amd64 6.1.192-3`.
    pub version: String,
    /// The bzImage (`boot/vmlinuz-*`).
    pub bzimage: PathBuf,
    /// The ELF vmlinux unpacked from it.
    pub vmlinux: PathBuf,
    /// The test initramfs.
    pub initramfs: PathBuf,
}

/// Kernel parameters of every test boot: serial console, and what makes
/// Bochs fast (`quiet`: serial output is costly; no crypto self-tests;
/// no KASLR or mitigations).
pub const LINUX_CMDLINE: &str =
    "console=ttyS0 quiet cryptomgr.notests nokaslr mitigations=off panic=-1";

fn root() -> PathBuf {
    images::root().join("target/linux")
}

/// Fetches (or finds cached) and builds the Linux guest's files.
pub fn image() -> Result<LinuxImage, String> {
    let root = root();
    let debs = root.join("debs");
    let package = match fetch::current_kernel() {
        Ok(p) => p,
        Err(e) => cached_package(&root).ok_or(e)?,
    };
    let dir = root.join(&package);
    let kernel_deb = fetch::download(&package, &debs)?;
    let version = format!("{package} {}", fetch::deb_version(&kernel_deb)?);
    let bzimage = dir.join("bzImage");
    if !bzimage.is_file() {
        let unpack = dir.join("deb");
        fetch::extract(&kernel_deb, "./boot", &unpack)?;
        let abi = package.trim_start_matches("linux-image-");
        let vmlinuz = unpack.join(format!("boot/vmlinuz-{abi}"));
        std::fs::copy(&vmlinuz, &bzimage).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
        let config = unpack.join(format!("boot/config-{abi}"));
        let _ = std::fs::copy(config, dir.join("config"));
    }
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.is_file() {
        eprintln!(
            "xtask: unpacking the ELF vmlinux from {} (XZ)",
            bzimage.display()
        );
        let bz = std::fs::read(&bzimage).map_err(|e| format!("{}: {e}", bzimage.display()))?;
        let elf = bzimage::vmlinux(&bz).map_err(|e| format!("{}: {e}", bzimage.display()))?;
        let entry = bzimage::pvh_entry(&elf)
            .ok_or_else(|| format!("{}: the vmlinux has no PVH entry note", bzimage.display()))?;
        eprintln!(
            "xtask: vmlinux: {} MiB, PVH entry {entry:#x}",
            elf.len() >> 20
        );
        std::fs::write(&vmlinux, elf).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    }
    let modules = client::build(&package, &debs, &dir)?;
    let initramfs = dir.join("initramfs.cpio.gz");
    build_initramfs(&debs, &dir, &modules, &initramfs)?;
    std::fs::write(dir.join("version.txt"), format!("{version}\n"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in ["bzImage", "vmlinux", "initramfs.cpio.gz", "version.txt"] {
        let link = root.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new(&package).join(name), &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    eprintln!("xtask: Linux guest: {version} in {}", dir.display());
    Ok(LinuxImage {
        version,
        bzimage,
        vmlinux,
        initramfs,
    })
}

/// The newest package already unpacked, for offline use.
fn cached_package(root: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("linux-image-") && root.join(n).join("vmlinux").is_file())
        .collect();
    found.sort();
    let p = found.pop()?;
    eprintln!("xtask: apt cannot name the current kernel; using the cached {p}");
    Some(p)
}

/// Builds the probe statically and the initramfs around it.
fn build_initramfs(
    debs: &Path,
    dir: &Path,
    modules: &client::Modules,
    out: &Path,
) -> Result<(), String> {
    let bb_deb = fetch::download("busybox-static", debs)?;
    let bb_dir = dir.join("busybox");
    let busybox = bb_dir.join("bin/busybox");
    if !busybox.is_file() {
        fetch::extract(&bb_deb, "./bin/busybox", &bb_dir)?;
    }
    // Static, so the initramfs needs no C library: crt-static on the
    // final crate only (it has no C dependencies).
    let ok = Command::new(env!("CARGO"))
        .current_dir(images::root())
        .args([
            "rustc",
            "--release",
            "-p",
            "okernel-linux-probe",
            "--bin",
            "okernel-probe",
        ])
        .args([
            "--",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?
        .success();
    if !ok {
        return Err("building okernel-probe failed (see above)".into());
    }
    let probe_path = built_probe();
    let probe = std::fs::read(&probe_path).map_err(|e| format!("{}: {e}", probe_path.display()))?;
    if has_interpreter(&probe) {
        return Err(format!(
            "{} is dynamically linked; the initramfs has no C library",
            probe_path.display()
        ));
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (busybox, client, vuln) = (
        read(&busybox)?,
        read(&modules.client)?,
        read(&modules.vuln)?,
    );
    let archive = initramfs::gzip(&initramfs::cpio(&initramfs::entries(
        busybox, probe, client, vuln,
    )));
    std::fs::write(out, &archive).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "xtask: initramfs {} ({} KiB)",
        out.display(),
        archive.len() >> 10
    );
    Ok(())
}

fn built_probe() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| images::root().join("target"))
        .join("release/okernel-probe")
}

/// Whether an ELF file asks for a program interpreter (is dynamic).
fn has_interpreter(elf: &[u8]) -> bool {
    elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(elf)
        .ok()
        .and_then(|f| {
            f.segments()
                .map(|s| s.iter().any(|p| p.p_type == elf::abi::PT_INTERP))
        })
        .unwrap_or(true)
}

/// How a Linux boot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Under okernel's monitor (Bochs: VMX).
    Monitor,
    /// okernel's loader with `mode=direct`: no monitor (the negative
    /// control).
    Direct,
    /// No okernel at all: QEMU boots Linux itself (the baseline).
    Bare,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Direct => "direct",
            Mode::Bare => "bare",
        }
    }
}

/// The physical range okernel's image occupies (its `PT_LOAD`s), which
/// the probe must find neither in RAM nor readable under the monitor.
pub fn okernel_image_range(image: &Path) -> Result<(u64, u64), String> {
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let f = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(&bytes)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let loads: Vec<(u64, u64)> = f
        .segments()
        .ok_or_else(|| format!("{}: no program headers", image.display()))?
        .iter()
        .filter(|p| p.p_type == elf::abi::PT_LOAD && p.p_memsz > 0)
        .map(|p| (p.p_paddr, p.p_paddr + p.p_memsz))
        .collect();
    let start = loads
        .iter()
        .map(|l| l.0)
        .min()
        .ok_or("okernel image has no PT_LOAD")?;
    let end = loads
        .iter()
        .map(|l| l.1)
        .max()
        .ok_or("okernel image has no PT_LOAD")?;
    Ok((start, end))
}

/// The run spec of one Linux boot (`bzimage`: the boot-protocol path
/// instead of the PVH vmlinux; `extra`: more kernel parameters).
pub fn spec(
    images: &images::Images,
    linux: &LinuxImage,
    mode: Mode,
    bzimage: bool,
    extra: &str,
    name: &str,
) -> Result<RunSpec, String> {
    let kernel = if bzimage {
        &linux.bzimage
    } else {
        &linux.vmlinux
    };
    let mut cmdline = format!("{LINUX_CMDLINE} okernel.expect={}", mode.word());
    if !extra.is_empty() {
        cmdline = format!("{cmdline} {extra}");
    }
    if mode != Mode::Bare {
        let (start, end) = okernel_image_range(&images.okernel)?;
        cmdline.push_str(&format!(" okernel.test_image={start:#x}-{end:#x}"));
    }
    let run_dir = images::root().join("target/runs").join(name);
    let (image, guest, okernel_cmdline, guest_cmdline) = match mode {
        Mode::Bare => (
            kernel.clone(),
            GuestModule::File(linux.initramfs.clone()),
            cmdline,
            String::new(),
        ),
        Mode::Monitor | Mode::Direct => (
            images.okernel.clone(),
            GuestModule::Linux {
                kernel: kernel.clone(),
                initrd: linux.initramfs.clone(),
            },
            if mode == Mode::Direct {
                "log=info mode=direct"
            } else {
                "log=info"
            }
            .to_string(),
            cmdline,
        ),
    };
    Ok(RunSpec {
        name: name.to_string(),
        image,
        guest,
        cmdline: okernel_cmdline,
        guest_cmdline,
        // Bochs: ~45 s by PVH, ~100 s through the bzImage's own XZ
        // decompressor on an idle machine; 3-5x that on a loaded one.
        timeout: Duration::from_secs(if mode == Mode::Bare { 120 } else { 600 }),
        run_dir,
        gdb: false,
    })
}

/// Boots `spec` on `backend`, recording the kernel version in the run
/// directory.
pub fn boot(
    backend: &dyn Backend,
    spec: &RunSpec,
    linux: &LinuxImage,
) -> Result<RunReport, String> {
    spec.make_run_dir().map_err(|e| e.to_string())?;
    let record = spec.run_dir.join("linux-version.txt");
    std::fs::write(&record, format!("{}\n", linux.version))
        .map_err(|e| format!("{}: {e}", record.display()))?;
    backend.run(spec).map_err(|e| e.to_string())
}

const USAGE: &str =
    "usage: cargo xtask linux [--direct | --bare] [--bzimage] [--client] [--cpu MODEL] [--cpus N]
  (default) Debian's kernel under okernel in Bochs, by its PVH entry
  --direct  okernel's loader with mode=direct (no monitor), in Bochs
  --bare    no okernel: QEMU/TCG boots the kernel itself (the baseline)
  --bzimage the bzImage by the Linux boot protocol instead of the vmlinux
  --client  under okernel, /init also loads the client (okernel.client=1)
  --cpu M   Bochs' CPU model M instead of corei7_skylake_x (corei7_icelake_u
            has the monitor trap flag: docs/linux.md)
  --cpus N  N processors in Bochs (1-8; under okernel all but one are parked)";

/// The time a boot on `cpus` processors may take: with several, Bochs no
/// longer skips idle time, and the client's suite on 2 processors took
/// 7.5 minutes on the idle 2-core machine (session 16, `docs/RESULTS.md`).
pub fn smp_timeout(one: Duration, cpus: u32) -> Duration {
    if cpus > 1 {
        one.max(Duration::from_secs(1200))
    } else {
        one
    }
}

/// `cargo xtask linux ARGS`.
pub fn linux(args: &[String]) -> Result<bool, String> {
    let mut mode = Mode::Monitor;
    let mut bz = false;
    let mut extra = "";
    let mut model = qemu_harness::bochs::DEFAULT_MODEL;
    let mut cpus = 1u32;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--direct" => mode = Mode::Direct,
            "--bare" => mode = Mode::Bare,
            "--bzimage" => bz = true,
            "--client" => extra = "okernel.client=1",
            "--cpu" => {
                let m = args
                    .next()
                    .ok_or(format!("--cpu needs a model\n\n{USAGE}"))?;
                // It goes into the bochsrc and the run directory's name.
                if m.is_empty()
                    || !m
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(format!(
                        "--cpu {m:?}: a Bochs model name is [a-z0-9_]+ (`bochs -help cpu` lists them)"
                    ));
                }
                // One model for the whole run of the command.
                model = Box::leak(m.clone().into_boxed_str());
            }
            "--cpus" => {
                cpus = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=8).contains(n))
                    .ok_or(format!("--cpus needs a count from 1 to 8\n\n{USAGE}"))?;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(true);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    let images = images::build()?;
    let linux = image()?;
    let backend: Box<dyn Backend> = match mode {
        Mode::Bare => {
            crate::deps::ensure(&[&crate::deps::QEMU])?;
            let dir = images::root().join("target/runs/probe/qemu-tcg");
            Box::new(Qemu::new(Accel::Tcg).probe(&dir).0)
        }
        _ => {
            crate::deps::ensure(&[&crate::deps::BOCHS])?;
            Box::new(qemu_harness::bochs::BochsModel { model, cpus })
        }
    };
    let name = format!(
        "linux-{}{}-{}{}{}",
        mode.word(),
        if bz { "-bzimage" } else { "" },
        backend.name(),
        if model == qemu_harness::bochs::DEFAULT_MODEL {
            String::new()
        } else {
            format!("-{model}")
        },
        if cpus > 1 {
            format!("-{cpus}cpu")
        } else {
            String::new()
        }
    );
    // Bochs' TSC counts emulated instructions (`ips`); a model whose CPUID
    // reports a TSC frequency (icelake, tigerlake) makes Linux trust that
    // instead and run every timer ~100x slow, and with several processors
    // Bochs no longer skips idle time: tell it the real rate.
    let mut extra = extra.to_string();
    if model != qemu_harness::bochs::DEFAULT_MODEL || cpus > 1 {
        extra = format!("{extra} tsc_early_khz={}", qemu_harness::bochs::IPS / 1000);
    }
    // The probe checks every processor (`linux/probe/src/smp.rs`).
    if cpus > 1 {
        extra = format!("{extra} okernel.cpus={cpus}");
    }
    let mut spec = spec(&images, &linux, mode, bz, extra.trim(), &name)?;
    spec.timeout = smp_timeout(spec.timeout, cpus);
    eprintln!(
        "xtask: booting {} ({}) on {}, timeout {}s, artifacts in {}",
        linux.version,
        mode.word(),
        backend.name(),
        spec.timeout.as_secs(),
        spec.run_dir.display()
    );
    let report = boot(backend.as_ref(), &spec, &linux)?;
    crate::show_console(backend.name(), &report);
    crate::print_checks(backend.name(), &report);
    Ok(report.outcome() == Some(okernel_abi::result::Outcome::Pass)
        && report
            .parsed_checks()
            .is_ok_and(|c| !c.is_empty() && c.iter().all(|c| c.ok)))
}

/// `cargo xtask linux-image`.
pub fn linux_image() -> Result<bool, String> {
    let l = image()?;
    println!("{}", l.version);
    for p in [&l.bzimage, &l.vmlinux, &l.initramfs] {
        println!("{}", p.display());
    }
    Ok(true)
}
