/*
 * virtio-rng (virtio 1.x §5.4): one queue of device-writable buffers, filled
 * from the host's getrandom(). No config space, no feature bits.
 */
#ifndef KILN_VMM_VIRTIO_RNG_H
#define KILN_VMM_VIRTIO_RNG_H

#include "vmm/virtio/virtio.h"

/* Bytes one request gets at most, however big its buffers. */
#define VRNG_MAX_REQ 65536
#define VRNG_QUEUE_SIZE 64

struct vrng;

/* The ops table to hand virtio_mmio_create() together with the vrng. */
extern const struct virtio_dev_ops vrng_ops;

/* 0 or -ENOMEM. */
int vrng_create(struct vrng **out);
void vrng_free(struct vrng *r);

#endif
