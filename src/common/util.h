/* Small helpers shared by every kiln program. */
#ifndef KILN_COMMON_UTIL_H
#define KILN_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))

/* Parse a whole decimal (or 0x hex) unsigned number in [min, max]. 0 or -EINVAL/-ERANGE. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* write()/read() the whole buffer, retrying on EINTR and short counts. 0 or -errno
 * (-EPIPE on end of file for read_full). */
int write_full(int fd, const void *buf, size_t len);
int read_full(int fd, void *buf, size_t len);

/* The directory of this program's binary (/proc/self/exe, else argv0's), "."
 * when it has none: kiln's build tree keeps its parts beside it. */
void exe_dir(const char *argv0, char *buf, size_t len);

/* Base64 (RFC 4648, padded) of len bytes, NUL-terminated, malloc'd; NULL on ENOMEM. */
char *base64_encode(const void *in, size_t len);

#endif
