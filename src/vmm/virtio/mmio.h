/*
 * virtio-mmio transport, modern interface only (virtio 1.x §4.2.2, Version 2).
 * One instance wraps one device model (struct virtio_dev_ops), owns its
 * queues, and answers the vCPU threads' MMIO accesses under one lock. Queue
 * notifications are handled synchronously in the notifying vCPU thread;
 * devices with their own thread complete buffers through virtio_mmio_run().
 */
#ifndef KILN_VMM_VIRTIO_MMIO_H
#define KILN_VMM_VIRTIO_MMIO_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"

/* Registers 0x000-0x0ff, device config from 0x100. */
#define VIRTIO_MMIO_SIZE 0x200
#define VIRTIO_MMIO_MAX_QUEUES 8

struct guest_mem;
struct io_bus;
struct virtq;
struct virtio_mmio_dev;

/*
 * ops/dev: the device model, which must outlive the transport. irq(irq_ctx)
 * raises the device's interrupt line (a KVM irqfd); it is called with the
 * transport's lock held, from vCPU threads or from a thread inside
 * virtio_mmio_run(), and must not call back into the transport.
 * 0, -EINVAL (bad ops) or -ENOMEM.
 */
int virtio_mmio_create(struct virtio_mmio_dev **out, const struct virtio_dev_ops *ops, void *dev,
		       const struct guest_mem *mem, void (*irq)(void *ctx), void *irq_ctx);
void virtio_mmio_free(struct virtio_mmio_dev *d);

/*
 * For a device that completes buffers outside notify(), from its own thread:
 * run fn(arg, queues) under the transport's lock, serialised with every
 * register access and device call. queues is the device's queue array
 * (ops->num_queues entries) while the driver runs it (DRIVER_OK set,
 * NEEDS_RESET clear), else NULL: the device must not touch the rings then.
 * Afterwards the used-buffer interrupt is raised if a queue needs one, and a
 * negative result sets NEEDS_RESET as a failed notify() does. Returns fn's
 * result. Never call it from inside a device op (the lock is not recursive).
 */
int virtio_mmio_run(struct virtio_mmio_dev *d, int (*fn)(void *arg, struct virtq *queues),
		    void *arg);

/*
 * Snapshots: the transport's registers and queues into *out (mmio_base and
 * gsi are the caller's), and the device's own state (ops->save) into
 * dev_state (cap bytes; out->dev_len says how much). Under the lock.
 * 0 or the device's -errno.
 */
struct snap_virtio;
int virtio_mmio_save(struct virtio_mmio_dev *d, struct snap_virtio *out, void *dev_state,
		     size_t cap);

/*
 * The same with the lock already held through virtio_mmio_lock(). A whole-VM
 * snapshot holds every transport's lock (in device order) from before the
 * first device is saved until guest RAM is written: a device thread touches
 * the rings and guest buffers only inside virtio_mmio_run(), so none can
 * write guest memory in between. vCPUs must be paused (an MMIO access would
 * wait on the lock); never call another transport function while holding it.
 */
void virtio_mmio_lock(struct virtio_mmio_dev *d);
void virtio_mmio_unlock(struct virtio_mmio_dev *d);
int virtio_mmio_save_locked(struct virtio_mmio_dev *d, struct snap_virtio *out, void *dev_state,
			    size_t cap);

/*
 * Restore: the transport from s (an untrusted file's: every register and
 * queue is checked as the guest's writes would be, against this device and
 * its guest RAM), then ops->restore with the device's dev_state (s->dev_len
 * bytes). Buffers already available are handled and owed interrupts raised.
 * 0, or -EINVAL with a one-line why (the transport is then reset).
 */
int virtio_mmio_restore(struct virtio_mmio_dev *d, const struct snap_virtio *s,
			const void *dev_state, char *why, size_t whylen);

/* Claim [base, base + VIRTIO_MMIO_SIZE) on bus. io_register()'s result. */
int virtio_mmio_register(struct virtio_mmio_dev *d, struct io_bus *bus, uint64_t base);

/* "virtio_mmio.device=<size>@<base>:<irq>" for the guest kernel command line.
 * 0, or -ENOSPC when buf (size bytes) is too small. */
int virtio_mmio_cmdline(char *buf, size_t size, uint64_t base, uint32_t irq);

#endif
