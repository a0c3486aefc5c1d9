#include "vmm/snapinspect.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/exit.h"
#include "vmm/snapfile.h"

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u

/* The whole file, at most SNAP_MAX_FILE bytes. 0 or -errno (-EFBIG). */
static int slurp(const char *path, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, ret = -EINVAL;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto out;
	ret = -EFBIG;
	if (st.st_size > (off_t)SNAP_MAX_FILE)
		goto out;
	ret = -ENOMEM;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		goto out;
	ret = 0;
	while (!ret && got <= (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size + 1 - got);

		if (n < 0 && errno != EINTR)
			ret = -errno;
		else if (n == 0)
			break;
		else if (n > 0)
			got += (size_t)n;
	}
	if (!ret && got > (size_t)st.st_size)
		ret = -EFBIG; /* grew while read */
	if (!ret) {
		*out = buf;
		*len = got;
		buf = NULL;
	}
out:
	free(buf);
	close(fd);
	return ret;
}

static void print_msrs(const struct snap_sec *s)
{
	struct snap_msrs h;
	struct kvm_msr_entry e;
	int kvmclock = 0;

	memcpy(&h, s->payload, sizeof(h));
	for (uint32_t i = 0; i < h.count; i++) {
		memcpy(&e, s->payload + sizeof(h) + i * sizeof(e), sizeof(e));
		kvmclock |= e.index == MSR_KVM_SYSTEM_TIME_NEW;
	}
	printf(" count %u kvmclock-msr %s", h.count, kvmclock ? "yes" : "no");
}

/* Where a vCPU was (the parser checked the sections' sizes). */
static void print_regs(const struct snap_sec *s)
{
	struct kvm_regs r;

	memcpy(&r, s->payload, sizeof(r));
	printf(" rip 0x%llx rsp 0x%llx rflags 0x%llx", (unsigned long long)r.rip,
	       (unsigned long long)r.rsp, (unsigned long long)r.rflags);
}

static void print_sregs(const struct snap_sec *s)
{
	struct kvm_sregs r;

	memcpy(&r, s->payload, sizeof(r));
	printf(" cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx cs 0x%x gs-base 0x%llx",
	       (unsigned long long)r.cr0, (unsigned long long)r.cr3, (unsigned long long)r.cr4,
	       (unsigned long long)r.efer, r.cs.selector, (unsigned long long)r.gs.base);
}

static void print_virtio(const struct snap_sec *s)
{
	struct snap_virtio v;

	memcpy(&v, s->payload, sizeof(v));
	printf(" device-id %u base 0x%llx gsi %u status 0x%x features 0x%llx queues %u dev-state %u",
	       v.device_id, (unsigned long long)v.mmio_base, v.gsi, v.status,
	       (unsigned long long)v.driver_features, v.num_queues, v.dev_len);
	for (uint32_t i = 0; i < v.num_queues; i++)
		printf(" q%u=%s/%u/avail:%u/used:%u", i, v.queues[i].ready ? "ready" : "off",
		       v.queues[i].size, v.queues[i].last_avail, v.queues[i].next_used);
}

static void print_memory(const struct snap_sec *s)
{
	struct snap_memory m;

	memcpy(&m, s->payload, sizeof(m));
	for (uint32_t i = 0; i < m.nregions; i++)
		printf(" gpa 0x%llx size 0x%llx at 0x%llx", (unsigned long long)m.regions[i].gpa,
		       (unsigned long long)m.regions[i].size,
		       (unsigned long long)m.regions[i].file_offset);
}

static void print_file(const struct snap_file *f, size_t len)
{
	const struct snap_header *h = &f->hdr;

	printf("snapshot version %u bytes %zu sections %u\n", h->version, len, h->nsections);
	printf("cpu vendor %.12s family %u model %u stepping %u", h->cpu.vendor, h->cpu.family,
	       h->cpu.model, h->cpu.stepping);
	for (unsigned i = 0; i < SNAP_CPUID_LEAVES; i++)
		printf(" leaf 0x%x.%u %08x:%08x:%08x:%08x", h->cpu.leaves[i].function,
		       h->cpu.leaves[i].index, h->cpu.leaves[i].eax, h->cpu.leaves[i].ebx,
		       h->cpu.leaves[i].ecx, h->cpu.leaves[i].edx);
	printf("\nvm cpus %u mem %llu devices %u\n", h->vm.cpus, (unsigned long long)h->vm.mem_size,
	       h->vm.ndevices);
	for (unsigned i = 0; i < f->nsec; i++) {
		const struct snap_sec *s = &f->sec[i];

		printf("section %s %u bytes %u", snap_sec_name(s->type), s->index, s->len);
		if (s->type == SNAP_SEC_REGS)
			print_regs(s);
		else if (s->type == SNAP_SEC_SREGS)
			print_sregs(s);
		else if (s->type == SNAP_SEC_MSRS)
			print_msrs(s);
		else if (s->type == SNAP_SEC_VIRTIO)
			print_virtio(s);
		else if (s->type == SNAP_SEC_MEMORY)
			print_memory(s);
		printf("\n");
	}
}

int snapshot_inspect(const char *path)
{
	struct snap_file f;
	char why[256];
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret;

	ret = slurp(path, &buf, &len);
	if (ret) {
		fprintf(stderr, "kiln-vmm: %s: %s\n", path,
			ret == -EFBIG ? "larger than a state file can be (64 MiB)" :
			ret == -EINVAL ? "not a regular file" : strerror(-ret));
		return VMM_EXIT_USAGE;
	}
	ret = snap_parse(buf, len, NULL, &f, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "kiln-vmm: %s: %s\n", path, why);
		free(buf);
		return VMM_EXIT_USAGE;
	}
	print_file(&f, len);
	snap_file_free(&f);
	free(buf);
	return fflush(stdout) == 0 ? 0 : VMM_EXIT_ERROR;
}
