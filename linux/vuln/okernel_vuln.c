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
 * /proc/okernel-vuln (0600): write a command, read the answer.
 *   read PHYS          -> 16 bytes at PHYS, hex
 *   write PHYS VALUE   -> stores the 8-byte VALUE at PHYS ("ok")
 */

#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

static DEFINE_MUTEX(lock);
static char answer[128];

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

static ssize_t vuln_write(struct file *file, const char __user *ubuf,
			  size_t len, loff_t *off)
{
	char cmd[96];
	unsigned long long phys, value;
	void *page;
	bool ram;
	size_t at;
	int i, n;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, len))
		return -EFAULT;
	cmd[len] = '\0';
	mutex_lock(&lock);
	if (sscanf(cmd, "read %llx", &phys) == 1 &&
	    (phys & ~PAGE_MASK) <= PAGE_SIZE - 16) {
		page = map_page(phys, &ram);
		if (!page)
			goto nomap;
		at = phys & ~PAGE_MASK;
		for (i = 0, n = 0; i < 16; i++)
			n += scnprintf(answer + n, sizeof(answer) - n, "%02x",
				       ((volatile u8 *)page)[at + i]);
		unmap_page(page, ram);
	} else if (sscanf(cmd, "write %llx %llx", &phys, &value) == 2 &&
		   IS_ALIGNED(phys, 8)) {
		page = map_page(phys, &ram);
		if (!page)
			goto nomap;
		*(volatile u64 *)(page + (phys & ~PAGE_MASK)) = value;
		unmap_page(page, ram);
		strscpy(answer, "ok", sizeof(answer));
	} else {
		mutex_unlock(&lock);
		return -EINVAL;
	}
	mutex_unlock(&lock);
	return len;
nomap:
	mutex_unlock(&lock);
	return -ENOMEM;
}

static ssize_t vuln_read(struct file *file, char __user *ubuf, size_t len,
			 loff_t *off)
{
	ssize_t r;

	mutex_lock(&lock);
	r = simple_read_from_buffer(ubuf, len, off, answer, strlen(answer));
	mutex_unlock(&lock);
	return r;
}

static const struct proc_ops vuln_ops = {
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
