/*
 * virtio-blk (virtio 1.x §5.2) over a host file or block device: IN, OUT,
 * FLUSH and GET_ID, handled synchronously with pread/pwrite in the notifying
 * vCPU thread. Offers SEG_MAX, FLUSH and, for read-only disks, RO.
 */
#ifndef KILN_VMM_VIRTIO_BLK_H
#define KILN_VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"

#define VBLK_QUEUE_SIZE 256
/* Data segments per request: the header and status take the other two. */
#define VBLK_SEG_MAX (VBLK_QUEUE_SIZE - 2)

struct vblk;

struct vblk_params {
	int fd;			/* backing file or device; stays the caller's to close */
	bool read_only;		/* forced on when fd is open O_RDONLY */
	const char *serial;	/* GET_ID answer, at most VIRTIO_BLK_ID_BYTES; NULL: empty */
};

/* The ops table to hand virtio_mmio_create() together with the vblk. */
extern const struct virtio_dev_ops vblk_ops;

/* Capacity is the size of fd in whole 512-byte sectors, read once here.
 * 0, -EINVAL (serial too long, bad fd) or -errno. */
int vblk_create(struct vblk **out, const struct vblk_params *p);
void vblk_free(struct vblk *b);

/*
 * A sparse, nameless file of size bytes (a multiple of 512) in dir: an
 * O_TMPFILE where the filesystem has them, else a file unlinked as soon as it
 * is created. It vanishes with its last fd. The fd (O_RDWR, O_CLOEXEC) or -errno.
 */
int vblk_scratch_create(const char *dir, uint64_t size);

#endif
