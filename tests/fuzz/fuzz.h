/*
 * Shared by the libFuzzer harnesses in tests/fuzz/ (see docs/security.md,
 * "Fuzzing"): a bounded reader over the fuzzer's bytes, and property checks
 * that abort, so that libFuzzer keeps the input as a finding.
 */
#ifndef KILN_TESTS_FUZZ_H
#define KILN_TESTS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property that must hold: print which and abort (libFuzzer saves the input). */
#define FZ_CHECK(cond, ...)                                                              \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "FUZZ PROPERTY FAILED %s:%d: %s: ", __FILE__,    \
				__LINE__, #cond);                                        \
			fprintf(stderr, __VA_ARGS__);                                    \
			fputc('\n', stderr);                                             \
			abort();                                                         \
		}                                                                        \
	} while (0)

/*
 * A scratch directory /tmp/kiln-fuzz-NAME.PID (tests/fuzz/run removes it
 * after the harness exits, even after a finding, when atexit handlers do not
 * run). Created once; its path in dir (at least 64 bytes).
 */
#include <sys/stat.h>
#include <unistd.h>

static inline void fz_scratch_dir(const char *name, char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/kiln-fuzz-%s.%d", name, (int)getpid());
	FZ_CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
}

/* The input, consumed front to back; reads past the end give zeros. */
struct fz {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
	uint8_t v = 0;

	if (f->n) {
		v = f->p[0];
		f->p++;
		f->n--;
	}
	return v;
}

/* Little-endian; each read is its own statement (operand order is unspecified). */
static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t lo = fz_u8(f);

	return (uint16_t)(lo | fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t lo = fz_u16(f);

	return lo | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t lo = fz_u32(f);

	return lo | (uint64_t)fz_u32(f) << 32;
}

/* Up to want bytes in place (*out points into the input); how many. */
static inline size_t fz_take(struct fz *f, size_t want, const uint8_t **out)
{
	size_t n = want < f->n ? want : f->n;

	*out = f->p;
	f->p += n;
	f->n -= n;
	return n;
}

/* A length-prefixed chunk (u16 length, cut at the end of the input). */
static inline size_t fz_chunk(struct fz *f, const uint8_t **out)
{
	return fz_take(f, fz_u16(f), out);
}

#endif
