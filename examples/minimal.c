/* SPDX-License-Identifier: MIT */
/*
 * minimal - the smallest complete libvmaretry program.
 *
 * One space (the mm_struct), one region in it (a vm_area_struct) whose
 * fault handler "installs" a page by filling the faulting thread's page
 * buffer, one fault through vmr_handle_fault() (the kernel's
 * do_user_addr_fault() + handle_mm_fault()), then the result, the space's
 * counters, and a clean teardown.  It exits non-zero if the page is wrong.
 *
 * Addresses in a space are just numbers: the library manages the map of
 * regions, the locks and the retry protocol; what a page "is" belongs to
 * the handler (a userfaultfd pager copies it into the process with
 * UFFDIO_COPY, a runtime fills its own heap).  Copy it freely; it compiles
 * as C11 and as C++:
 *
 *   cc -o minimal minimal.c $(pkg-config --cflags --libs libvmaretry)
 */
#include <vmaretry.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE ((uintptr_t)0x100000000) /* where the region starts */
#define NPAGES 16

static size_t page_size;

/* The byte at @off of the backing store: any function will do. */
static unsigned char content(uint64_t off)
{
	return (unsigned char)(off % 251);
}

/*
 * The region's ->fault.  The engine calls it holding the region's
 * VMA-range read lock (VMR_FAULT_FLAG_VMA_LOCK in vmf->flags), so the
 * region cannot change under it.  A handler that had to wait for I/O
 * would call vmr_fault_release_for_io() first (see runtime_heap.c).
 */
static vmr_fault_t fill_page(struct vmr_fault *vmf)
{
	unsigned char *buf = (unsigned char *)vmf->ctx;
	uint64_t off = vmr_region_offset(vmf->region) +
		       (vmf->address - vmr_region_start(vmf->region));
	size_t i;

	for (i = 0; i < page_size; i++)
		buf[i] = content(off + i);
	return 0; /* done: the engine releases the lock */
}

int main(void)
{
	struct vmr_space_config cfg;
	struct vmr_region_ops ops;
	struct vmr_region_desc desc;
	struct vmr_stats st;
	const struct rcu_flavor_struct *flavor;
	struct vmr_space *space;
	uintptr_t addr;
	unsigned char *buf;
	vmr_fault_t res = 0;
	size_t i, bad = 0;
	int ret;

	memset(&cfg, 0, sizeof(cfg)); /* defaults: system page size, */
	cfg.flags = VMR_SPACE_TIME_FAULTS; /* RETRY_VMA, urcu-memb */
	ret = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (ret < 0) {
		fprintf(stderr, "vmr_space_create: %s\n", strerror(-ret));
		return 1;
	}
	flavor = vmr_space_flavor(space);
	vmr_space_register_thread(space); /* every thread that faults */
	page_size = vmr_space_page_size(space);
	addr = BASE + 3 * page_size + 100; /* inside page 3 */

	memset(&ops, 0, sizeof(ops));
	ops.fault = fill_page;
	memset(&desc, 0, sizeof(desc));
	desc.start = BASE;
	desc.len = NPAGES * page_size;
	desc.prot = VMR_PROT_READ | VMR_PROT_WRITE;
	desc.offset = 0; /* backing-store offset of BASE (vm_pgoff) */
	desc.ops = &ops;
	desc.ops_size = sizeof(ops);
	ret = vmr_map(space, &desc, sizeof(desc), 0);

	buf = (unsigned char *)malloc(page_size);
	if (ret == 0 && buf)
		ret = vmr_handle_fault(space, addr, VMR_FAULT_FLAG_DEFAULT |
						    VMR_FAULT_FLAG_USER,
				       buf, &res);
	if (ret < 0 || !buf) {
		fprintf(stderr, "vmr_map/vmr_handle_fault: %s\n",
			buf ? strerror(-ret) : "out of memory");
		return 1;
	}
	for (i = 0; res == 0 && i < page_size; i++)
		bad += buf[i] != content(addr / page_size * page_size - BASE + i);
	printf("fault at %#lx: result %#x (%s), %zu wrong bytes\n",
	       (unsigned long)addr, res, res ? "error" : "ok", bad);

	vmr_space_stats(space, &st, sizeof(st));
	printf("faults %llu, vma_lock_success %llu, vma_lock_abort %llu, "
	       "space_lock_faults %llu, result_ok %llu, latency <= %llu ns\n",
	       (unsigned long long)st.faults,
	       (unsigned long long)st.vma_lock_success,
	       (unsigned long long)st.vma_lock_abort,
	       (unsigned long long)st.space_lock_faults,
	       (unsigned long long)st.result_ok,
	       (unsigned long long)vmr_hist_percentile(st.fault_latency_hist,
						       50));

	free(buf);
	/* Destroy unmaps what is left; it needs a registered thread, so the
	 * flavor is kept to unregister with once the space is gone. */
	ret = vmr_space_destroy(space);
	vmr_rcu_unregister_thread(flavor);
	return ret < 0 || res != 0 || bad || st.faults != 1 ||
	       st.vma_lock_success != 1;
}
