/*
 * virtio-net (virtio 1.x §5.1), device id 1: one receive and one transmit
 * queue, no control queue, no offloads. Frames go to and come from a
 * separate egress process (kiln-net) over a connected AF_UNIX SOCK_SEQPACKET
 * socket, one Ethernet frame per message, without the virtio header.
 *
 * Features: MAC, STATUS (link up until the backend hangs up) and MTU. No
 * MRG_RXBUF, so every rx buffer must hold the 12-byte header and a whole
 * frame; a frame that does not fit is dropped and counted.
 *
 * Like vsock, the device has its own event thread (vnet_start()): the vCPU's
 * QueueNotify only wakes it, and it moves frames both ways through
 * virtio_mmio_run(). Nothing is buffered in the device: tx frames are sent
 * straight from guest memory, rx frames received straight into it, and when
 * either side is full the other waits (the guest's tx ring, or the socket).
 */
#ifndef KILN_VMM_VIRTIO_NET_H
#define KILN_VMM_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"

#define VNET_QUEUE_SIZE 256
#define VNET_HDR_LEN 12u		/* struct virtio_net_hdr, VERSION_1 */
#define VNET_ETH_HLEN 14u		/* the smallest frame: an Ethernet header */
#define VNET_DEFAULT_MTU 1500u
#define VNET_MIN_MTU 68u		/* IPv4's minimum */
#define VNET_MAX_MTU 9000u		/* jumbo frames; above 1500 Linux posts page chains */

struct virtio_mmio_dev;
struct vnet;

struct vnet_params {
	int fd;			/* connected SOCK_SEQPACKET; stays the caller's */
	uint8_t mac[6];		/* the guest's MAC (config space) */
	unsigned mtu;		/* VNET_MIN_MTU..VNET_MAX_MTU; 0: VNET_DEFAULT_MTU */
};

/*
 * Counters since creation (frames and bytes without the virtio header). Each
 * frame the guest queues or the backend sends is counted exactly once: sent
 * or received, or under one drop reason.
 */
struct vnet_stats {
	uint64_t tx_frames, tx_bytes;	/* guest to backend, delivered */
	uint64_t rx_frames, rx_bytes;	/* backend to guest, delivered */
	uint64_t tx_drop_size;		/* shorter than 14 bytes or longer than 14 + mtu */
	uint64_t tx_drop_link;		/* the backend hung up */
	uint64_t tx_drop_error;		/* sendmsg() failed (EMSGSIZE, ...) */
	uint64_t tx_drop_reset;		/* waiting for the backend when the guest reset us */
	uint64_t tx_stalls;		/* backend full: waited for it to drain */
	uint64_t rx_drop_size;		/* shorter than 14 bytes or longer than 14 + mtu */
	uint64_t rx_drop_buffer;	/* longer than the guest's rx buffer */
	uint64_t rx_short_bufs;		/* rx buffers too small for any frame, returned unused */
	uint64_t rx_errors;		/* recvmsg() failed (the link is then down) */
};

/* The ops table to hand virtio_mmio_create() together with the vnet. */
extern const struct virtio_dev_ops vnet_ops;

/* 0, -EINVAL (bad mtu, fd not a SOCK_SEQPACKET socket), -ENOMEM or -errno. */
int vnet_create(struct vnet **out, const struct vnet_params *p);
/* Spawn the event thread once dev (the transport wrapping v) exists; with
 * filter, the thread installs its seccomp filter (SECCOMP_ROLE_NET) before
 * anything else and this returns that result. 0 or -errno. */
int vnet_start(struct vnet *v, struct virtio_mmio_dev *dev, bool filter);
/* Stop and join the event thread; afterwards dev may be freed. Idempotent. */
void vnet_stop(struct vnet *v);
/* vnet_stop(), then free everything but the backend fd. */
void vnet_free(struct vnet *v);

/* A consistent-enough snapshot (each counter read atomically), any thread. */
void vnet_get_stats(const struct vnet *v, struct vnet_stats *out);
/* False once the backend hung up; stays false (any thread). */
bool vnet_link_up(const struct vnet *v);

#endif
