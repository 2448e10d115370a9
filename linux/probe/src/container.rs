//! The attacker's container: every command to the vulnerability is made
//! by a process that busybox `unshare` starts in new mount, UTS, IPC,
//! network and PID namespaces, which then joins a cgroup of its own,
//! sets `no_new_privs`, drops every capability (bounding set included)
//! and installs a seccomp filter (JIT-compiled by the kernel: the BPF JIT
//! must keep working under the monitor) before it touches
//! `/proc/okernel-vuln`. No OCI runtime: Debian's `crun` and `runc` are
//! dynamically linked (glibc, libseccomp, libyajl, libsystemd...) and the
//! test initramfs has no C library; see `docs/linux.md`.
//!
//! The vulnerability file is root's, mode 0600: the contained process is
//! uid 0 without any capability, so only the file's owner permission lets
//! it in (no `CAP_DAC_OVERRIDE`), as a container's root that found a
//! kernel bug reachable from its own files would be.

#![allow(unsafe_code)]

/// System calls the filter refuses with `ENOSYS` (so that a refusal by
/// the filter is told apart from the kernel's own `EPERM`).
const DENIED: &[(u32, &str)] = &[
    (101, "ptrace"),
    (165, "mount"),
    (175, "init_module"),
    (246, "kexec_load"),
    (250, "keyctl"),
    (272, "unshare"),
    (313, "finit_module"),
    (321, "bpf"),
];

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const ENOSYS: u32 = 38;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: 0x15, // BPF_JMP | BPF_JEQ | BPF_K
        jt,
        jf,
        k,
    }
}

/// The filter: x86-64 only, the [`DENIED`] calls refused, the rest
/// allowed.
pub fn filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const RET_K: u16 = 0x06;
    let mut f = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ];
    let n = DENIED.len();
    for (i, (nr, _)) in DENIED.iter().enumerate() {
        // Match: jump to the ERRNO return after the remaining tests and
        // the ALLOW return.
        let to_errno = u8::try_from(n - i).unwrap_or(u8::MAX);
        f.push(jeq(*nr, to_errno, 0));
    }
    f.push(stmt(RET_K, RET_ALLOW));
    f.push(stmt(RET_K, RET_ERRNO | ENOSYS));
    f
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Enters the container (see the module doc); the caller is the process
/// `unshare` started in the new namespaces.
pub fn enter() -> Result<(), String> {
    // Its own cgroup (cgroup v2, mounted in this mount namespace).
    let root = "/sys/fs/cgroup";
    let _ = std::fs::create_dir_all(root);
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(root));
    if !mounted {
        let ok = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none", root])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("mount -t cgroup2 failed".into());
        }
    }
    let group = format!("{root}/okernel-attacker");
    let _ = std::fs::create_dir(&group);
    std::fs::write(format!("{group}/cgroup.procs"), "0")
        .map_err(|e| format!("joining {group}: {e}"))?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only and
    // changes only this process's flags.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err("PR_SET_NO_NEW_PRIVS failed".into());
    }
    for cap in 0..64 {
        // SAFETY: integer arguments only; an unknown capability is EINVAL,
        // which is the end of the kernel's list and harmless.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    let mut header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads one header and two data structs of the v3
    // layout, both live locals of exactly those #[repr(C)] layouts.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err("capset to nothing failed".into());
    }
    let mut f = filter();
    let prog = libc::sock_fprog {
        len: u16::try_from(f.len()).map_err(|_| "filter too long")?,
        filter: f.as_mut_ptr(),
    };
    // SAFETY: the program points at `f`, alive across the call, whose
    // length it states; the kernel copies it.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    } != 0
    {
        return Err("installing the seccomp filter failed".into());
    }
    Ok(())
}

/// What the container looks like from inside: its namespaces, seccomp
/// mode, capabilities, cgroup, and whether the filter refuses
/// `init_module` with its own `ENOSYS`.
pub fn status() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    let ns: Vec<String> = ["pid", "net", "mnt", "uts", "ipc"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    // SAFETY: init_module with a null image and length 0 reads nothing:
    // the filter refuses it before the kernel looks at the arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            core::ptr::null::<u8>(),
            0usize,
            c"".as_ptr(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    format!(
        "pid {} ns {} Seccomp {} NoNewPrivs {} CapEff {} CapBnd {} cgroup {} init_module {} errno {}",
        std::process::id(),
        ns.join(" "),
        field("Seccomp:"),
        field("NoNewPrivs:"),
        field("CapEff:"),
        field("CapBnd:"),
        std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .trim(),
        r,
        errno
    )
}
