// SPDX-License-Identifier: GPL-2.0
/*
 * okernel_vuln.ko: a deliberate kernel vulnerability, for test images
 * only. It gives root in the test initramfs what a kernel exploit gives an
 * attacker: arbitrary reads and writes of physical memory through fresh
 * kernel mappings, which bypass the kernel's own page-table protections
 * (read-only text, /dev/mem policy) exactly as a real exploit's aliases
 * do, so that only okernel's EPT stands in the way. Like linux-okernel's
 * kernel-writer module, it exists to prove that "blocked" means something:
 * every attack is also run without the monitor, where it must succeed.
 *
 * Never build it into a production image (it is built by `cargo xtask
 * linux-image` into the test initramfs only).
 *
 * /proc/okernel-vuln (0600): write a command, read the answer on the same
 * open file (each open has its own answer, so a task the kernel kills in
 * the middle of a command leaves no lock held and nothing shared behind):
 *   read PHYS          -> 16 bytes at PHYS, hex
 *   write PHYS VALUE   -> stores the 8-byte VALUE at PHYS ("ok")
 *   rvirt VADDR        -> 16 bytes at kernel virtual VADDR, read through a
 *                         fresh mapping of its physical page, hex
 *   poke VADDR VALUE   -> stores the 8 bytes VALUE (little-endian) at
 *                         kernel virtual VADDR through a fresh writable
 *                         mapping of its physical page, reads them back,
 *                         restores the old bytes: "old O new N" (hex u64)
 *   cr N CLEAR         -> mov to CRN (0 or 4) of its value with the bits
 *                         CLEAR cleared, read back, restore the old value:
 *                         "old O new N"
 *   msrxor MSR MASK    -> wrmsr of its value XOR MASK, rdmsr back, wrmsr
 *                         of the old value: "old O new N"
 *   vmcall RAX RDI RSI RDX -> VMCALL (okernel's hypercall; #UD without a
 *                         hypervisor): "rax A rdi D rsi S"
 *   cred               -> the kernel virtual address of the calling task's
 *                         credentials' uid (slab memory)
 * The gadgets restore what they changed so that, without okernel, the
 * negative control goes on after proving the write took effect; they run
 * with interrupts off so that nothing uses the changed state meanwhile.
 */

#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/cred.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <asm/pgtable_types.h>

#define ANSWER 128

/* A fresh kernel mapping of the page holding `phys`: vmap of its struct
 * page for RAM (writable, whatever the kernel's own mappings say), else
 * memremap. Returns the mapping of the page; *ram says which to undo. */
static void *map_page(phys_addr_t phys, bool *ram)
{
	unsigned long pfn = PHYS_PFN(phys);

	*ram = pfn_valid(pfn) && page_is_ram(pfn);
	if (*ram) {
		struct page *page = pfn_to_page(pfn);

		return vmap(&page, 1, VM_MAP, PAGE_KERNEL);
	}
	return memremap(phys & PAGE_MASK, PAGE_SIZE, MEMREMAP_WB);
}

static void unmap_page(void *p, bool ram)
{
	if (ram)
		vunmap(p);
	else
		memunmap(p);
}

/* The 16 bytes at `phys` (not crossing its page), hex, into `answer`. */
static int dump(char *answer, phys_addr_t phys)
{
	size_t at = phys & ~PAGE_MASK;
	void *page;
	bool ram;
	int i, n;

	page = map_page(phys, &ram);
	if (!page)
		return -ENOMEM;
	for (i = 0, n = 0; i < 16; i++)
		n += scnprintf(answer + n, ANSWER - n, "%02x",
			       ((volatile u8 *)page)[at + i]);
	unmap_page(page, ram);
	return 0;
}

/* Byte by byte and volatile: the compiler may neither merge nor drop the
 * read back of what was just written. */
static void copy8(void *to, const void *from)
{
	int i;

	for (i = 0; i < 8; i++)
		((volatile u8 *)to)[i] = ((const volatile u8 *)from)[i];
}

/* The 8 bytes at kernel virtual `virt` (not crossing its page) through a
 * fresh writable mapping: replaced by *value, read back into *value, then
 * restored; *old gets what was there. */
static int poke(unsigned long virt, u64 *old, u64 *value)
{
	phys_addr_t phys = slow_virt_to_phys((void *)virt);
	unsigned long flags;
	void *page, *at;
	bool ram;

	if ((virt & ~PAGE_MASK) > PAGE_SIZE - 8)
		return -EINVAL;
	page = map_page(phys, &ram);
	if (!page)
		return -ENOMEM;
	at = page + (virt & ~PAGE_MASK);
	local_irq_save(flags);
	copy8(old, at);
	copy8(at, value);
	copy8(value, at);
	copy8(at, old);
	local_irq_restore(flags);
	unmap_page(page, ram);
	return 0;
}

/* mov to CR0 or CR4 with `clear` cleared, raw: not Linux's
 * native_write_cr0/cr4, which pin these bits themselves. */
static int cr_gadget(int n, u64 clear, u64 *old, u64 *now)
{
	unsigned long flags;
	u64 v;

	local_irq_save(flags);
	if (n == 0)
		asm volatile("mov %%cr0, %0" : "=r"(v));
	else
		asm volatile("mov %%cr4, %0" : "=r"(v));
	*old = v;
	v &= ~clear;
	if (n == 0) {
		asm volatile("mov %0, %%cr0" : : "r"(v) : "memory");
		asm volatile("mov %%cr0, %0" : "=r"(*now));
		asm volatile("mov %0, %%cr0" : : "r"(*old) : "memory");
	} else {
		asm volatile("mov %0, %%cr4" : : "r"(v) : "memory");
		asm volatile("mov %%cr4, %0" : "=r"(*now));
		asm volatile("mov %0, %%cr4" : : "r"(*old) : "memory");
	}
	local_irq_restore(flags);
	return 0;
}

static u64 rdmsr_raw(u32 msr)
{
	u32 lo, hi;

	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static void wrmsr_raw(u32 msr, u64 v)
{
	asm volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32))
		     : "memory");
}

static void msr_gadget(u32 msr, u64 mask, u64 *old, u64 *now)
{
	unsigned long flags;

	local_irq_save(flags);
	*old = rdmsr_raw(msr);
	wrmsr_raw(msr, *old ^ mask);
	*now = rdmsr_raw(msr);
	wrmsr_raw(msr, *old);
	local_irq_restore(flags);
}

static ssize_t vuln_write(struct file *file, const char __user *ubuf,
			  size_t len, loff_t *off)
{
	char *answer = file->private_data;
	char cmd[96];
	unsigned long long a, b, c, d;
	u64 old, now;
	void *page;
	bool ram;
	int err;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, len))
		return -EFAULT;
	cmd[len] = '\0';
	if (sscanf(cmd, "read %llx", &a) == 1 &&
	    (a & ~PAGE_MASK) <= PAGE_SIZE - 16) {
		err = dump(answer, a);
		if (err)
			return err;
	} else if (sscanf(cmd, "write %llx %llx", &a, &b) == 2 &&
		   IS_ALIGNED(a, 8)) {
		page = map_page(a, &ram);
		if (!page)
			return -ENOMEM;
		*(volatile u64 *)(page + (a & ~PAGE_MASK)) = b;
		unmap_page(page, ram);
		strscpy(answer, "ok", ANSWER);
	} else if (sscanf(cmd, "rvirt %llx", &a) == 1 &&
		   (a & ~PAGE_MASK) <= PAGE_SIZE - 16 && virt_addr_valid(a)) {
		err = dump(answer, slow_virt_to_phys((void *)a));
		if (err)
			return err;
	} else if (sscanf(cmd, "poke %llx %llx", &a, &b) == 2 &&
		   virt_addr_valid(a)) {
		now = b;
		err = poke(a, &old, &now);
		if (err)
			return err;
		scnprintf(answer, ANSWER, "old %llx new %llx", old, now);
	} else if (sscanf(cmd, "cr %llu %llx", &a, &b) == 2 &&
		   (a == 0 || a == 4)) {
		cr_gadget(a, b, &old, &now);
		scnprintf(answer, ANSWER, "old %llx new %llx", old, now);
	} else if (sscanf(cmd, "msrxor %llx %llx", &a, &b) == 2 &&
		   a <= U32_MAX) {
		msr_gadget(a, b, &old, &now);
		scnprintf(answer, ANSWER, "old %llx new %llx", old, now);
	} else if (sscanf(cmd, "vmcall %llx %llx %llx %llx", &a, &b, &c,
			  &d) == 4) {
		asm volatile("vmcall"
			     : "+a"(a), "+D"(b), "+S"(c)
			     : "d"(d)
			     : "rcx", "memory");
		scnprintf(answer, ANSWER, "rax %llx rdi %llx rsi %llx", a, b,
			  c);
	} else if (strncmp(cmd, "cred", 4) == 0) {
		scnprintf(answer, ANSWER, "%lx",
			  (unsigned long)&current_cred()->uid);
	} else {
		return -EINVAL;
	}
	return len;
}

static ssize_t vuln_read(struct file *file, char __user *ubuf, size_t len,
			 loff_t *off)
{
	char *answer = file->private_data;

	return simple_read_from_buffer(ubuf, len, off, answer, strlen(answer));
}

static int vuln_open(struct inode *inode, struct file *file)
{
	file->private_data = kzalloc(ANSWER, GFP_KERNEL);
	return file->private_data ? 0 : -ENOMEM;
}

static int vuln_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static const struct proc_ops vuln_ops = {
	.proc_open = vuln_open,
	.proc_release = vuln_release,
	.proc_write = vuln_write,
	.proc_read = vuln_read,
	.proc_lseek = default_llseek,
};

static struct proc_dir_entry *entry;

static int __init vuln_init(void)
{
	entry = proc_create("okernel-vuln", 0600, NULL, &vuln_ops);
	if (!entry)
		return -ENOMEM;
	pr_warn("okernel_vuln: TEST BUILD: arbitrary physical read/write at /proc/okernel-vuln\n");
	return 0;
}

static void __exit vuln_exit(void)
{
	proc_remove(entry);
}

module_init(vuln_init);
module_exit(vuln_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("okernel test images only: a deliberate arbitrary physical read/write");
