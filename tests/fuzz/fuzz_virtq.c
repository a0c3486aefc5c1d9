/*
 * The split virtqueue (src/vmm/virtio/queue.c) over fuzzed guest memory.
 * Guest RAM is 3 GiB + 16 KiB, so it has two regions around the 32-bit
 * hole: [0, 3G) and [4G, 4G + 16K). Three 16 KiB windows of it are filled
 * from the input (at 0, at the end of the low region, and the whole high
 * region); rings and descriptors placed there are the fuzzer's.
 *
 * Input: queue size (u16), feature bits (u8), then for desc, avail and used a
 * base (u8: window 0/1/2 or a raw u64 address) and an offset (u16); three
 * blobs (u16 length + bytes) for the windows; then operations, one byte
 * each with their arguments: pop, push the popped chain, push anything,
 * interrupt decision, guest pokes a few bytes, chain read, reset.
 *
 * Properties:
 *  - every segment of a popped chain lies wholly inside one RAM region, and
 *    is the buffer of a descriptor of the queue's table (or of the head's
 *    indirect table) with the right direction (WRITE for the writable part);
 *  - a chain has at most queue-size segments, and its byte counts are the
 *    sums of its segments;
 *  - virtq_chain_write changes guest memory only inside writable segments and
 *    copies min(len, room); virtq_chain_read returns the readable bytes in
 *    order;
 *  - pushing changes guest memory only inside the used ring (the element and
 *    idx), and a pop only its avail_event word;
 *  - once broken, a queue stays broken (pop and push fail with -EIO).
 */
#include <errno.h>
#include <sys/uio.h>

#include "fuzz.h"
#include "vmm/memory.h"
#include "vmm/virtio/queue.h"
#include "vmm/virtio/virtio.h"

#define WIN	 0x4000ULL
#define RAM_SIZE (MEM_HOLE_START + WIN)

static struct guest_mem *mem;
static uint8_t *win[3];
static const uint64_t win_gpa[3] = { 0, MEM_HOLE_START - WIN, MEM_4G };
static uint8_t before[3][WIN];
static struct virtq_chain chain;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FZ_CHECK(guest_mem_create(&mem, RAM_SIZE) == 0, "guest_mem_create");
	FZ_CHECK(guest_mem_nregions(mem) == 2, "expected two RAM regions");
	for (unsigned i = 0; i < 3; i++)
		win[i] = guest_mem_ptr(mem, win_gpa[i], WIN);
	return 0;
}

static uint64_t pick_gpa(struct fz *f)
{
	uint8_t sel = fz_u8(f);
	uint16_t off = fz_u16(f);

	if (sel % 4 == 3)
		return fz_u64(f);
	return win_gpa[sel % 4] + off;
}

/* Is [p, p + len) inside one RAM region's host mapping? */
static bool in_ram(const void *p, size_t len)
{
	for (unsigned i = 0; i < guest_mem_nregions(mem); i++) {
		const struct mem_region *r = guest_mem_region(mem, i);
		const uint8_t *h = r->host;

		if ((const uint8_t *)p >= h && len <= r->size &&
		    (size_t)((const uint8_t *)p - h) <= r->size - len)
			return true;
	}
	return false;
}

/* Is there a descriptor in table (n entries) for this buffer and direction? */
static bool desc_for(uint64_t table, uint32_t n, const struct iovec *v, bool write)
{
	const uint8_t *t = guest_mem_ptr(mem, table, (uint64_t)n * 16);

	/* An indirect table may sit at any address: copy entries, never cast. */
	for (uint32_t i = 0; t && i < n; i++) {
		struct virtq_desc d;

		memcpy(&d, t + (size_t)i * 16, sizeof(d));
		if (d.len == v->iov_len && !!(d.flags & VIRTQ_DESC_F_WRITE) == write &&
		    !(d.flags & VIRTQ_DESC_F_INDIRECT) && guest_mem_ptr(mem, d.addr, d.len) == v->iov_base)
			return true;
	}
	return false;
}

static void check_chain(const struct virtq *q, const struct virtq_chain *c)
{
	const uint8_t *t = guest_mem_ptr(mem, q->desc_gpa, (uint64_t)q->size * 16);
	uint64_t table = q->desc_gpa, out = 0, in = 0;
	uint32_t n = q->size;
	struct virtq_desc h;

	FZ_CHECK(c->head < q->size, "head %u of a %u queue", c->head, q->size);
	FZ_CHECK((unsigned)c->nout + c->nin <= q->size, "%u segments in a %u queue",
		 c->nout + c->nin, q->size);
	/* An indirect head: its table holds the buffers. */
	memcpy(&h, t + (size_t)c->head * 16, sizeof(h));
	if (h.flags & VIRTQ_DESC_F_INDIRECT) {
		table = h.addr;
		n = h.len / 16;
	}
	for (unsigned i = 0; i < (unsigned)c->nout + c->nin; i++) {
		const struct iovec *v = &c->iov[i];
		bool w = i >= c->nout;

		FZ_CHECK(v->iov_len > 0 && in_ram(v->iov_base, v->iov_len),
			 "segment %u (%zu bytes) outside guest RAM", i, v->iov_len);
		FZ_CHECK(desc_for(table, n, v, w), "segment %u is no %s descriptor's buffer", i,
			 w ? "writable" : "readable");
		*(w ? &in : &out) += v->iov_len;
	}
	FZ_CHECK(out == c->out_bytes && in == c->in_bytes, "byte counts %u/%u, segments %llu/%llu",
		 c->out_bytes, c->in_bytes, (unsigned long long)out, (unsigned long long)in);
}

static void snapshot(void)
{
	for (unsigned i = 0; i < 3; i++)
		memcpy(before[i], win[i], WIN);
}

static bool in_segs(const struct virtq_chain *c, unsigned from, unsigned to, const uint8_t *p)
{
	for (unsigned i = from; i < to; i++)
		if (p >= (const uint8_t *)c->iov[i].iov_base &&
		    p < (const uint8_t *)c->iov[i].iov_base + c->iov[i].iov_len)
			return true;
	return false;
}

/* Every byte that changed in the windows since snapshot() satisfies ok(). */
static void check_changes(const char *what, bool (*ok)(const void *ctx, const uint8_t *p),
			  const void *ctx)
{
	for (unsigned i = 0; i < 3; i++)
		for (size_t b = 0; b < WIN; b += 512) {
			if (!memcmp(win[i] + b, before[i] + b, 512))
				continue;
			for (size_t k = b; k < b + 512; k++)
				if (win[i][k] != before[i][k])
					FZ_CHECK(ok(ctx, &win[i][k]), "%s changed guest byte %#llx",
						 what, (unsigned long long)(win_gpa[i] + k));
		}
}

static bool in_writable(const void *ctx, const uint8_t *p)
{
	const struct virtq_chain *c = ctx;

	return in_segs(c, c->nout, (unsigned)c->nout + c->nin, p);
}

struct span {
	const uint8_t *p;
	size_t n;
};

static bool in_span(const void *ctx, const uint8_t *p)
{
	const struct span *s = ctx;

	return s->p && p >= s->p && p < s->p + s->n;
}

static void chain_io(const struct virtq_chain *c, size_t off, size_t len, uint8_t seed)
{
	static uint8_t buf[1 << 16], back[1 << 16];
	size_t room, got, k = 0, wr_off = off;

	if (len > sizeof(buf))
		len = sizeof(buf);
	/* Read: the readable bytes in order. */
	room = off < c->out_bytes ? c->out_bytes - off : 0;
	got = virtq_chain_read(c, off, buf, len);
	FZ_CHECK(got == (len < room ? len : room), "chain_read %zu of %zu", got, room);
	for (unsigned i = 0, skip = 0; i < c->nout && k < got; i++) {
		const uint8_t *p = c->iov[i].iov_base;
		size_t j = 0;

		if (!skip && off >= c->iov[i].iov_len) {
			off -= c->iov[i].iov_len;
			continue;
		}
		if (!skip) {
			j = off;
			skip = 1;
		}
		for (; j < c->iov[i].iov_len && k < got; j++, k++)
			FZ_CHECK(buf[k] == p[j], "chain_read byte %zu", k);
	}
	off = wr_off;
	/* Write: only inside writable segments, min(len, room) bytes. */
	memset(back, seed | 1, len);
	snapshot();
	room = off < c->in_bytes ? c->in_bytes - off : 0;
	got = virtq_chain_write(c, off, back, len);
	FZ_CHECK(got == (len < room ? len : room), "chain_write %zu of %zu", got, room);
	check_changes("chain_write", in_writable, c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	struct virtq q = { 0 };
	uint64_t features;
	bool have = false, broken;
	uint8_t f;
	int r;

	for (unsigned i = 0; i < 3; i++)
		memset(win[i], 0, WIN);
	q.size = fz_u16(&in);
	f = fz_u8(&in);
	features = (f & 1 ? VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) : 0) |
		   (f & 2 ? VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) : 0);
	q.desc_gpa = pick_gpa(&in);
	q.avail_gpa = pick_gpa(&in);
	q.used_gpa = pick_gpa(&in);
	for (unsigned i = 0; i < 3; i++) {
		const uint8_t *blob;
		size_t n = fz_chunk(&in, &blob);

		memcpy(win[i], blob, n);
	}
	if (virtq_enable(&q, mem, VIRTQ_MAX_SIZE, features))
		return 0;
	/* Each operation compares the windows: bound the work per input. */
	for (unsigned ops = 0; in.n && ops < 128; ops++) {
		uint8_t op = fz_u8(&in);

		broken = virtq_is_broken(&q);
		switch (op % 7) {
		case 0: {
			const uint8_t *ev = q.event_idx
						    ? guest_mem_ptr(mem, q.used_gpa + 4 + 8ULL * q.size, 2)
						    : NULL;
			struct span s = { ev, 2 };

			snapshot();
			r = virtq_pop(&q, &chain);
			check_changes("pop", in_span, &s);
			FZ_CHECK(!broken || r == -EIO, "a broken queue popped (%d)", r);
			FZ_CHECK(r >= 0 || virtq_is_broken(&q), "pop failed (%d), queue not broken", r);
			have = r == 1;
			if (have)
				check_chain(&q, &chain);
			break;
		}
		case 1: {
			size_t off = fz_u16(&in), len = fz_u16(&in);
			struct span s = { guest_mem_ptr(mem, q.used_gpa, 4 + 8ULL * q.size), 4 + 8ULL * q.size };
			uint32_t wrote;

			if (!have)
				break;
			chain_io(&chain, off, len, op);
			wrote = chain.in_bytes < len ? chain.in_bytes : (uint32_t)len;
			snapshot();
			r = virtq_push(&q, chain.head, wrote);
			check_changes("push", in_span, &s);
			FZ_CHECK(!broken || r == -EIO, "a broken queue took a push (%d)", r);
			have = false;
			break;
		}
		case 2: {
			struct span s = { guest_mem_ptr(mem, q.used_gpa, 4 + 8ULL * q.size), 4 + 8ULL * q.size };
			uint16_t head = fz_u16(&in);

			snapshot();
			r = virtq_push(&q, head, fz_u32(&in));
			check_changes("push", in_span, &s);
			FZ_CHECK(head < q.size || r < 0, "push of head %u in a %u queue", head, q.size);
			FZ_CHECK(!broken || r == -EIO, "a broken queue took a push (%d)", r);
			break;
		}
		case 3:
			virtq_need_interrupt(&q);
			break;
		case 4: {
			uint8_t w = fz_u8(&in) % 3;
			uint16_t off = fz_u16(&in);
			const uint8_t *bytes;
			size_t n = fz_take(&in, fz_u8(&in) % 16, &bytes);

			if (off + n <= WIN)
				memcpy(win[w] + off, bytes, n);
			break;
		}
		case 5:
			if (have)
				chain_io(&chain, fz_u16(&in), fz_u16(&in), op);
			break;
		default:
			virtq_reset(&q);
			FZ_CHECK(!virtq_is_ready(&q) && !virtq_is_broken(&q), "reset");
			return 0;
		}
		if (broken)
			FZ_CHECK(virtq_is_broken(&q), "a broken queue mended itself");
	}
	return 0;
}
