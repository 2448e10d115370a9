//! The code each check runs under a probe, in assembly so that the
//! instruction under test has a known address: every probe `NAME` has a
//! descriptor `conf_NAME` = (entry, the instruction's address, the next
//! instruction's address), so a check compares the saved RIP with "at"
//! (a fault) or "next" (a trap) instead of printing addresses.
//!
//! Entries are `extern "C" fn(arg) -> u64` run by [`crate::trap::probe`].

core::arch::global_asm!(
    r#"
    .macro desc name
    .pushsection .rodata.conf_desc, "a"
    .balign 8
    .global conf_\name
conf_\name:
    .quad conf_e_\name, conf_a_\name, conf_n_\name
    .popsection
    .endm

    .macro single_step
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    .endm

    /* An iretq to `target` with RFLAGS.RF set: the instruction there runs
       with RF = 1 (SDM Vol. 3A §19.3.1.1). */
    .macro iret_rf target
    mov r11, rsp
    mov r10d, ss
    push r10
    push r11
    pushfq
    or qword ptr [rsp], 0x10000
    mov r10d, cs
    push r10
    lea r10, [rip + \target]
    push r10
    iretq
    .endm

    .section .text.probes, "ax"

    desc ud2
conf_e_ud2:
conf_a_ud2: ud2
conf_n_ud2: ret

    desc int3
conf_e_int3:
conf_a_int3: int3
conf_n_int3: ret

    desc div0
conf_e_div0:
    xor ecx, ecx
    mov eax, 1
    xor edx, edx
conf_a_div0: div ecx
conf_n_div0: ret

    desc int80
conf_e_int80:
conf_a_int80: int 0x80
conf_n_int80: ret

    desc load
conf_e_load:
conf_a_load: mov rax, [rdi]
conf_n_load: ret

    desc store
conf_e_store:
conf_a_store: mov [rdi], eax
conf_n_store: ret

    desc load32
conf_e_load32:
conf_a_load32: mov eax, [rdi]
conf_n_load32: ret

    desc load_stac
conf_e_load_stac:
    stac
conf_a_load_stac: mov rax, [rdi]
conf_n_load_stac: clac
    ret

    desc stack_noncanonical
conf_e_stack_noncanonical:
    movabs r11, 0x800000000000
conf_a_stack_noncanonical: mov rax, [rsp + r11]
conf_n_stack_noncanonical: ret

    desc nm
conf_e_nm:
    mov rax, cr0
    or rax, 8
    mov cr0, rax
conf_a_nm: movaps xmm0, xmm1
conf_n_nm: clts
    ret

    desc xm
conf_e_xm:
    sub rsp, 8
    stmxcsr [rsp]
    and dword ptr [rsp], ~0x200
    ldmxcsr [rsp]
    add rsp, 8
    xorps xmm1, xmm1
    mov eax, 0x3f800000
    movd xmm0, eax
conf_a_xm: divss xmm0, xmm1
conf_n_xm: ret

    desc tf_nop
conf_e_tf_nop:
    single_step
conf_a_tf_nop: nop
conf_n_tf_nop: nop
    ret

    desc tf_cpuid
conf_e_tf_cpuid:
    push rbx
    xor eax, eax
    single_step
conf_a_tf_cpuid: cpuid
conf_n_tf_cpuid: nop
    pop rbx
    ret

    /* CPUID with six segment prefixes (8 bytes). */
    desc tf_cpuid_prefixed
conf_e_tf_cpuid_prefixed:
    push rbx
    xor eax, eax
    single_step
conf_a_tf_cpuid_prefixed: .byte 0x2e, 0x3e, 0x26, 0x64, 0x65, 0x36, 0x0f, 0xa2
conf_n_tf_cpuid_prefixed: nop
    pop rbx
    ret

    /* CPUID at the architectural limit: 13 prefixes, 15 bytes. */
    desc tf_cpuid_15
conf_e_tf_cpuid_15:
    push rbx
    xor eax, eax
    single_step
conf_a_tf_cpuid_15: .byte 0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x0f,0xa2
conf_n_tf_cpuid_15: nop
    pop rbx
    ret

    /* XSETBV (3 bytes, always exits) of XCR0 = arg, single-stepped. */
    desc tf_xsetbv
conf_e_tf_xsetbv:
    mov rax, rdi
    xor ecx, ecx
    xor edx, edx
    single_step
conf_a_tf_xsetbv: xsetbv
conf_n_tf_xsetbv: nop
    ret

    /* VMXOFF (#UD: bare from the CPU, under okernel injected) with TF. */
    desc tf_vmxoff
conf_e_tf_vmxoff:
    single_step
conf_a_tf_vmxoff: vmxoff
conf_n_tf_vmxoff: nop
    ret

    /* XSETBV of XCR0 = 0 (#GP; under okernel injected) with TF. */
    desc tf_xsetbv_bad
conf_e_tf_xsetbv_bad:
    xor eax, eax
    xor ecx, ecx
    xor edx, edx
    single_step
conf_a_tf_xsetbv_bad: xsetbv
conf_n_tf_xsetbv_bad: nop
    ret

    /* IN from port 0x92 (okernel emulates it): by DX (1 byte, EC) and by
       an immediate (2 bytes, E4 92), each single-stepped. */
    desc tf_in_dx
conf_e_tf_in_dx:
    mov edx, 0x92
    single_step
conf_a_tf_in_dx: in al, dx
conf_n_tf_in_dx: nop
    ret

    desc tf_in_imm
conf_e_tf_in_imm:
    single_step
conf_a_tf_in_imm: in al, 0x92
conf_n_tf_in_imm: nop
    ret

    /* WBINVD (2 bytes), single-stepped. */
    desc tf_wbinvd
conf_e_tf_wbinvd:
    single_step
conf_a_tf_wbinvd: wbinvd
conf_n_tf_wbinvd: nop
    ret

    /* 16 bytes: over the limit, #GP(0) before anything executes. */
    desc cpuid_16
conf_e_cpuid_16:
    push rbx
    xor eax, eax
conf_a_cpuid_16: .byte 0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x2e,0x0f,0xa2
conf_n_cpuid_16: pop rbx
    ret

    desc rf_nop
conf_e_rf_nop:
    iret_rf conf_a_rf_nop
conf_a_rf_nop: nop
conf_n_rf_nop: nop
    ret

    desc rf_cpuid
conf_e_rf_cpuid:
    push rbx
    xor eax, eax
    iret_rf conf_a_rf_cpuid
conf_a_rf_cpuid: cpuid
conf_n_rf_cpuid: nop
    pop rbx
    ret

    desc rdmsr
conf_e_rdmsr:
    mov ecx, edi
conf_a_rdmsr: rdmsr
conf_n_rdmsr: shl rdx, 32
    or rax, rdx
    ret

    desc wrmsr
conf_e_wrmsr:
    mov ecx, edi
    xor eax, eax
    xor edx, edx
conf_a_wrmsr: wrmsr
conf_n_wrmsr: ret

    desc rdpmc
conf_e_rdpmc:
    mov ecx, edi
conf_a_rdpmc: rdpmc
conf_n_rdpmc: ret

    /* arg = index << 32 | value (EDX = 0). */
    desc xsetbv
conf_e_xsetbv:
    mov rax, rdi
    mov rcx, rdi
    shr rcx, 32
    xor edx, edx
conf_a_xsetbv: xsetbv
conf_n_xsetbv: ret

    desc cr4_or
conf_e_cr4_or:
    mov rax, cr4
    or rax, rdi
conf_a_cr4_or: mov cr4, rax
conf_n_cr4_or: ret

    desc cr0_or
conf_e_cr0_or:
    mov rax, cr0
    or rax, rdi
conf_a_cr0_or: mov cr0, rax
conf_n_cr0_or: ret

    desc cr0_and
conf_e_cr0_and:
    mov rax, cr0
    and rax, rdi
conf_a_cr0_and: mov cr0, rax
conf_n_cr0_and: ret

    desc vmxon
conf_e_vmxon:
    push rdi
conf_a_vmxon: vmxon [rsp]
conf_n_vmxon: pop rdi
    ret

    desc vmxoff
conf_e_vmxoff:
conf_a_vmxoff: vmxoff
conf_n_vmxoff: ret

    desc vmptrst
conf_e_vmptrst:
    push rdi
conf_a_vmptrst: vmptrst [rsp]
conf_n_vmptrst: pop rdi
    ret

    desc vmread
conf_e_vmread:
conf_a_vmread: vmread rax, rdi
conf_n_vmread: ret

    desc vmlaunch
conf_e_vmlaunch:
conf_a_vmlaunch: vmlaunch
conf_n_vmlaunch: ret

    /* Descriptor-table stores and loads (under okernel, after
       LockDescriptorTables, each exits: stores emulated, loads refused). */
    desc sgdt
conf_e_sgdt:
conf_a_sgdt: sgdt [rdi]
conf_n_sgdt: ret

    desc sidt
conf_e_sidt:
conf_a_sidt: sidt [rdi]
conf_n_sidt: ret

    /* SIB with index, scale and displacement: stores at rdi. */
    desc sgdt_sib
conf_e_sgdt_sib:
    mov rsi, 8
    sub rdi, 0x30
conf_a_sgdt_sib: sgdt [rdi + rsi * 4 + 0x10]
conf_n_sgdt_sib: ret

    /* RIP-relative: stores at conf_dt_buf. */
    desc sgdt_rip
conf_e_sgdt_rip:
conf_a_sgdt_rip: sgdt [rip + conf_dt_buf]
conf_n_sgdt_rip: ret

    desc tf_sidt
conf_e_tf_sidt:
    single_step
conf_a_tf_sidt: sidt [rdi]
conf_n_tf_sidt: nop
    ret

    desc str
conf_e_str:
    xor eax, eax
conf_a_str: str rax
conf_n_str: ret

    desc sldt
conf_e_sldt:
    mov word ptr [rdi], 0x5555
conf_a_sldt: sldt word ptr [rdi]
conf_n_sldt: ret

    desc lidt
conf_e_lidt:
conf_a_lidt: lidt [rdi]
conf_n_lidt: ret

    .pushsection .data.conf_dt_buf, "aw"
    .balign 16
    .global conf_dt_buf
conf_dt_buf:
    .skip 16
    .popsection

    /* Calls the code at arg (the paging checks' pages). */
    desc call
conf_e_call:
conf_a_call: call rdi
conf_n_call: ret
"#
);

/// A probe: its entry and the addresses of its instruction and the next.
#[repr(C)]
pub struct Desc {
    entry: u64,
    /// The instruction under test.
    pub at: u64,
    /// The instruction after it.
    pub next: u64,
}

impl Desc {
    /// The entry as a function.
    pub fn entry(&self) -> extern "C" fn(u64) -> u64 {
        // SAFETY: `entry` is the address of one of the probe entries
        // above, each written as an extern "C" fn(u64) -> u64 (argument in
        // RDI, value in RAX, callee-saved registers preserved).
        unsafe { core::mem::transmute::<u64, extern "C" fn(u64) -> u64>(self.entry) }
    }
}

macro_rules! descs {
    ($($name:ident),* $(,)?) => {
        unsafe extern "C" {
            $(
                #[doc = concat!("The `", stringify!($name), "` probe.")]
                pub safe static $name: Desc;
            )*
        }
    };
}

descs!(
    conf_ud2,
    conf_int3,
    conf_div0,
    conf_int80,
    conf_load,
    conf_store,
    conf_load32,
    conf_load_stac,
    conf_stack_noncanonical,
    conf_nm,
    conf_xm,
    conf_tf_nop,
    conf_tf_cpuid,
    conf_tf_cpuid_prefixed,
    conf_tf_cpuid_15,
    conf_tf_xsetbv,
    conf_tf_wbinvd,
    conf_tf_in_dx,
    conf_tf_in_imm,
    conf_tf_vmxoff,
    conf_tf_xsetbv_bad,
    conf_cpuid_16,
    conf_rf_nop,
    conf_rf_cpuid,
    conf_rdmsr,
    conf_wrmsr,
    conf_rdpmc,
    conf_xsetbv,
    conf_cr4_or,
    conf_cr0_or,
    conf_cr0_and,
    conf_vmxon,
    conf_vmxoff,
    conf_vmptrst,
    conf_vmread,
    conf_vmlaunch,
    conf_sgdt,
    conf_sidt,
    conf_sgdt_sib,
    conf_sgdt_rip,
    conf_tf_sidt,
    conf_str,
    conf_sldt,
    conf_lidt,
    conf_call,
);
