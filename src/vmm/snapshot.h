/*
 * Saving a paused VM (CTL_SNAPSHOT, docs/vmm.md "Snapshots"): the state file
 * (src/vmm/snapfile.h) and the guest RAM as a sparse raw file, both into fds
 * the caller opened (the jailed VMM opens nothing). Restore: src/vmm/restore.h.
 */
#ifndef KILN_VMM_SNAPSHOT_H
#define KILN_VMM_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct kvm_vm;
struct snap_memory;
struct serial;
struct vcpu;
struct virtio_mmio_dev;

struct snapshot_dev {
	struct virtio_mmio_dev *mmio;
	uint64_t base;
	uint32_t gsi;
	uint32_t device_id;
};

struct snapshot_src {
	struct kvm_vm *vm;
	struct vcpu *vcpus;		/* parked (vcpus_pause) */
	unsigned nvcpus;
	const struct snapshot_dev *devs;
	unsigned ndevs;
	struct serial *serial;		/* COM1, or NULL */
};

struct snapshot_result {
	uint64_t state_bytes;		/* the state file's size */
	uint64_t mem_bytes;		/* bytes of RAM written (the rest are holes) */
};

/* Both fds: regular files open for writing (not O_APPEND), not the same
 * file; each is truncated first. 0, or -errno with a one-line why. */
int snapshot_save(const struct snapshot_src *src, int state_fd, int mem_fd,
		  struct snapshot_result *res, char *why, size_t whylen);

/* The guest RAM, region after region, into fd as a sparse file of exactly
 * its size: all-zero pages stay holes. *layout says where each region went,
 * *written how many bytes were written. 0 or -errno. */
int snapshot_write_memory(const struct guest_mem *m, int fd, struct snap_memory *layout,
			  uint64_t *written);

#endif
