//! `okernel-probe`: the Linux guest's checks from user space, run by the
//! test initramfs's `/init` (see `xtask/src/linux/initramfs.rs`). It
//! prints one `OKERNEL-CHECK` line per check and the run's
//! `OKERNEL-RESULT`, as the demo guest does, then `/init` powers off.
//!
//! `okernel-probe --contained CMD` enters the attacker's container
//! (`container.rs`), gives the test image's vulnerability
//! (`/proc/okernel-vuln`) one command and prints its answer, exiting 0 if
//! it got one: the main run starts it, through busybox `unshare`, for
//! every kernel read, write or gadget, so a kernel that kills the attacker (the monitor's
//! injected fault makes the kernel oops in the vulnerable write) ends
//! only that child.

#![deny(unsafe_code)]

mod attacks;
mod container;
mod legit;
mod smp;
mod workload;

use okernel_abi::cpuid::{LEAF_SIGNATURE, is_signature};
use okernel_abi::result::{BENCH_PREFIX, CHECK_PREFIX, MARKER};
use okernel_linux_probe::{
    Expect, Range, check_json, cpuinfo_has_vmx, expect, iomem_pages, jump_table, param,
    static_call_sites, static_call_tramps, system_ram, test_image, workload_seconds,
};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, cmd] = args.as_slice()
        && flag == "--contained"
    {
        if let Err(e) = container::enter() {
            eprintln!("entering the container: {e}");
            return ExitCode::from(3);
        }
        if cmd == "--status" {
            println!("{}", container::status());
            return ExitCode::SUCCESS;
        }
        if let Some(path) = cmd.strip_prefix("--read=") {
            println!("{}", read_result(path));
            return ExitCode::SUCCESS;
        }
        if let Some(seconds) = cmd.strip_prefix("--workload=") {
            return workload::contained(seconds);
        }
        if let Some(seconds) = cmd.strip_prefix("--steady=") {
            return workload::steady(seconds);
        }
        return vuln_child(cmd);
    }
    // First thing: how far the machine got by the time user space runs
    // (`cargo xtask bench linux` compares it with and without okernel).
    let tsc = tsc();
    let mut checks = Checks::default();
    checks.lines.push(format!(
        "{BENCH_PREFIX}{{\"bench\":\"linux-boot\",\"what\":\"TSC when /init runs the probe\",\"iterations\":1,\"ticks_per_op\":{tsc},\"baseline_ticks_per_op\":0}}"
    ));
    run(&mut checks);
    let failed = checks.failed;
    checks.lines.push(if failed == 0 {
        format!("{MARKER}pass")
    } else {
        format!("{MARKER}fail: {failed} Linux checks failed")
    });
    // The rows go out together, after everything that can make the
    // kernel print: an oops (the monitor's fault in a killed reader) puts
    // the console at full verbosity, so it is quieted again first.
    let _ = std::fs::write("/proc/sys/kernel/printk", "1");
    let mut out = checks.lines.join("\n");
    out.push('\n');
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    drain_console();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Waits until the console's UART has sent everything written to it, so
/// `/init`'s power-off cannot cut the last rows (on 2-CPU Bochs the
/// UART drains slower than Linux's clock runs: `sleep 1` was not enough).
#[allow(unsafe_code)]
fn drain_console() {
    // SAFETY: tcdrain(2) on file descriptor 1 only waits for its output
    // to be transmitted; it reads and writes no memory of this process
    // (an error, e.g. stdout not a terminal, is harmless and ignored).
    let _ = unsafe { libc::tcdrain(1) };
}

/// The rows of the run, printed at the end.
#[derive(Default)]
pub(crate) struct Checks {
    failed: usize,
    lines: Vec<String>,
}

impl Checks {
    pub(crate) fn report(&mut self, check: &str, invariant: u8, ok: bool, observed: &str) {
        self.failed += usize::from(!ok);
        self.lines.push(format!(
            "{CHECK_PREFIX}{}",
            check_json(check, invariant, ok, observed)
        ));
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run(c: &mut Checks) {
    let version = read("/proc/version");
    let release = version.split_whitespace().nth(2).unwrap_or("?").to_string();
    let parent = std::os::unix::process::parent_id();
    c.report(
        "linux-user-space",
        0,
        !version.is_empty() && parent == 1,
        &format!("started by PID {parent} (/init is 1) on Linux {release}"),
    );
    let cmdline = read("/proc/cmdline");
    let mode = match expect(&cmdline) {
        Ok(m) => m,
        Err(e) => return c.report("linux-expectation", 0, false, &e),
    };
    let cpuinfo = read("/proc/cpuinfo");
    // CPUID is safe (core::arch) on x86-64; the hypervisor leaf reads
    // zeros or the highest basic leaf where no hypervisor answers it.
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let sig = core::arch::x86_64::__cpuid(LEAF_SIGNATURE);
    let vmx_bit = leaf1.ecx & (1 << 5) != 0;
    let vmx_flag = cpuinfo_has_vmx(&cpuinfo);
    let signature = is_signature(sig.ebx, sig.ecx, sig.edx);
    let vmx_seen = format!(
        "CPUID.1:ECX.VMX={}, /proc/cpuinfo vmx flag {}",
        u8::from(vmx_bit),
        if vmx_flag { "present" } else { "absent" }
    );
    match mode {
        Expect::Monitor => {
            c.report(
                "linux-cpuid-vmx-hidden",
                12,
                !vmx_bit && !vmx_flag,
                &vmx_seen,
            );
            c.report(
                "linux-cpuid-okernel-signature",
                0,
                signature,
                &format!(
                    "leaf {LEAF_SIGNATURE:#x}: {}",
                    sig_text(sig.ebx, sig.ecx, sig.edx)
                ),
            );
        }
        Expect::Direct | Expect::Bare => {
            // Without the monitor nothing is hidden: the CPU's own VMX
            // bit shows (Bochs has VMX, QEMU/TCG not), and there is no
            // okernel signature.
            c.report(
                "baseline-cpuid-vmx-as-the-cpu-has-it",
                0,
                vmx_bit == vmx_flag,
                &vmx_seen,
            );
            c.report(
                "baseline-no-okernel-signature",
                0,
                !signature,
                &format!(
                    "leaf {LEAF_SIGNATURE:#x}: {}",
                    sig_text(sig.ebx, sig.ecx, sig.edx)
                ),
            );
        }
    }
    // Several processors: each one online and under the monitor; the
    // client then locks on the first, and everything after it (the
    // module load, the container and its attacks) runs on the last.
    let cpus = smp::expected(&cmdline);
    if let Some(n) = cpus {
        smp::every_cpu(c, mode, n);
    }
    let protected = client(c, mode, &cmdline);
    if let Some(n) = cpus.filter(|&n| n > 1 && protected) {
        let moved = smp::pin(n - 1);
        c.report(
            "linux-smp-attacks-on-another-cpu",
            0,
            moved.is_ok(),
            &match moved {
                Ok(()) => format!(
                    "the client locked on CPU 0; from here on the probe and the container run on CPU {} only",
                    n - 1
                ),
                Err(e) => e,
            },
        );
    }
    if protected {
        client_files(c);
    }
    // The vulnerability is loaded after the client's lock: a module load
    // after the lock is itself legitimate work that must go on.
    let insmod = Command::new("insmod").arg("/lib/okernel_vuln.ko").output();
    let loaded = insmod.as_ref().is_ok_and(|o| o.status.success());
    c.report(
        "linux-legit-module-load",
        2,
        loaded,
        &match &insmod {
            Ok(o) => format!(
                "insmod /lib/okernel_vuln.ko (after the client): {} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("insmod: {e}"),
        },
    );
    legit::run(c);
    static_key_flip(c);
    static_call_update(c);
    if let Some(seconds) = workload_seconds(&cmdline) {
        workload::run(c, seconds);
    }
    // Each attack the monitor stops oopses the attacker's kernel path, and
    // an oops raises the console's log level to the maximum unless it is 0
    // (`console_verbose`): with several processors Bochs no longer skips
    // idle time while the UART drains, and the dozen oopses cost minutes
    // of wall time. The rows say what happened; the kernel's log (dmesg)
    // keeps the oopses.
    let _ = std::fs::write("/proc/sys/kernel/printk", "0");
    // Under the monitor without the client nothing is locked: no attack
    // row would mean anything.
    if mode != Expect::Monitor || protected {
        attacks::run(
            c,
            mode,
            protected,
            &read("/proc/kallsyms"),
            &read("/proc/iomem"),
        );
    }
    if mode == Expect::Bare {
        return;
    }
    let Some(image) = test_image(&cmdline) else {
        return c.report(
            "linux-monitor-range",
            0,
            false,
            "no okernel.test_image= on the command line",
        );
    };
    let ram = system_ram(&read("/proc/iomem"));
    let in_ram: Vec<&Range> = ram.iter().filter(|r| r.overlaps(&image)).collect();
    let where_ = format!("okernel image [{:#x}, {:#x})", image.start, image.end);
    let readable = kernel_can_read(image.start);
    match mode {
        Expect::Monitor => {
            c.report(
                "linux-monitor-not-system-ram",
                1,
                in_ram.is_empty() && !ram.is_empty(),
                &if ram.is_empty() {
                    "/proc/iomem lists no System RAM".to_string()
                } else if in_ram.is_empty() {
                    format!("{where_} is in no System RAM range of /proc/iomem")
                } else {
                    format!("{where_} overlaps System RAM {:#x?}", in_ram)
                },
            );
            c.report(
                "linux-monitor-unreadable-by-the-kernel",
                1,
                matches!(readable, VulnAnswer::Killed(_)),
                &format!("{where_}: {}", readable.describe()),
            );
        }
        Expect::Direct => c.report(
            "negative-control-monitor-readable-without-okernel",
            1,
            matches!(readable, VulnAnswer::Answer(_)),
            &format!("{where_}: {}", readable.describe()),
        ),
        Expect::Bare => {}
    }
}

/// Loads the client module (`/lib/okernel.ko`) with the kernel's text
/// and rodata ranges from `/proc/iomem`. Without okernel it must refuse
/// to load, saying why; under the monitor it is loaded only with
/// `okernel.client=1` (it locks the kernel's text, which the kernel's own
/// run-time patching then needs the monitor's validated self-patching
/// for).
///
/// Returns whether the client locked the kernel (loaded under the
/// monitor).
fn client(c: &mut Checks, mode: Expect, cmdline: &str) -> bool {
    let wanted = param(cmdline, "okernel.client") == Some("1");
    if mode == Expect::Monitor && !wanted {
        return false;
    }
    let iomem = read("/proc/iomem");
    let (Some(code), Some(rodata)) = (
        iomem_pages(&iomem, "Kernel code"),
        iomem_pages(&iomem, "Kernel rodata"),
    ) else {
        c.report(
            "linux-client-ranges",
            0,
            false,
            "no Kernel code/rodata in /proc/iomem",
        );
        return false;
    };
    let mut args = vec![
        "/lib/okernel.ko".to_string(),
        format!("code={:#x}-{:#x}", code.start, code.end),
        format!("rodata={:#x}-{:#x}", rodata.start, rodata.end),
    ];
    // The kernel's own patch sites, for validated self-patching: the
    // jump-label table, the inline static-call sites table and the
    // static-call trampolines.
    let kallsyms = read("/proc/kallsyms");
    for (param, range) in [
        ("jump_table", jump_table(&kallsyms)),
        ("static_call_sites", static_call_sites(&kallsyms)),
        ("static_call_tramps", static_call_tramps(&kallsyms)),
    ] {
        if let Some(t) = range {
            args.push(format!("{param}={:#x}-{:#x}", t.start, t.end));
        }
    }
    let out = Command::new("insmod").args(&args).output();
    let dmesg = Command::new("dmesg")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let said: Vec<&str> = dmesg.lines().filter(|l| l.contains("okernel:")).collect();
    let loaded = out.as_ref().is_ok_and(|o| o.status.success());
    let observed = format!(
        "insmod {}: {}; kernel log: {}",
        args.join(" "),
        if loaded { "loaded" } else { "refused" },
        said.join(" | ")
    );
    match mode {
        Expect::Monitor => {
            c.report("linux-client-locks", 2, loaded, &observed);
            loaded
        }
        Expect::Direct | Expect::Bare => {
            c.report(
                "linux-client-refuses-without-okernel",
                0,
                !loaded && said.iter().any(|l| l.contains("not running under okernel")),
                &observed,
            );
            false
        }
    }
}

/// What reading `path` gave: its size, or the error.
fn read_result(path: &str) -> String {
    match std::fs::read(path) {
        Ok(b) => format!("{path}: {} bytes", b.len()),
        Err(e) => format!("{path}: {e}"),
    }
}

/// The client's files hold kernel addresses (audit records) and the
/// monitor's counters: readable by init's root (a positive control),
/// refused to the container's root, which has uid 0 but no CAP_SYSLOG.
fn client_files(c: &mut Checks) {
    let files = ["/proc/okernel-audit", "/proc/okernel-exits"];
    let outside: Vec<String> = files.iter().map(|f| read_result(f)).collect();
    let inside: Vec<String> = files
        .iter()
        .map(|f| {
            Command::new("unshare")
                .args(["-m", "-u", "-i", "-n", "-p", "-f", "--"])
                .arg(std::env::current_exe().unwrap_or_default())
                .args(["--contained", &format!("--read={f}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| format!("unshare: {e}"))
        })
        .collect();
    let ok = outside.iter().all(|o| o.ends_with(" bytes"))
        && inside
            .iter()
            .all(|i| i.ends_with("Operation not permitted (os error 1)"));
    c.report(
        "linux-client-files-need-cap-syslog",
        0,
        ok,
        &format!(
            "init's root: {}; the container's root: {}",
            outside.join(", "),
            inside.join(", ")
        ),
    );
}

/// A legal patch of locked text: `sched_schedstats` is a static key, so
/// turning it on and off rewrites its jump-label sites in kernel text
/// (through `text_poke`), which the monitor must let through and judge
/// legal (validated self-patching). The kernel must survive both flips
/// and read the value back (in every mode: without okernel it is the
/// baseline).
fn static_key_flip(c: &mut Checks) {
    const KEY: &str = "/proc/sys/kernel/sched_schedstats";
    let mut seen = Vec::new();
    for v in ["1", "0"] {
        let wrote = std::fs::write(KEY, v).is_ok();
        let back = read(KEY);
        seen.push(format!("wrote {v}: {}, read back {:?}", wrote, back.trim()));
    }
    let ok = seen
        == [
            "wrote 1: true, read back \"1\"",
            "wrote 0: true, read back \"0\"",
        ];
    c.report("linux-static-key-flip", 2, ok, &seen.join("; "));
}

/// A legal patch of locked text by static calls: enabling a trace event
/// registers a probe on its tracepoint, which moves the tracepoint's
/// static call (`tp_func_sched_process_fork`: its trampoline in
/// `.static_call.text` and its inline site in `kernel_clone`) from the
/// iterator to the probe, and flips the tracepoint's static key (a
/// jump-label site): `text_poke` writes that the monitor must let through
/// and judge legal. The probe must then run: a fork leaves a
/// `sched_process_fork` line in the trace. Disabling moves both back. In
/// every mode (without okernel it is the baseline). A shell writes the
/// switch, so that a kernel that kills the writer (a refused patch: #GP in
/// `text_poke`) ends only that child; it runs after `static_key_flip`,
/// since such a writer dies holding `text_mutex`, and is waited for a
/// bounded time. (Switching the preemption model, `PREEMPT_DYNAMIC`,
/// moves about a thousand sites: under Bochs it passed 8,192 validated
/// writes in the run's ten minutes without finishing, so it is not a
/// row; `docs/RESULTS.md`.)
fn static_call_update(c: &mut Checks) {
    const TRACING: &str = "/sys/kernel/tracing";
    let event = format!("{TRACING}/events/sched/sched_process_fork/enable");
    let mut seen = Vec::new();
    if !std::path::Path::new(&event).exists() {
        let m = Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACING])
            .status();
        seen.push(format!("mount tracefs: {m:?}"));
    }
    let enabled = run_bounded(&format!("echo 1 > {event}"), 120);
    let on = read(&event);
    // A fork the probe must see (the shell of `run_bounded` forks `true`).
    let forked = run_bounded("true", 30);
    let traced = read(&format!("{TRACING}/trace"))
        .lines()
        .any(|l| l.contains("sched_process_fork:"));
    let disabled = run_bounded(&format!("echo 0 > {event}"), 120);
    let off = read(&event);
    let ok = enabled.is_ok()
        && on.trim() == "1"
        && forked.is_ok()
        && traced
        && disabled.is_ok()
        && off.trim() == "0";
    seen.push(format!(
        "enable sched_process_fork: {enabled:?}, reads {:?}; a fork traced: {traced}; disable: {disabled:?}, reads {:?}",
        on.trim(),
        off.trim()
    ));
    c.report("linux-static-call-update", 2, ok, &seen.join("; "));
}

/// Runs `script` with `sh -c`, waiting at most `seconds` for it; the
/// child is killed (it may not die: a task blocked in the kernel) when
/// it takes longer.
fn run_bounded(script: &str, seconds: u64) -> Result<(), String> {
    use std::io::Read;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("sh: {e}"))?;
    for _ in 0..seconds * 10 {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("{s} {}", err.trim()));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = child.kill();
    Err(format!("still running after {seconds} s"))
}

/// The time-stamp counter (in Bochs with `clock: sync=none`, emulated
/// time since reset).
#[allow(unsafe_code)]
fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter and has no side effects; Linux leaves
    // CR4.TSD clear for processes that have not asked otherwise (PR_SET_TSC),
    // and the probe has not.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn sig_text(ebx: u32, ecx: u32, edx: u32) -> String {
    let bytes: Vec<u8> = [ebx, ecx, edx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    format!("{:?}", String::from_utf8_lossy(&bytes))
}

/// Whether the kernel can read physical `addr` through the test image's
/// vulnerability (a fresh kernel mapping, which no page-table or
/// `/dev/mem` policy of the kernel stands in front of).
fn kernel_can_read(addr: u64) -> VulnAnswer {
    match vuln(&format!("read {addr:x}")) {
        VulnAnswer::Answer(b) if b.len() != 32 => {
            VulnAnswer::Failed(format!("/proc/okernel-vuln answered `{b}`"))
        }
        other => other,
    }
}

/// Gives the vulnerability `cmd` in a child inside the attacker's
/// container (see the module doc and `container.rs`).
pub(crate) fn vuln(cmd: &str) -> VulnAnswer {
    let Ok(me) = std::env::current_exe() else {
        return VulnAnswer::Failed("current_exe failed".into());
    };
    let out = match Command::new("unshare")
        .args(["-m", "-u", "-i", "-n", "-p", "-f", "--"])
        .arg(me)
        .args(["--contained", cmd])
        .output()
    {
        Ok(o) => o,
        Err(e) => return VulnAnswer::Failed(format!("cannot start the attacker: {e}")),
    };
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => VulnAnswer::Answer(said),
        Some(_) => VulnAnswer::Failed(err),
        None => VulnAnswer::Killed(format!("{} {err}", out.status)),
    }
}

/// What became of a command to the kernel's vulnerability.
pub(crate) enum VulnAnswer {
    /// The kernel answered this.
    Answer(String),
    /// The kernel killed the child that asked: its access faulted (under
    /// the monitor, the fault okernel injects for a denied access).
    Killed(String),
    /// It did not happen at all (no vulnerability, a refused command):
    /// proves nothing either way.
    Failed(String),
}

impl VulnAnswer {
    pub(crate) fn describe(&self) -> String {
        match self {
            VulnAnswer::Answer(b) => format!("the kernel answered {b}"),
            VulnAnswer::Killed(how) => format!("the caller was killed by the kernel ({how})"),
            VulnAnswer::Failed(e) => format!("not made: {e}"),
        }
    }
}

/// The child of [`vuln`]: writes `cmd` to the vulnerability and prints
/// the answer, read back on the same open file.
fn vuln_child(cmd: &str) -> ExitCode {
    use std::io::{Read, Seek, Write};
    let path = "/proc/okernel-vuln";
    let result = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|mut f| {
            f.write_all(cmd.as_bytes())?;
            f.rewind()?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(s)
        });
    match result {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
