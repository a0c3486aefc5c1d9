/*
 * A sandbox's identity, applied by kiln-init (PID 1) when the host sends
 * IDENTITY (docs/protocol.md): the host's entropy into the kernel's pool
 * (credited) and a reseed, the wall clock, the hostname, and the sandbox id
 * in IDENTITY_ID_FILE for user code. A clone restored from a snapshot gets
 * its own this way; a cold boot gets the same so nothing differs.
 */
#ifndef KILN_GUEST_IDENTITY_H
#define KILN_GUEST_IDENTITY_H

#include <stddef.h>

#include "proto.h"

#define IDENTITY_DIR	 "/run/kiln"
#define IDENTITY_ID_FILE IDENTITY_DIR "/sandbox-id"

/*
 * Every step in order; the first that fails stops the rest: -errno and a
 * one-line reason naming the step in err ("identity: clock: ..."). dir: where
 * the sandbox-id file goes (IDENTITY_DIR in the guest, created if missing).
 */
int identity_apply(const struct proto_identity *m, const char *dir, char *err, size_t errlen);

#endif
