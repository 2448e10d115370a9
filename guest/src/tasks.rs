//! The demo container host's tasks, their credentials and the system-call
//! interface between the ring-3 tasks and the kernel.
//!
//! One trusted host task runs in the trusted context; two untrusted
//! container tasks each run in an EPT context of their own when
//! protection is on. Every task has its own user code, data, stack and
//! protected ("secret") page, and a kernel stack.

/// Capability bits (a small subset of Linux's, for the demo).
pub mod caps {
    /// Override file permission checks.
    pub const DAC_OVERRIDE: u64 = 1 << 1;
    /// Change uids and gids.
    pub const SETUID: u64 = 1 << 7;
    /// Administer the system.
    pub const SYS_ADMIN: u64 = 1 << 21;
    /// Every capability.
    pub const ALL: u64 = u64::MAX;
}

/// One task's credentials, as the credential table stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Cred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Capability bits ([`caps`]).
    pub caps: u64,
}

const _: () = assert!(core::mem::size_of::<Cred>() == 16);

/// A task of the demo host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// Its name, for logs.
    pub name: &'static str,
    /// Whether it runs in the trusted context (the host), not a container.
    pub trusted: bool,
    /// Its credentials at boot.
    pub cred: Cred,
}

/// The host task (index 0), always trusted.
pub const HOST: usize = 0;
/// The first container task: the attacker.
pub const CONTAINER_A: usize = 1;
/// The second container task: the victim of cross-container attacks.
pub const CONTAINER_B: usize = 2;

/// The demo host's tasks, by index.
pub const TASKS: [TaskSpec; 3] = [
    TaskSpec {
        name: "host",
        trusted: true,
        cred: Cred {
            uid: 0,
            gid: 0,
            caps: caps::ALL,
        },
    },
    TaskSpec {
        name: "container-a",
        trusted: false,
        cred: Cred {
            uid: 100_000,
            gid: 100_000,
            caps: 0,
        },
    },
    TaskSpec {
        name: "container-b",
        trusted: false,
        cred: Cred {
            uid: 200_000,
            gid: 200_000,
            caps: 0,
        },
    },
];

/// The value each task's data page starts with (task index in the low byte).
pub const fn data_pattern(task: usize) -> u64 {
    0xda7a_0000_0000_0000 | task as u64
}

/// The value each task keeps in its protected page.
pub const fn secret_pattern(task: usize) -> u64 {
    0x5ec2_e700_0000_0000 | task as u64
}

/// System-call numbers (RAX at `syscall`).
pub mod sys {
    /// Ends the task's current request; RDI = its result. Never returns.
    pub const DONE: u64 = 0;
    /// Returns the caller's uid from the credential table.
    pub const GETUID: u64 = 1;
    /// The vulnerability-emulation call (an arbitrary kernel read/write,
    /// as linux-okernel's test module gave): RDI = a [`super::vuln`] op,
    /// RSI = an address, RDX = a value. Its result is left for the kernel
    /// to read (`VULN_RESULT`).
    pub const VULN: u64 = 2;
    /// Maps frame RSI (one of the caller's own pages) at alias slot RDI
    /// through the validated page-table path, reads the first quadword
    /// through the new mapping, unmaps it and returns the quadword.
    pub const MAP_OWN: u64 = 3;
    /// The number of entries in the system-call table.
    pub const COUNT: usize = 4;
}

/// Operations of the vulnerability-emulation call.
pub mod vuln {
    /// Read the quadword at RSI.
    pub const READ: u64 = 0;
    /// Write RDX to the quadword at RSI.
    pub const WRITE: u64 = 1;
    /// Call the kernel address RSI with argument RDX (control of the
    /// kernel's RIP, as an exploit gets it).
    pub const CALL: u64 = 2;
}

/// Requests the user stub executes in ring 3 itself instead of a syscall
/// (RAX values at user entry above every system-call number).
pub mod user_op {
    /// Store RSI at user address RDI, then load it back into RAX.
    pub const STORE: u64 = 0x1000;
    /// Load the quadword at user address RDI into RAX.
    pub const LOAD: u64 = 0x1001;
    /// Execute `VMCALL` at CPL 3 with RAX = RDI; RAX is the status.
    pub const VMCALL: u64 = 0x1002;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trusted_host_and_two_containers_with_distinct_ids() {
        assert!(TASKS[HOST].trusted);
        assert_eq!(TASKS[HOST].cred.uid, 0);
        for t in [CONTAINER_A, CONTAINER_B] {
            assert!(!TASKS[t].trusted);
            assert_ne!(TASKS[t].cred.uid, 0);
            assert_eq!(TASKS[t].cred.caps & caps::SYS_ADMIN, 0);
        }
        assert_ne!(TASKS[CONTAINER_A].cred, TASKS[CONTAINER_B].cred);
    }

    #[test]
    fn patterns_tell_tasks_apart() {
        assert_ne!(data_pattern(1), data_pattern(2));
        assert_ne!(secret_pattern(1), secret_pattern(2));
        assert_ne!(secret_pattern(1), data_pattern(1));
    }

    #[test]
    fn user_ops_do_not_collide_with_syscalls() {
        for op in [user_op::STORE, user_op::LOAD, user_op::VMCALL] {
            assert!(op >= sys::COUNT as u64);
        }
    }
}
