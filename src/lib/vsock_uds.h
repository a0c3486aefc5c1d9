/*
 * Reaching a guest vsock port through the VMM's Unix socket, with
 * Firecracker's convention: connect, send "CONNECT <port>\n", read
 * "OK <hostport>\n"; the stream then belongs to the guest port.
 */
#ifndef KILN_LIB_VSOCK_UDS_H
#define KILN_LIB_VSOCK_UDS_H

#include <stdint.h>

/*
 * Retries until timeout_ms has passed while the VMM socket is missing or
 * refuses, or while nothing listens on the guest port (the VMM then closes
 * the connection). *fd is a blocking, close-on-exec stream socket.
 * -ECONNREFUSED: the guest port never answered; -ENOENT: no VMM socket;
 * -ETIMEDOUT: no reply in time; -EPROTO: an unexpected reply.
 */
int vsock_uds_connect(const char *path, uint32_t port, int timeout_ms, int *fd);

#endif
