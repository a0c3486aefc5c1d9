#include "vmm/restore.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/config.h"
#include "vmm/cpuid.h"
#include "vmm/devices/serial.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"
#include "vmm/virtio/mmio.h"
#include "vmm/virtio/virtio.h"

struct restore {
	uint8_t *buf;		/* the state file */
	size_t len;
	struct snap_file f;
	int mem_fd;
};

static const char *dev_name(uint32_t id)
{
	switch (id) {
	case VIRTIO_ID_NET:
		return "virtio-net";
	case VIRTIO_ID_BLOCK:
		return "virtio-blk";
	case VIRTIO_ID_RNG:
		return "virtio-rng";
	case VIRTIO_ID_VSOCK:
		return "virtio-vsock";
	default:
		return "an unknown device";
	}
}

/* The layout guest_mem_create() makes for this size (src/vmm/memory.c). */
static const char *check_layout(const struct snap_file *f, uint64_t size)
{
	const struct snap_sec *s = snap_find(f, SNAP_SEC_MEMORY, 0);
	uint64_t low = size < MEM_HOLE_START ? size : MEM_HOLE_START;
	struct snap_memory m;

	if (!s || s->len != sizeof(m))
		return "the state file has no memory layout";
	memcpy(&m, s->payload, sizeof(m));
	if (m.nregions != (size > low ? 2u : 1u) || m.regions[0].gpa != 0 ||
	    m.regions[0].size != low || m.regions[0].file_offset != 0)
		return "the state file's memory layout is not this VMM's";
	if (m.nregions == 2 && (m.regions[1].gpa != MEM_4G || m.regions[1].size != size - low ||
				m.regions[1].file_offset != low))
		return "the state file's memory layout is not this VMM's";
	return NULL;
}

int restore_check(const struct snap_file *f, const struct restore_want *want,
		  uint64_t mem_file_size, char *why, size_t whylen)
{
	const struct snap_vm *vm = &f->hdr.vm;
	const char *bad;
	unsigned n;

	if (vm->cpus != want->cpus) {
		snprintf(why, whylen, "the snapshot has %u vCPUs, --cpus says %u", vm->cpus, want->cpus);
		return -EINVAL;
	}
	if (vm->mem_size != want->mem_size) {
		snprintf(why, whylen, "the snapshot has %llu MiB of RAM, --mem says %llu",
			 (unsigned long long)(vm->mem_size >> 20),
			 (unsigned long long)(want->mem_size >> 20));
		return -EINVAL;
	}
	for (unsigned i = 0; i < vm->ndevices && i < SNAP_MAX_DEVICES; i++)
		if (vm->device_ids[i] == VIRTIO_ID_NET) {
			snprintf(why, whylen, "the snapshot has %s (device %u), which cannot be "
				 "restored yet", dev_name(vm->device_ids[i]), i);
			return -EINVAL;
		}
	n = vm->ndevices > want->ndevices ? vm->ndevices : want->ndevices;
	for (unsigned i = 0; i < n && i < SNAP_MAX_DEVICES; i++) {
		uint32_t had = i < vm->ndevices ? vm->device_ids[i] : 0;
		uint32_t has = i < want->ndevices ? want->device_ids[i] : 0;

		if (had == has)
			continue;
		if (!has)
			snprintf(why, whylen, "the snapshot has %s as device %u, the new VM has none "
				 "there", dev_name(had), i);
		else if (!had)
			snprintf(why, whylen, "the new VM has %s as device %u, the snapshot has none "
				 "there", dev_name(has), i);
		else
			snprintf(why, whylen, "device %u is %s in the snapshot, %s in the new VM", i,
				 dev_name(had), dev_name(has));
		return -EINVAL;
	}
	bad = check_layout(f, vm->mem_size);
	if (bad) {
		snprintf(why, whylen, "%s", bad);
		return -EINVAL;
	}
	if (mem_file_size != vm->mem_size) {
		snprintf(why, whylen, "the memory file is %llu bytes, the snapshot's RAM %llu",
			 (unsigned long long)mem_file_size, (unsigned long long)vm->mem_size);
		return -EINVAL;
	}
	return 0;
}

int restore_host_cpu(struct snap_cpu *cpu)
{
	struct kvm_cpuid2 *c = NULL;
	int fd, ret = -ENOMEM;

	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		goto out;
	c->nent = CPUID_MAX_ENTRIES;
	ret = ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) < 0 ? -errno : 0;
	if (!ret)
		snap_cpu_from_cpuid(cpu, c->entries, c->nent);
out:
	free(c);
	close(fd);
	return ret;
}

/* The whole state file, bounded by SNAP_MAX_FILE. */
static int read_state(int fd, uint8_t **out, size_t *len, char *why, size_t whylen)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;

	*out = NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "the state file is not a regular file");
		return -EINVAL;
	}
	if (st.st_size <= 0 || (uint64_t)st.st_size > SNAP_MAX_FILE) {
		snprintf(why, whylen, "the state file is %lld bytes (1 to %u)", (long long)st.st_size,
			 SNAP_MAX_FILE);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != (size_t)st.st_size) {
		free(buf);
		snprintf(why, whylen, "cannot read the state file");
		return -EIO;
	}
	*out = buf;
	*len = got;
	return 0;
}

static int open_in(const char *dir, const char *name, char *why, size_t whylen)
{
	char path[CONFIG_MAX_PATH + 8];
	int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd;

	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(why, whylen, "--restore: the directory's path is too long");
		return -ENAMETOOLONG;
	}
	/* O_NONBLOCK: a FIFO put there must not hang us in open(); it is
	 * refused as not a regular file. Regular files ignore the flag. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		int err = errno;

		snprintf(why, whylen, "cannot open %s: %s", path, strerror(err));
		return -err;
	}
	return fd;
}

int restore_open(struct restore **out, const char *dir, const struct snap_cpu *host,
		 const struct restore_want *want, char *why, size_t whylen)
{
	struct restore *r;
	struct stat st;
	char bad[192];
	int sfd = -1, ret = -ENOMEM;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		goto out;
	r->mem_fd = -1;
	sfd = ret = open_in(dir, "state", why, whylen);
	if (ret < 0)
		goto out;
	ret = read_state(sfd, &r->buf, &r->len, why, whylen);
	if (ret)
		goto out;
	ret = snap_parse(r->buf, r->len, host, &r->f, bad, sizeof(bad));
	if (ret) {
		snprintf(why, whylen, "state file: %s", bad);
		goto out;
	}
	r->mem_fd = ret = open_in(dir, "mem", why, whylen);
	if (ret < 0)
		goto out;
	if (fstat(r->mem_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "the memory file is not a regular file");
		ret = -EINVAL;
		goto out;
	}
	ret = restore_check(&r->f, want, (uint64_t)st.st_size, why, whylen);
	if (ret)
		goto out;
	*out = r;
	r = NULL;
out:
	if (sfd >= 0)
		close(sfd);
	restore_free(r);
	return ret < 0 ? ret : 0;
}

void restore_free(struct restore *r)
{
	if (!r)
		return;
	snap_file_free(&r->f);
	free(r->buf);
	if (r->mem_fd >= 0)
		close(r->mem_fd);
	free(r);
}

const struct snap_file *restore_file(const struct restore *r)
{
	return &r->f;
}

int restore_mem_fd(const struct restore *r)
{
	return r->mem_fd;
}

/* One KVM_SET_* on the VM from a section the parser sized. */
static int set_vm(const struct restore *r, struct kvm_vm *vm, unsigned long req, uint32_t type,
		  uint32_t index, void *buf, size_t len, char *why, size_t whylen)
{
	const struct snap_sec *s = snap_find(&r->f, type, index);

	if (!s || s->len != len) {
		snprintf(why, whylen, "the state file's %s %u is missing", snap_sec_name(type), index);
		return -EINVAL;
	}
	memcpy(buf, s->payload, len);
	if (ioctl(vm->vm_fd, req, buf) < 0) {
		int err = errno;

		snprintf(why, whylen, "KVM refused the saved %s %u: %s", snap_sec_name(type), index,
			 strerror(err));
		return -err;
	}
	return 0;
}

int restore_vm(const struct restore *r, struct kvm_vm *vm, char *why, size_t whylen)
{
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	int ret = 0;

	for (uint32_t i = 0; i < 3 && !ret; i++) {
		ret = set_vm(r, vm, KVM_SET_IRQCHIP, SNAP_SEC_IRQCHIP, i, &chip, sizeof(chip), why,
			     whylen);
		if (!ret && chip.chip_id != i) {
			snprintf(why, whylen, "the state file's irqchip %u names chip %u", i,
				 chip.chip_id);
			ret = -EINVAL;
		}
	}
	if (!ret)
		ret = set_vm(r, vm, KVM_SET_PIT2, SNAP_SEC_PIT, 0, &pit, sizeof(pit), why, whylen);
	if (!ret) {
		const struct snap_sec *s = snap_find(&r->f, SNAP_SEC_CLOCK, 0);

		/* The clock goes on from where it was saved: no flags (not
		 * KVM_CLOCK_REALTIME, which would add the time since). */
		memcpy(&clock, s->payload, sizeof(clock));
		clock.flags = 0;
		clock.realtime = 0;
		clock.host_tsc = 0;
		if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0) {
			ret = -errno;
			snprintf(why, whylen, "KVM refused the saved clock: %s", strerror(-ret));
		}
	}
	return ret;
}

int restore_virtio(const struct restore *r, unsigned slot, struct virtio_mmio_dev *mmio,
		   uint64_t base, uint32_t gsi, char *why, size_t whylen)
{
	const struct snap_sec *s = snap_find(&r->f, SNAP_SEC_VIRTIO, slot);
	struct snap_virtio v;

	if (!s || s->len < sizeof(v)) {
		snprintf(why, whylen, "the state file has no device %u", slot);
		return -EINVAL;
	}
	memcpy(&v, s->payload, sizeof(v));
	if (v.mmio_base != base || v.gsi != gsi) {
		snprintf(why, whylen, "device %u: saved at 0x%llx IRQ %u, the new VM has it at "
			 "0x%llx IRQ %u", slot, (unsigned long long)v.mmio_base, v.gsi,
			 (unsigned long long)base, gsi);
		return -EINVAL;
	}
	return virtio_mmio_restore(mmio, &v, s->payload + sizeof(v), why, whylen);
}

void restore_serial(const struct restore *r, struct serial *s)
{
	const struct snap_sec *sec = snap_find(&r->f, SNAP_SEC_SERIAL, 0);
	struct snap_serial ser;

	if (!sec || sec->len != sizeof(ser))
		return;
	memcpy(&ser, sec->payload, sizeof(ser));
	serial_restore(s, &ser);
}
