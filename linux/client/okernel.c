// SPDX-License-Identifier: GPL-2.0
/*
 * okernel.ko: the Linux host kernel's client of the okernel monitor.
 *
 * Loaded once by /init, after every CPU is up and mark_rodata_ro() has run,
 * before any container starts. It registers the kernel's text and
 * read-only data with the monitor and locks them, pins the security bits
 * of CR0/CR4 and locks the system-call MSRs, all with okernel's
 * hypercalls (docs/hypercall-abi.md; the numbers come from
 * okernel_abi.h, which xtask generates from the Rust ABI crate). The
 * policy lives in the monitor: this module only names what to protect.
 *
 * The physical ranges come from the kernel itself, as /proc/iomem shows
 * them ("Kernel code", "Kernel rodata"), and the linear ranges of its
 * patch-site tables from /proc/kallsyms (__start___jump_table,
 * __stop___jump_table; __start_static_call_sites,
 * __stop_static_call_sites; __static_call_text_start,
 * __static_call_text_end), passed by /init as parameters:
 *   insmod okernel.ko code=START-END rodata=START-END
 *     [jump_table=START-END] [static_call_sites=START-END]
 *     [static_call_tramps=START-END]
 * (hex, END exclusive; the physical ones page-aligned). Without okernel
 * (no signature in CPUID leaf 0x40000000) it refuses to load with -ENODEV
 * and touches nothing.
 *
 * Linux executes code outside its text (modules, BPF JIT images) and
 * rewrites its text at run time (jump labels and static calls, through
 * text_poke), so the client asks for the execute rule that leaves execute
 * rights outside text to the kernel's page tables, and registers the
 * kernel's own jump-label table, inline static-call sites and static-call
 * trampolines: the monitor then lets a write to locked text through only
 * where it leaves registered sites in legal forms (docs/policy.md,
 * "Validated self-patching").
 *
 * The monitor's audit records are readable as JSON lines in
 * /proc/okernel-audit (the newest 256) and go to the kernel log as they
 * come (polled once a second). Reading it, or the exit counters in
 * /proc/okernel-exits, takes CAP_SYSLOG, as the kernel log does: the
 * records hold kernel addresses, and a container's root has uid 0 but
 * not the capability.
 */

#include <linux/capability.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/workqueue.h>
#include <asm/processor.h>
#include <asm/processor-flags.h>
#include <asm/msr-index.h>
#include <asm/desc.h>
#include <asm/pgtable_types.h>
#include "okernel_abi.h"

static char *code;
module_param(code, charp, 0400);
MODULE_PARM_DESC(code, "kernel text, physical START-END (hex)");
static char *rodata;
module_param(rodata, charp, 0400);
MODULE_PARM_DESC(rodata, "kernel read-only data, physical START-END (hex)");
static char *jump_table;
module_param(jump_table, charp, 0400);
MODULE_PARM_DESC(jump_table,
		 "the kernel's __jump_table, virtual START-END (hex, from /proc/kallsyms)");
static char *static_call_sites;
module_param(static_call_sites, charp, 0400);
MODULE_PARM_DESC(static_call_sites,
		 "the kernel's __static_call_sites, virtual START-END (hex, from /proc/kallsyms)");
static char *static_call_tramps;
module_param(static_call_tramps, charp, 0400);
MODULE_PARM_DESC(static_call_tramps,
		 "the kernel's .static_call.text trampolines, virtual START-END (hex, from /proc/kallsyms)");

/* One hypercall: RAX = call, RDI/RSI/RDX = arguments; RAX out = status,
 * RDI out = value 0 (docs/hypercall-abi.md). */
static u64 okernel_call(u64 call, u64 a0, u64 a1, u64 a2, u64 *out)
{
	asm volatile("vmcall"
		     : "+a"(call), "+D"(a0), "+S"(a1)
		     : "d"(a2)
		     : "memory");
	if (out)
		*out = a0;
	return call;
}

static const char *status_name(u64 status)
{
	return status < ARRAY_SIZE(okernel_status_names) ?
		       okernel_status_names[status] : "unknown status";
}

static bool under_okernel(void)
{
	u32 eax, ebx, ecx, edx;

	cpuid(OKERNEL_CPUID_LEAF_SIGNATURE, &eax, &ebx, &ecx, &edx);
	return ebx == OKERNEL_SIGNATURE_EBX && ecx == OKERNEL_SIGNATURE_ECX &&
	       edx == OKERNEL_SIGNATURE_EDX;
}

static int parse_range(const char *what, const char *s, u64 *start, u64 *end)
{
	if (!s || sscanf(s, "%llx-%llx", start, end) != 2 || *start >= *end ||
	    !IS_ALIGNED(*start, PAGE_SIZE) || !IS_ALIGNED(*end, PAGE_SIZE)) {
		pr_err("okernel: %s=%s is not a page-aligned START-END range\n",
		       what, s ? s : "(none)");
		return -EINVAL;
	}
	return 0;
}

/* Calls `call` and logs the outcome; 0 on success, -EPERM otherwise. */
static int step(const char *what, u64 call, u64 a0, u64 a1, u64 a2, u64 *out)
{
	u64 status = okernel_call(call, a0, a1, a2, out);

	if (status != OKERNEL_STATUS_SUCCESS) {
		pr_err("okernel: %s: %s (%llu)\n", what, status_name(status),
		       status);
		return -EPERM;
	}
	pr_info("okernel: %s: ok\n", what);
	return 0;
}

static int register_region(const char *what, u64 start, u64 end, u64 kind,
			   u64 *id)
{
	return step(what, OKERNEL_CALL_REGISTER_REGION, start, end - start,
		    kind, id);
}

/* The IDT's physical page: SIDT gives the read-only alias in the CPU
 * entry area; its page-table walk gives the page (idt_table). */
static u64 idt_page(void)
{
	struct desc_ptr dt;

	store_idt(&dt);
	return slow_virt_to_phys((void *)dt.address) & PAGE_MASK;
}

/* A table of patch sites in the format `format`, from the parameter
 * `param` (`range`, or none when /init passed none): the jump table and
 * the static-call sites table after rodata (which holds them) is locked,
 * the trampolines (which lie in text) before text is. */
static int register_sites(const char *param, const char *range, u64 format,
			  const char *what)
{
	u64 start, end, sites = 0;
	char name[64];
	int err;

	if (!range) {
		pr_warn("okernel: no %s= given: every write to locked text that changes %s will be denied\n",
			param, what);
		return 0;
	}
	if (sscanf(range, "%llx-%llx", &start, &end) != 2 || start >= end) {
		pr_err("okernel: %s=%s is not a START-END range\n", param, range);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "register %s", what);
	err = step(name, OKERNEL_CALL_REGISTER_PATCH_SITES, start, end - start,
		   format, &sites);
	if (!err)
		pr_info("okernel: %llu %s in locked text\n", sites, what);
	return err;
}

static const u32 locked_msrs[] = {
	MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK,
	MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
};

/* One audit record as a JSON line (no newline). */
static int audit_json(char *buf, size_t len, const struct okernel_audit_record *r)
{
	return scnprintf(buf, len,
			 "{\"seq\":%llu,\"kind\":%u,\"action\":%u,\"ctx\":%llu,"
			 "\"gpa\":\"%#llx\",\"gva\":\"%#llx\",\"access\":%llu,"
			 "\"rip\":\"%#llx\",\"qualification\":\"%#llx\"}",
			 r->sequence, r->kind, r->action, r->context, r->gpa,
			 r->gva, r->access, r->rip, r->qualification);
}

/* Reads record `seq` into `r` (kmalloc'd: the monitor writes to a
 * guest-physical address, and module data and stacks are not in the
 * direct map); 0 on success. */
static int audit_read(u64 seq, struct okernel_audit_record *r)
{
	return okernel_call(OKERNEL_CALL_AUDIT_READ, seq, __pa(r), 0, NULL) ? -EIO : 0;
}

/* Audit records as JSON lines under /proc/okernel-audit. */
static int audit_show(struct seq_file *m, void *v)
{
	struct okernel_audit_record *r = kmalloc(sizeof(*r), GFP_KERNEL);
	char line[256];
	u64 count = 0, seq;

	if (!r)
		return -ENOMEM;
	if (!capable(CAP_SYSLOG)) {
		kfree(r);
		return -EPERM;
	}
	if (okernel_call(OKERNEL_CALL_AUDIT_COUNT, 0, 0, 0, &count)) {
		kfree(r);
		return -EIO;
	}
	for (seq = count > OKERNEL_AUDIT_SHOWN ? count - OKERNEL_AUDIT_SHOWN : 0;
	     seq < count; seq++) {
		if (audit_read(seq, r))
			continue; /* overwritten in the ring meanwhile */
		audit_json(line, sizeof(line), r);
		seq_printf(m, "%s\n", line);
	}
	kfree(r);
	return 0;
}

/* The monitor's exit counters under /proc/okernel-exits: "total N", then
 * "REASON COUNT" for every basic exit reason with exits (ExitCount, ABI
 * 1.3). A read makes OKERNEL_EXIT_REASON_SLOTS VMCALLs itself: two reads
 * differ by that many VMCALLs (and exits) more than what ran between. */
static u64 exit_count(u64 reason, u64 *total)
{
	u64 call = OKERNEL_CALL_EXIT_COUNT, all = 0;

	asm volatile("vmcall"
		     : "+a"(call), "+D"(reason), "+S"(all)
		     :
		     : "rdx", "memory");
	*total = all;
	return call == OKERNEL_STATUS_SUCCESS ? reason : 0;
}

static int exits_show(struct seq_file *m, void *v)
{
	u64 counts[OKERNEL_EXIT_REASON_SLOTS], total = 0, t;
	unsigned int i;

	if (!capable(CAP_SYSLOG))
		return -EPERM;
	for (i = 0; i < OKERNEL_EXIT_REASON_SLOTS; i++)
		counts[i] = exit_count(i, i ? &t : &total);
	seq_printf(m, "total %llu\n", total);
	for (i = 0; i < OKERNEL_EXIT_REASON_SLOTS; i++)
		if (counts[i])
			seq_printf(m, "%u %llu\n", i, counts[i]);
	return 0;
}

/* New audit records go to the kernel log too, polled once a second. */
static struct delayed_work audit_work;
static struct okernel_audit_record *audit_buf;
static u64 audit_logged;

static void audit_log(struct work_struct *work)
{
	char line[256];
	u64 count = 0;

	if (!okernel_call(OKERNEL_CALL_AUDIT_COUNT, 0, 0, 0, &count)) {
		if (count - audit_logged > OKERNEL_AUDIT_SHOWN)
			audit_logged = count - OKERNEL_AUDIT_SHOWN;
		for (; audit_logged < count; audit_logged++) {
			if (audit_read(audit_logged, audit_buf))
				continue;
			audit_json(line, sizeof(line), audit_buf);
			pr_warn("okernel: audit %s\n", line);
		}
	}
	schedule_delayed_work(&audit_work, HZ);
}

static int __init okernel_client_init(void)
{
	u64 code_start, code_end, ro_start, ro_end, text_id, ro_id, idt_id;
	u64 version, idt;
	unsigned long cr4 = __read_cr4();
	u64 cr4_pins = cr4 & (X86_CR4_SMEP | X86_CR4_SMAP | X86_CR4_UMIP);
	int err;
	size_t i;

	if (!under_okernel()) {
		pr_err("okernel: not running under okernel (no signature in CPUID leaf %#x)\n",
		       OKERNEL_CPUID_LEAF_SIGNATURE);
		return -ENODEV;
	}
	err = parse_range("code", code, &code_start, &code_end) ?:
	      parse_range("rodata", rodata, &ro_start, &ro_end);
	if (err)
		return err;
	err = step("version", OKERNEL_CALL_VERSION, 0, 0, 0, &version);
	if (err)
		return err;
	if ((version >> 16) != OKERNEL_ABI_MAJOR ||
	    (version & 0xffff) < OKERNEL_ABI_MINOR) {
		pr_err("okernel: monitor ABI %llu.%llu, client built for %u.%u\n",
		       version >> 16, version & 0xffff, OKERNEL_ABI_MAJOR,
		       OKERNEL_ABI_MINOR);
		return -EPROTO;
	}
	idt = idt_page();
	/* Register everything first, then lock: a refusal leaves nothing
	 * half-locked (rodata before the patch-site tables it holds, the
	 * tables and the trampolines before text). */
	err = register_region("register text", code_start, code_end,
			      OKERNEL_REGION_TEXT, &text_id) ?:
	      register_region("register rodata", ro_start, ro_end,
			      OKERNEL_REGION_RODATA, &ro_id) ?:
	      register_region("register the IDT page", idt, idt + PAGE_SIZE,
			      OKERNEL_REGION_DESCRIPTORTABLE, &idt_id) ?:
	      step("execute rule: the kernel's page tables",
		   OKERNEL_CALL_SET_EXECUTE_RULE, OKERNEL_EXECUTE_GUEST_PAGE_TABLES,
		   0, 0, NULL) ?:
	      step("lock rodata", OKERNEL_CALL_LOCK_REGION, ro_id, 0, 0, NULL) ?:
	      register_sites("jump_table", jump_table,
			     OKERNEL_PATCH_LINUX_JUMP_ENTRY, "jump-label sites") ?:
	      register_sites("static_call_sites", static_call_sites,
			     OKERNEL_PATCH_LINUX_STATIC_CALL_SITE,
			     "inline static-call sites") ?:
	      register_sites("static_call_tramps", static_call_tramps,
			     OKERNEL_PATCH_LINUX_STATIC_CALL_TRAMPOLINE,
			     "static-call trampolines") ?:
	      step("lock text", OKERNEL_CALL_LOCK_REGION, text_id, 0, 0, NULL) ?:
	      step("lock the IDT page", OKERNEL_CALL_LOCK_REGION, idt_id, 0, 0,
		   NULL) ?:
	      step("lock descriptor-table registers",
		   OKERNEL_CALL_LOCK_DESCRIPTOR_TABLES, 0, 0, 0, NULL) ?:
	      step("pin CR0.WP", OKERNEL_CALL_PIN_CR, 0, X86_CR0_WP, 0, NULL) ?:
	      step("pin CR4 SMEP/SMAP/UMIP", OKERNEL_CALL_PIN_CR, 4, cr4_pins, 0,
		   NULL);
	for (i = 0; !err && i < ARRAY_SIZE(locked_msrs); i++)
		err = step("lock MSR", OKERNEL_CALL_LOCK_MSR, locked_msrs[i], 0,
			   0, NULL);
	if (err)
		return err;
	proc_create_single("okernel-audit", 0400, NULL, audit_show);
	proc_create_single("okernel-exits", 0400, NULL, exits_show);
	audit_buf = kmalloc(sizeof(*audit_buf), GFP_KERNEL);
	if (audit_buf) {
		INIT_DELAYED_WORK(&audit_work, audit_log);
		schedule_delayed_work(&audit_work, 0);
	}
	pr_info("okernel: kernel text, rodata and the IDT page (%#llx) locked, descriptor-table registers locked, CR0.WP and CR4 %#llx pinned, %zu MSRs locked\n",
		idt, cr4_pins, ARRAY_SIZE(locked_msrs));
	return 0;
}

/* Locks are one-way (invariant 8): once loaded, the client stays. */
module_init(okernel_client_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("okernel client: registers and locks the kernel's protections");
