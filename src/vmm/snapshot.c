#include "vmm/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/devices/serial.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"
#include "vmm/snapfile.h"
#include "vmm/vcpu.h"
#include "vmm/virtio/mmio.h"

#define PAGE 4096u

/* A regular file open for writing at chosen offsets. */
static const char *check_fd(int fd, struct stat *st)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fstat(fd, st) < 0)
		return "is not an open file";
	if (!S_ISREG(st->st_mode))
		return "is not a regular file";
	if ((fl & O_ACCMODE) == O_RDONLY)
		return "is not open for writing";
	if (fl & O_APPEND)
		return "is open in append mode";
	return NULL;
}

static const char *check_fds(int state_fd, int mem_fd, char *why, size_t whylen)
{
	struct stat a, b;
	const char *bad;

	bad = check_fd(state_fd, &a);
	if (bad) {
		snprintf(why, whylen, "the state file %s", bad);
		return why;
	}
	bad = check_fd(mem_fd, &b);
	if (bad) {
		snprintf(why, whylen, "the memory file %s", bad);
		return why;
	}
	if (a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
		snprintf(why, whylen, "the state and memory files are the same file");
		return why;
	}
	return NULL;
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static bool page_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (unsigned i = 0; i < PAGE / sizeof(*w); i++)
		if (w[i])
			return false;
	return true;
}

/* One region's pages at file offset base: runs of non-zero pages are
 * written, zero pages stay holes. */
static int save_region(int fd, const struct mem_region *r, uint64_t base, uint64_t *written)
{
	const uint8_t *h = r->host;
	uint64_t run = 0, at = 0;
	int ret = 0;

	for (uint64_t off = 0; off <= r->size && !ret; off += PAGE) {
		bool data = off < r->size && !page_zero(h + off);

		if (data && !run)
			at = off;
		if (data) {
			run += PAGE;
			continue;
		}
		if (run)
			ret = pwrite_all(fd, h + at, run, base + at);
		*written += run;
		run = 0;
	}
	return ret;
}

int snapshot_write_memory(const struct guest_mem *m, int fd, struct snap_memory *layout,
			  uint64_t *written)
{
	uint64_t off = 0;
	int ret;

	memset(layout, 0, sizeof(*layout));
	*written = 0;
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)guest_mem_size(m)) < 0)
		return -errno;
	layout->nregions = guest_mem_nregions(m);
	for (unsigned i = 0; i < layout->nregions && i < SNAP_MAX_REGIONS; i++) {
		const struct mem_region *r = guest_mem_region(m, i);

		layout->regions[i].gpa = r->gpa;
		layout->regions[i].size = r->size;
		layout->regions[i].file_offset = off;
		ret = save_region(fd, r, off, written);
		if (ret)
			return ret;
		off += r->size;
	}
	return 0;
}

/* The in-kernel irqchips (PIC master, PIC slave, IOAPIC), PIT and kvmclock. */
static int save_vm(struct kvm_vm *vm, struct snap_buf *b)
{
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;

	for (uint32_t i = 0; i < 3; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i; /* KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC */
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return -errno;
		snap_add(b, SNAP_SEC_IRQCHIP, 0, i, &chip, sizeof(chip));
	}
	memset(&pit, 0, sizeof(pit));
	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0 || ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return -errno;
	snap_add(b, SNAP_SEC_PIT, 0, 0, &pit, sizeof(pit));
	snap_add(b, SNAP_SEC_CLOCK, 0, 0, &clock, sizeof(clock));
	return b->err;
}

static int save_devices(const struct snapshot_src *src, struct snap_buf *b)
{
	uint8_t dev[SNAP_MAX_DEV_STATE];
	struct snap_virtio v;
	int ret = 0;

	for (unsigned i = 0; i < src->ndevs && !ret; i++) {
		ret = virtio_mmio_save_locked(src->devs[i].mmio, &v, dev, sizeof(dev));
		v.mmio_base = src->devs[i].base;
		v.gsi = src->devs[i].gsi;
		if (!ret)
			snap_add2(b, SNAP_SEC_VIRTIO, i, &v, sizeof(v), dev, v.dev_len);
		if (!ret)
			ret = b->err;
	}
	return ret;
}

/* Every vCPU's sections, each vCPU's from its own thread, appended in order. */
static int save_vcpus(const struct snapshot_src *src, struct snap_buf *b)
{
	struct snap_buf parts[VCPU_MAX];
	int ret;

	memset(parts, 0, sizeof(parts));
	ret = vcpus_save(src->vcpus, src->nvcpus, parts);
	for (unsigned i = 0; i < src->nvcpus; i++) {
		if (!ret)
			snap_append(b, &parts[i]);
		snap_buf_free(&parts[i]);
	}
	return ret ? ret : b->err;
}

static void header(const struct snapshot_src *src, struct snap_cpu *cpu, struct snap_vm *vm)
{
	const struct kvm_cpuid2 *c = src->vm->supported_cpuid;

	snap_cpu_from_cpuid(cpu, c->entries, c->nent);
	memset(vm, 0, sizeof(*vm));
	vm->cpus = src->nvcpus;
	vm->ndevices = src->ndevs;
	vm->mem_size = guest_mem_size(src->vm->mem);
	for (unsigned i = 0; i < src->ndevs && i < SNAP_MAX_DEVICES; i++)
		vm->device_ids[i] = src->devs[i].device_id;
}

int snapshot_save(const struct snapshot_src *src, int state_fd, int mem_fd,
		  struct snapshot_result *res, char *why, size_t whylen)
{
	struct snap_memory layout;
	struct snap_cpu cpu;
	struct snap_vm vm;
	struct snap_buf b;
	const char *step = "";
	int ret = -EINVAL;

	memset(res, 0, sizeof(*res));
	memset(&b, 0, sizeof(b));
	if (check_fds(state_fd, mem_fd, why, whylen))
		goto out;
	if (src->nvcpus == 0 || src->nvcpus > SNAP_MAX_CPUS || src->ndevs > SNAP_MAX_DEVICES) {
		snprintf(why, whylen, "this VM has more vCPUs or devices than a state file holds");
		goto out;
	}
	header(src, &cpu, &vm);
	snap_begin(&b, &cpu, &vm);
	/* Device threads (vsock, net) go on moving data while the vCPUs are
	 * paused, writing used rings and rx buffers in guest RAM. Every
	 * transport stays locked, in device order, from here until the RAM is
	 * written: the devices' state, the interrupts they raise and the RAM
	 * are one moment's. They only wait for a thread's current batch. */
	for (unsigned i = 0; i < src->ndevs; i++)
		virtio_mmio_lock(src->devs[i].mmio);
	step = "the vCPUs' state";
	ret = save_vcpus(src, &b);
	if (!ret) {
		step = "the irqchips, PIT or clock";
		ret = save_vm(src->vm, &b);
	}
	if (!ret) {
		step = "a device";
		ret = save_devices(src, &b);
	}
	if (!ret && src->serial) {
		struct snap_serial ser;

		serial_save(src->serial, &ser);
		snap_add(&b, SNAP_SEC_SERIAL, 0, 0, &ser, sizeof(ser));
		ret = b.err;
	}
	if (!ret) {
		step = "the memory file";
		ret = snapshot_write_memory(src->vm->mem, mem_fd, &layout, &res->mem_bytes);
	}
	for (unsigned i = src->ndevs; i-- > 0;)
		virtio_mmio_unlock(src->devs[i].mmio);
	if (!ret) {
		snap_add(&b, SNAP_SEC_MEMORY, 0, 0, &layout, sizeof(layout));
		step = "the state file";
		ret = snap_finish(&b);
	}
	if (!ret && ftruncate(state_fd, 0) < 0)
		ret = -errno;
	if (!ret)
		ret = pwrite_all(state_fd, b.data, b.len, 0);
	if (ret)
		snprintf(why, whylen, "cannot save %s: %s", step, strerror(-ret));
	else
		res->state_bytes = b.len;
out:
	snap_buf_free(&b);
	return ret;
}
