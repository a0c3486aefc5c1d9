/*
 * --restore DIR (docs/vmm.md "Restore"): a VM brought back from a snapshot
 * (DIR/state, DIR/mem, made by CTL_SNAPSHOT). restore_open() reads and checks
 * everything before any VM exists: the state file through snap_parse() with
 * this host's fingerprint, the VM config and devices against the new VM's,
 * the memory file's size. Then the caller creates the VM with its RAM mapped
 * MAP_PRIVATE from restore_mem_fd() and sets the state back: VM-wide here,
 * per vCPU by each vCPU thread (vcpu_env.restore), per device through the
 * transports.
 */
#ifndef KILN_VMM_RESTORE_H
#define KILN_VMM_RESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/snapfile.h"

struct kvm_vm;
struct restore;
struct serial;
struct virtio_mmio_dev;

/* The VM the flags describe, which the state file must match. */
struct restore_want {
	unsigned cpus;
	uint64_t mem_size;
	unsigned ndevices;
	uint32_t device_ids[SNAP_MAX_DEVICES]; /* virtio device id per slot */
};

/* The state file's config against want and the memory file's size: same
 * vCPUs and RAM, the same devices slot by slot (a difference names them),
 * none that cannot be restored yet (net), a memory layout this VMM
 * would make. Pure. 0 or -EINVAL with a one-line why. */
int restore_check(const struct snap_file *f, const struct restore_want *want,
		  uint64_t mem_file_size, char *why, size_t whylen);

/* This host's CPU fingerprint as a snapshot records it (opens /dev/kvm). */
int restore_host_cpu(struct snap_cpu *cpu);

/* Open and check DIR/state and DIR/mem (see above). 0, or -errno with a
 * one-line why; nothing is left open then. */
int restore_open(struct restore **out, const char *dir, const struct snap_cpu *host,
		 const struct restore_want *want, char *why, size_t whylen);
void restore_free(struct restore *r);

const struct snap_file *restore_file(const struct restore *r);
/* The memory file (read-only), for kvm_vm_create(); the restore keeps it. */
int restore_mem_fd(const struct restore *r);

/* Once the irqchip and PIT exist: PIC master, slave, IOAPIC, PIT, kvmclock. */
int restore_vm(const struct restore *r, struct kvm_vm *vm, char *why, size_t whylen);
/* Device slot's transport (at base, gsi) and its device's state. */
int restore_virtio(const struct restore *r, unsigned slot, struct virtio_mmio_dev *mmio,
		   uint64_t base, uint32_t gsi, char *why, size_t whylen);
/* COM1's registers, when the file has them. */
void restore_serial(const struct restore *r, struct serial *s);

#endif
