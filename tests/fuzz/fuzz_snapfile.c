/*
 * The snapshot state file reader (src/vmm/snapfile.c), fed hostile files.
 *
 * Input: byte 0 picks the mode, the rest is the file. Odd: the trailing
 * checksum is recomputed first, so mutations reach the header and section
 * checks instead of stopping at the crc; even: the bytes as they are.
 *
 * Properties: a rejected file gets a one-line reason and nothing to free;
 * an accepted one has 1..32 vCPUs, every section lies inside the input with
 * a known type and an index in range, no (type, index) twice, and each
 * vCPU has its mandatory set; when no section was skipped (no unknown
 * optional ones), writing the parsed file back with the writer gives the
 * same bytes (the format is canonical).
 */
#include <zlib.h>

#include "fuzz.h"
#include "vmm/snapfile.h"

static uint8_t *copy;

static void check_accepted(const struct snap_file *f, const uint8_t *buf, size_t len)
{
	struct snap_buf b;

	FZ_CHECK(f->hdr.vm.cpus >= 1 && f->hdr.vm.cpus <= SNAP_MAX_CPUS, "cpus %u", f->hdr.vm.cpus);
	FZ_CHECK(f->nsec <= f->hdr.nsections, "%u of %u sections", f->nsec, f->hdr.nsections);
	for (unsigned i = 0; i < f->nsec; i++) {
		const struct snap_sec *s = &f->sec[i];

		FZ_CHECK(s->payload >= buf && s->payload + s->len <= buf + len, "section %u outside", i);
		FZ_CHECK(snap_sec_name(s->type)[0] != '?', "unknown type 0x%x kept", s->type);
		FZ_CHECK(snap_find(f, s->type, s->index) == s, "section %u is a duplicate", i);
	}
	for (uint32_t c = 0; c < f->hdr.vm.cpus; c++)
		FZ_CHECK(snap_find(f, SNAP_SEC_REGS, c) && snap_find(f, SNAP_SEC_MSRS, c),
			 "vCPU %u incomplete", c);
	if (f->nsec != f->hdr.nsections)
		return;
	snap_begin(&b, &f->hdr.cpu, &f->hdr.vm);
	for (unsigned i = 0; i < f->nsec; i++)
		snap_add(&b, f->sec[i].type, f->sec[i].flags, f->sec[i].index, f->sec[i].payload,
			 f->sec[i].len);
	FZ_CHECK(snap_finish(&b) == 0, "cannot write it back");
	FZ_CHECK(b.len == len && memcmp(b.data, buf, len) == 0, "not canonical (%zu vs %zu bytes)",
		 b.len, len);
	snap_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap_file f;
	char why[256];
	size_t len;

	if (size < 1)
		return 0;
	len = size - 1;
	free(copy);
	copy = malloc(len ? len : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, len);
	if ((data[0] & 1) && len >= 4) {
		uint32_t crc = (uint32_t)crc32(0L, copy, (uInt)(len - 4));

		memcpy(copy + len - 4, &crc, 4);
	}
	if (snap_parse(copy, len, NULL, &f, why, sizeof(why)) == 0) {
		check_accepted(&f, copy, len);
		snap_file_free(&f);
	} else {
		FZ_CHECK(why[0] && !strchr(why, '\n'), "reason '%s'", why);
		FZ_CHECK(f.sec == NULL && f.nsec == 0, "a rejected file left sections");
	}
	return 0;
}
