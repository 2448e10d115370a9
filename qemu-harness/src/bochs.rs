//! Bochs: the image boots from a GRUB ISO (multiboot2, the guest as
//! `module2`) on an emulated Skylake-X with VMX and EPT.
//!
//! Bochs facts this relies on (see `docs/developer-guide.md`): the Debian
//! build has its debugger compiled in, so it is started with `-rc` and a
//! file holding `c`; `display_library: term` (package `bochs-term`) with
//! stdin from /dev/null runs headless; COM1 goes to a file (the console we
//! read); `clock: sync=none` with a fixed `ips` makes emulated time, and
//! the TSC, deterministic; the image's write of `Shutdown` to port 0x8900
//! ends the run, but Bochs then exits with status 1, so runs are judged
//! by the result marker; Bochs ignores SIGTERM, so the watchdog kills.

use crate::process::{error_lines, read_console, run_watched};
use crate::{Availability, Backend, GuestModule, HarnessError, RunReport, RunSpec, VmxSupport};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Emulated instructions per second of a normal run: fixes the TSC rate
/// too.
pub const IPS: u64 = 20_000_000;

/// The CPU model of every run unless a case names another
/// ([`BochsModel`]).
pub const DEFAULT_MODEL: &str = "corei7_skylake_x";

/// The Bochs backend.
#[derive(Debug, Clone, Default)]
pub struct Bochs;

/// The Bochs backend on another machine than [`Bochs`]'s: another CPU
/// model than [`DEFAULT_MODEL`] (e.g. `corei7_icelake_u`, which has the
/// monitor trap flag: `docs/linux.md`, "Bochs 2.7 CPU models") or more
/// than one processor (`cpu: count=`).
#[derive(Debug, Clone)]
pub struct BochsModel {
    /// The CPU model.
    pub model: &'static str,
    /// Processors.
    pub cpus: u32,
}

/// What varies between the bochsrc files the harness writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BochsConfig {
    /// Emulated instructions per second (`cpu: ips=`): with `clock:
    /// sync=none` this fixes how many instructions one emulated second,
    /// and so one serial character time, takes.
    pub ips: u64,
    /// COM2 as a TCP client of this `host:port` (`mode=socket-client`);
    /// none: no COM2. Bochs connects once, at start, and treats the port
    /// as unconnected when nobody listens.
    pub com2_socket: Option<String>,
    /// Guest RAM in MiB (`megs:`).
    pub megs: u32,
    /// The CPU model (`cpu: model=`).
    pub model: &'static str,
    /// Processors (`cpu: count=`): more than one for the SMP cases.
    pub cpus: u32,
    /// `cpu: ignore_bad_msrs=`: Bochs' default (true) makes RDMSR/WRMSR
    /// of an MSR it does not implement a no-op with a log line; false
    /// raises #GP(0), as hardware does (the conformance case's reference).
    pub ignore_bad_msrs: bool,
    /// A 1.44 MB floppy image in drive A (`floppya:`), for the DMA
    /// attack row; none: no floppy.
    pub floppy: Option<std::path::PathBuf>,
    /// Bochs' PCI VGA adapter in slot 1 (`pci: slot1=pcivga`: a memory
    /// BAR, its linear frame buffer), for the BAR attack row; false: the
    /// ISA VGA, and no PCI device with a memory BAR.
    pub pci_vga: bool,
}

impl Default for BochsConfig {
    fn default() -> Self {
        Self {
            ips: IPS,
            com2_socket: None,
            megs: crate::spec::RAM_MIB,
            model: DEFAULT_MODEL,
            cpus: 1,
            ignore_bad_msrs: true,
            floppy: None,
            pci_vga: false,
        }
    }
}

impl Bochs {
    /// The bochsrc for a run whose files are in `dir`.
    pub fn config(dir: &Path, options: &BochsConfig) -> String {
        let com2 = match &options.com2_socket {
            Some(addr) => format!("com2: enabled=1, mode=socket-client, dev={addr}\n"),
            None => String::new(),
        };
        let floppy = match &options.floppy {
            Some(path) => format!("floppya: 1_44={}, status=inserted\n", path.display()),
            None => String::new(),
        };
        let pci = if options.pci_vga {
            "pci: enabled=1, chipset=i440fx, slot1=pcivga\nvga: extension=vbe\n"
        } else {
            ""
        };
        format!(
            "megs: {megs}\n\
             cpu: model={model}, count={cpus}, ips={ips}, ignore_bad_msrs={ignore}\n\
             clock: sync=none, time0=946684800\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
             vgaromimage: file=/usr/share/vgabios/vgabios.bin\n\
             ata0-master: type=cdrom, path={iso}, status=inserted\n\
             boot: cdrom\n\
             display_library: term\n\
             port_e9_hack: enabled=1\n\
             com1: enabled=1, mode=file, dev={console}\n\
             {com2}\
             {floppy}\
             {pci}\
             speaker: enabled=0\n\
             sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
             log: {log}\n\
             error: action=report\n\
             panic: action=fatal\n",
            megs = options.megs,
            model = options.model,
            cpus = options.cpus,
            ignore = u8::from(options.ignore_bad_msrs),
            ips = options.ips,
            iso = dir.join("okernel.iso").display(),
            console = dir.join("console.log").display(),
            log = dir.join("bochs.log").display(),
        )
    }

    /// Writes `bochsrc` (for `options`) and `debugger.rc` in `dir` and
    /// returns the command that starts Bochs on them (`-q`, the debugger
    /// told to continue, `TERM=dumb`; the caller gives it stdin from
    /// /dev/null).
    pub fn command(dir: &Path, options: &BochsConfig) -> Result<Command, HarnessError> {
        let rc = dir.join("bochsrc");
        std::fs::write(&rc, Self::config(dir, options)).map_err(HarnessError::io(&rc))?;
        let cont = dir.join("debugger.rc");
        std::fs::write(&cont, "c\n").map_err(HarnessError::io(&cont))?;
        let mut cmd = Command::new("bochs");
        cmd.arg("-q")
            .arg("-f")
            .arg(&rc)
            .arg("-rc")
            .arg(&cont)
            .env("TERM", "dumb");
        Ok(cmd)
    }

    /// The GRUB configuration for `spec`.
    pub fn grub_cfg(spec: &RunSpec) -> Result<String, HarnessError> {
        for (what, s) in [
            ("command line", &spec.cmdline),
            ("guest command line", &spec.guest_cmdline),
        ] {
            if s.contains(['\n', '"', '\'', '\\', '$', ';']) {
                return Err(HarnessError::Tool {
                    command: "grub.cfg".into(),
                    detail: format!("the {what} `{s}` has characters GRUB would interpret"),
                });
            }
        }
        let module = match spec.guest {
            GuestModule::None => String::new(),
            GuestModule::File(_) => format!("    module2 /boot/guest.elf {}\n", spec.guest_cmdline),
            GuestModule::Linux { .. } => format!(
                "    module2 /boot/linux {}\n    module2 /boot/initrd.img initrd\n",
                spec.guest_cmdline
            ),
        };
        Ok(format!(
            "set timeout=0\nset default=0\nmenuentry \"okernel\" {{\n    multiboot2 /boot/okernel.elf {}\n{module}    boot\n}}\n",
            spec.cmdline
        ))
    }

    /// Builds `okernel.iso` for `spec` in its run directory.
    pub fn make_iso(spec: &RunSpec) -> Result<(), HarnessError> {
        let root = spec.run_dir.join("iso");
        let grub = root.join("boot/grub");
        std::fs::create_dir_all(&grub).map_err(HarnessError::io(&grub))?;
        let copy = |from: &Path, to: &str| {
            let dest = root.join(to);
            std::fs::copy(from, &dest)
                .map(drop)
                .map_err(HarnessError::io(dest))
        };
        copy(&spec.image, "boot/okernel.elf")?;
        match &spec.guest {
            GuestModule::None => {}
            GuestModule::File(g) => copy(g, "boot/guest.elf")?,
            GuestModule::Linux { kernel, initrd } => {
                copy(kernel, "boot/linux")?;
                copy(initrd, "boot/initrd.img")?;
            }
        }
        let cfg = grub.join("grub.cfg");
        std::fs::write(&cfg, Self::grub_cfg(spec)?).map_err(HarnessError::io(cfg))?;
        let iso = spec.run_dir.join("okernel.iso");
        let mut cmd = Command::new("grub-mkrescue");
        cmd.arg("-o").arg(&iso).arg(&root);
        let out = cmd.output().map_err(|source| HarnessError::Spawn {
            program: "grub-mkrescue".into(),
            source,
        })?;
        if !out.status.success() || !iso.is_file() {
            return Err(HarnessError::Tool {
                command: format!("{cmd:?}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

/// The last `n` panic- or error-level lines of a Bochs log (`…p[DEV ] …`,
/// `…e[DEV ] …`): where a run that ended without a result says why.
fn last_errors(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let level = l.trim_start_matches(|c: char| c.is_ascii_digit());
            level.starts_with("p[") || level.starts_with("e[")
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What a probe's BIOS prints when it ran and found nothing to boot.
const PROBE_SIGN: &str = "No bootable device";

impl Bochs {
    /// The bochsrc of a probe: the run's CPU model and firmware, no disk.
    fn probe_config(dir: &Path) -> String {
        let run = Self::config(dir, &BochsConfig::default());
        run.lines()
            .filter(|l| !l.starts_with("ata0-master") && !l.starts_with("com1"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Whether Bochs runs on this host: it boots its BIOS on the run's CPU
    /// model with no disk, in `dir`, and must get as far as the BIOS's
    /// "No bootable device" (a missing plugin, firmware file or CPU model
    /// ends it earlier, in its own words).
    pub fn probe(dir: &Path) -> Availability {
        let result = (|| {
            std::fs::create_dir_all(dir).map_err(HarnessError::io(dir))?;
            let cmd = Self::command(dir, &BochsConfig::default())?;
            let rc = dir.join("bochsrc");
            std::fs::write(&rc, Self::probe_config(dir)).map_err(HarnessError::io(&rc))?;
            run_watched(cmd, &dir.join("bochs.stdout"), Duration::from_secs(20))
        })();
        let out = read_console(&dir.join("bochs.stdout"));
        let log = read_console(&dir.join("bochs.log"));
        match result {
            Err(e) => Availability::Unavailable(e.to_string()),
            Ok(_) if out.contains(PROBE_SIGN) || log.contains(PROBE_SIGN) => {
                Availability::Available("its BIOS ran on corei7_skylake_x".into())
            }
            Ok(f) if f.timed_out => Availability::Unavailable(format!(
                "its BIOS did not finish within 20 s ({})",
                dir.display()
            )),
            Ok(_) => Availability::Unavailable(error_lines(&format!("{out}\n{log}"), 3)),
        }
    }
}

impl Backend for Bochs {
    fn name(&self) -> &str {
        "bochs"
    }

    fn vmx(&self) -> VmxSupport {
        VmxSupport::Available
    }

    fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError> {
        Self::run_on(spec, DEFAULT_MODEL)
    }
}

impl Backend for BochsModel {
    fn name(&self) -> &str {
        "bochs"
    }

    fn vmx(&self) -> VmxSupport {
        VmxSupport::Available
    }

    fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError> {
        Bochs::run_with(spec, self.model, self.cpus)
    }
}

impl Bochs {
    /// Boots `spec` on CPU model `model`.
    pub fn run_on(spec: &RunSpec, model: &'static str) -> Result<RunReport, HarnessError> {
        Self::run_with(spec, model, 1)
    }

    /// Boots `spec` on `cpus` processors of CPU model `model`.
    pub fn run_with(
        spec: &RunSpec,
        model: &'static str,
        cpus: u32,
    ) -> Result<RunReport, HarnessError> {
        let config = BochsConfig {
            model,
            cpus,
            ..BochsConfig::default()
        };
        Self::run_config(spec, config)
    }

    /// Boots `spec` on the machine `config` describes (its RAM is the
    /// guest's: [`GuestModule::ram_mib`]).
    pub fn run_config(spec: &RunSpec, config: BochsConfig) -> Result<RunReport, HarnessError> {
        spec.check_files()?;
        spec.make_run_dir()?;
        Self::make_iso(spec)?;
        let dir = &spec.run_dir;
        let console = dir.join("console.log");
        // A stale console from an earlier run must not be read as this one's.
        let _ = std::fs::remove_file(&console);
        let config = BochsConfig {
            megs: spec.guest.ram_mib(),
            ..config
        };
        let cmd = Self::command(dir, &config)?;
        let finished = run_watched(cmd, &dir.join("bochs.stdout"), spec.timeout)?;
        let mut report =
            RunReport::from_console("bochs", &spec.name, read_console(&console), dir.clone());
        report.exit_status = finished.status;
        report.timed_out = finished.timed_out && report.marker.is_none();
        report.duration = finished.duration;
        if report.marker.is_none() && !finished.timed_out {
            // Bochs ended without a result: its own panic or error lines
            // say why (a bad bochsrc, a missing file, a CPU panic, a
            // reset). Its log only: its stdout carries the guest's port
            // 0xE9 output, whose words are not Bochs'.
            let said = read_console(&dir.join("bochs.log"));
            let words = last_errors(&said, 3);
            report.emulator_error = (!words.is_empty()).then_some(words);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(guest: GuestModule, guest_cmdline: &str) -> RunSpec {
        RunSpec {
            name: "t".into(),
            image: PathBuf::from("/img"),
            guest,
            cmdline: "log=info".into(),
            guest_cmdline: guest_cmdline.into(),
            timeout: Duration::from_secs(1),
            run_dir: PathBuf::from("/run"),
            gdb: false,
        }
    }

    #[test]
    fn grub_cfg_has_the_module_only_when_asked() {
        let with = Bochs::grub_cfg(&spec(GuestModule::File("/g".into()), "scenario=boot")).unwrap();
        assert!(with.contains("multiboot2 /boot/okernel.elf log=info\n"));
        assert!(with.contains("module2 /boot/guest.elf scenario=boot\n"));
        let without = Bochs::grub_cfg(&spec(GuestModule::None, "")).unwrap();
        assert!(!without.contains("module2"));
    }

    #[test]
    fn a_linux_run_has_the_kernel_and_initramfs_as_modules_and_more_ram() {
        let linux = GuestModule::Linux {
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        assert_eq!(linux.ram_mib(), crate::spec::LINUX_RAM_MIB);
        let cfg = Bochs::grub_cfg(&spec(linux, "console=ttyS0 quiet")).unwrap();
        assert!(
            cfg.contains(
                "    module2 /boot/linux console=ttyS0 quiet\n    module2 /boot/initrd.img initrd\n"
            ),
            "{cfg}"
        );
        let rc = Bochs::config(
            Path::new("/run/x"),
            &BochsConfig {
                megs: 512,
                ..BochsConfig::default()
            },
        );
        assert!(rc.starts_with("megs: 512\n"), "{rc}");
    }

    #[test]
    fn a_run_without_result_names_bochs_last_errors() {
        let log = "00000000000i[CPU0  ] cpu hardware reset\n\
                   01862153510e[CPU0  ] RDMSR: Unknown register 0x179\n\
                   01863705933i[CPU0  ] something\n\
                   01863705933e[CPU0  ] exception(): 3rd (13) exception with no resolution\n\
                   01863705934i[SIM   ] quit_sim called with exit code 1\n";
        assert_eq!(
            last_errors(log, 1),
            "01863705933e[CPU0  ] exception(): 3rd (13) exception with no resolution"
        );
        assert_eq!(last_errors(log, 5).matches(" | ").count(), 1);
        assert_eq!(last_errors("no levels here\n", 3), "");
    }

    #[test]
    fn grub_cfg_refuses_characters_grub_would_interpret() {
        let e = Bochs::grub_cfg(&spec(GuestModule::None, "a\"b")).unwrap_err();
        assert!(
            e.to_string().contains("characters GRUB would interpret"),
            "{e}"
        );
    }

    #[test]
    fn config_points_at_the_run_directory() {
        let c = Bochs::config(Path::new("/run/x"), &BochsConfig::default());
        assert!(c.contains("path=/run/x/okernel.iso"));
        assert!(c.contains("dev=/run/x/console.log"));
        assert!(c.contains("model=corei7_skylake_x"));
        assert!(c.contains(&format!("count=1, ips={IPS}, ignore_bad_msrs=1\n")));
        assert!(!c.contains("com2"), "no COM2 unless asked");
    }

    #[test]
    fn config_has_the_processors_and_the_msr_strictness_asked_for() {
        let options = BochsConfig {
            cpus: 4,
            ignore_bad_msrs: false,
            ..BochsConfig::default()
        };
        let c = Bochs::config(Path::new("/run/x"), &options);
        assert!(
            c.contains(&format!("count=4, ips={IPS}, ignore_bad_msrs=0\n")),
            "{c}"
        );
    }

    #[test]
    fn config_has_the_com2_socket_and_ips_when_asked() {
        let options = BochsConfig {
            ips: 4_000_000,
            com2_socket: Some("127.0.0.1:4567".into()),
            ..BochsConfig::default()
        };
        let c = Bochs::config(Path::new("/run/x"), &options);
        assert!(
            c.contains("com2: enabled=1, mode=socket-client, dev=127.0.0.1:4567\n"),
            "{c}"
        );
        assert!(c.contains("ips=4000000,"), "{c}");
        assert!(
            c.contains("com1: enabled=1, mode=file"),
            "COM1 stays the console"
        );
    }
}
