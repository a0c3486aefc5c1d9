/*
 * virtio-vsock (virtio 1.x §5.10), device id 19: stream sockets between the
 * guest and host processes, carried in the VMM (no vhost). The host side
 * follows Firecracker's convention:
 *
 *   - host-initiated: connect to the Unix socket uds_path, write
 *     "CONNECT <port>\n", read "OK <hostport>\n"; the stream then belongs to
 *     guest port <port>. If nothing listens there the connection is closed.
 *   - guest-initiated: a guest connect to CID 2 port P reaches the Unix socket
 *     "<uds_path>_<P>"; if nothing listens there the guest gets a reset.
 *
 * The device has its own event thread (vsock_start()): the vCPU's QueueNotify
 * only wakes it, and it moves the data both ways through virtio_mmio_run().
 * The guest is treated as hostile: every header field is checked, data beyond
 * the credit we advertised resets the connection, and buffering is bounded
 * both ways (VSOCK_BUF_ALLOC per connection towards the host, none towards
 * the guest: host data is read straight into the guest's buffers).
 */
#ifndef KILN_VMM_VIRTIO_VSOCK_H
#define KILN_VMM_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"

#define VSOCK_DEFAULT_GUEST_CID 3
#define VSOCK_MAX_CONNS 1024		/* default and largest connection cap */
#define VSOCK_QUEUE_SIZE 256
#define VSOCK_BUF_ALLOC (64u * 1024)	/* receive buffer we advertise per connection */
#define VSOCK_MAX_PKT (64u * 1024)	/* payload of one packet, either way */
#define VSOCK_LINE_MAX 32		/* "CONNECT <port>\n", newline included */
#define VSOCK_LINE_TIMEOUT_MS 3000	/* to send the whole CONNECT line */
#define VSOCK_REQUEST_TIMEOUT_MS 3000	/* for the guest to answer the request */
#define VSOCK_SHUTDOWN_TIMEOUT_MS 3000	/* for the host to drain a closed stream */

struct virtio_mmio_dev;
struct vsock;

struct vsock_params {
	uint64_t guest_cid;	/* 3..0xfffffffe; 0: VSOCK_DEFAULT_GUEST_CID */
	const char *uds_path;	/* created here; must not exist; short enough for "_<port>" */
	unsigned max_conns;	/* 1..VSOCK_MAX_CONNS; 0: VSOCK_MAX_CONNS */
};

/* The ops table to hand virtio_mmio_create() together with the vsock. */
extern const struct virtio_dev_ops vsock_ops;

/*
 * Binds and listens on uds_path (non-blocking, close-on-exec like every fd
 * here). 0, -EINVAL, -ENAMETOOLONG, -ENOMEM or bind()'s error (-EADDRINUSE
 * when the path exists).
 */
int vsock_create(struct vsock **out, const struct vsock_params *p);
/* Spawn the event thread once dev (the transport wrapping v) exists; with
 * filter, the thread installs its seccomp filter (SECCOMP_ROLE_VSOCK) before
 * anything else and this returns that result. 0 or -errno. */
int vsock_start(struct vsock *v, struct virtio_mmio_dev *dev, bool filter);
/* Stop and join the event thread; afterwards dev may be freed. Idempotent. */
void vsock_stop(struct vsock *v);
/* Every connection ends: the host's ends are closed, and the guest gets the
 * transport reset event (its connected sockets reset, its listeners stay;
 * it reads its CID again), as soon as it has an event buffer. For a VM
 * restored from a snapshot, whose connections were another VMM's. Any
 * thread, any time after vsock_create. */
void vsock_transport_reset(struct vsock *v);
/* vsock_stop(), close every connection and fd, unlink the socket file we created. */
void vsock_free(struct vsock *v);

#endif
