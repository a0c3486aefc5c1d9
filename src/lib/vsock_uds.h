/*
 * Reaching a guest vsock port through the VMM's Unix socket, with
 * Firecracker's convention: connect, send "CONNECT <port>\n", read
 * "OK <hostport>\n"; the stream then belongs to the guest port.
 */
#ifndef KILN_LIB_VSOCK_UDS_H
#define KILN_LIB_VSOCK_UDS_H

#include <stddef.h>
#include <stdint.h>

/*
 * early (early_len bytes, or NULL and 0) goes out with the CONNECT line,
 * before its reply: the VMM forwards it to the guest port once connected, so
 * a greeting costs no extra round trip. An attempt the guest refuses takes
 * its copy along; the next attempt sends it again.
 *
 * Retries until timeout_ms has passed while the VMM socket is missing or
 * refuses, or while nothing listens on the guest port (the VMM then closes
 * the connection). *fd is a blocking, close-on-exec stream socket.
 * -ECONNREFUSED: the guest port never answered; -ENOENT: no VMM socket;
 * -ETIMEDOUT: no reply in time; -EPROTO: an unexpected reply.
 */
int vsock_uds_connect(const char *path, uint32_t port, const void *early, size_t early_len,
		      int timeout_ms, int *fd);

#endif
