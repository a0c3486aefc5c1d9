/*
 * Split virtqueue tests against fake guest RAM, without a transport: ring
 * validation, chain walking, used publication, interrupt suppression, and
 * every malformed-ring case we know of breaking the queue instead of the host.
 */
#include "virtio_fake.h"

#include <errno.h>
#include <stdlib.h>

#define RINGS (VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))

struct qt {
	struct fake_guest g;
	struct fake_vq vq;
	struct virtq q;
	struct virtq_chain c;
};

static struct qt *qt_new(uint64_t mem_size, uint16_t size, uint64_t features)
{
	struct qt *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	fake_mem_init(&t->g, mem_size);
	t->vq = fake_vq_std(size);
	fake_vq_clear(&t->g, &t->vq);
	t->q.size = size;
	t->q.desc_gpa = t->vq.desc;
	t->q.avail_gpa = t->vq.avail;
	t->q.used_gpa = t->vq.used;
	assert_int_equal(virtq_enable(&t->q, t->g.mem, VIRTQ_MAX_SIZE, features), 0);
	return t;
}

static void qt_free(struct qt *t)
{
	guest_mem_free(t->g.mem);
	free(t);
}

/* Expect the next pop to fail with err, and the queue to stay broken. */
static void qt_expect_broken(struct qt *t, int err)
{
	assert_int_equal(virtq_pop(&t->q, &t->c), err);
	assert_true(virtq_is_broken(&t->q));
	assert_int_equal(virtq_pop(&t->q, &t->c), -EIO);
	assert_int_equal(virtq_push(&t->q, 0, 0), -EIO);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 0);
}

static int try_enable(struct fake_guest *g, uint16_t size, uint64_t desc, uint64_t avail,
		      uint64_t used, uint64_t features)
{
	struct virtq q = { .size = size, .desc_gpa = desc, .avail_gpa = avail, .used_gpa = used };
	int ret = virtq_enable(&q, g->mem, 256, features);

	assert_int_equal(virtq_is_ready(&q), ret == 0);
	return ret;
}

static void test_enable_validation(void **state)
{
	struct fake_guest g;
	const uint64_t end = FAKE_RAM_SIZE;

	fake_mem_init(&g, FAKE_RAM_SIZE);
	assert_int_equal(try_enable(&g, 256, FAKE_DESC, FAKE_AVAIL, FAKE_USED, 0), 0);
	assert_int_equal(try_enable(&g, 1, FAKE_DESC, FAKE_AVAIL, FAKE_USED, RINGS), 0);
	/* Sizes: zero, not a power of two, over the maximum. */
	assert_int_equal(try_enable(&g, 0, FAKE_DESC, FAKE_AVAIL, FAKE_USED, 0), -EINVAL);
	assert_int_equal(try_enable(&g, 3, FAKE_DESC, FAKE_AVAIL, FAKE_USED, 0), -EINVAL);
	assert_int_equal(try_enable(&g, 512, FAKE_DESC, FAKE_AVAIL, FAKE_USED, 0), -EINVAL);
	/* Alignment. */
	assert_int_equal(try_enable(&g, 8, FAKE_DESC + 8, FAKE_AVAIL, FAKE_USED, 0), -EINVAL);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, FAKE_AVAIL + 1, FAKE_USED, 0), -EINVAL);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, FAKE_AVAIL, FAKE_USED + 2, 0), -EINVAL);
	/* Each ring across the end of RAM, by as little as the event field. */
	assert_int_equal(try_enable(&g, 8, end - 64, FAKE_AVAIL, FAKE_USED, 0), -EFAULT);
	assert_int_equal(try_enable(&g, 8, end - 128, FAKE_AVAIL, FAKE_USED, 0), 0);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, end - 20, FAKE_USED, 0), 0);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, end - 20, FAKE_USED, RINGS), -EFAULT);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, FAKE_AVAIL, end - 68, 0), 0);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, FAKE_AVAIL, end - 68, RINGS), -EFAULT);
	/* Outside RAM altogether: the MMIO hole, and addresses that wrap. */
	assert_int_equal(try_enable(&g, 8, FAKE_MMIO_BASE, FAKE_AVAIL, FAKE_USED, 0), -EFAULT);
	assert_int_equal(try_enable(&g, 8, FAKE_DESC, FAKE_AVAIL, 0xfffffffffffffff0ULL, 0),
			 -EFAULT);
	guest_mem_free(g.mem);
}

static void test_pop_push(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);
	struct virtq_used_elem e;
	uint8_t *data = fake_ptr(&t->g, FAKE_DATA, 0x3000);

	/* Chain 5 -> 2 -> 7: two readable, one writable, and a zero-length one dropped. */
	fake_desc(&t->g, FAKE_DESC, 5, FAKE_DATA, 100, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 2, FAKE_DATA + 0x1000, 200, VIRTQ_DESC_F_NEXT, 3);
	fake_desc(&t->g, FAKE_DESC, 3, 0, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 7);
	fake_desc(&t->g, FAKE_DESC, 7, FAKE_DATA + 0x2000, 300, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);
	fake_avail_add(&t->g, &t->vq, 5);

	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 5);
	assert_int_equal(t->c.nout, 2);
	assert_int_equal(t->c.nin, 1);
	assert_int_equal(t->c.out_bytes, 300);
	assert_int_equal(t->c.in_bytes, 300);
	assert_ptr_equal(t->c.iov[0].iov_base, data);
	assert_ptr_equal(t->c.iov[1].iov_base, data + 0x1000);
	assert_ptr_equal(t->c.iov[2].iov_base, data + 0x2000);
	assert_int_equal(t->c.iov[2].iov_len, 300);
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);

	assert_false(virtq_need_interrupt(&t->q));
	assert_int_equal(virtq_push(&t->q, 5, 42), 0);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 1);
	e = fake_used_elem(&t->g, &t->vq, 0);
	assert_int_equal(e.id, 5);
	assert_int_equal(e.len, 42);
	assert_true(virtq_need_interrupt(&t->q));
	assert_false(virtq_need_interrupt(&t->q));
	/* A head the device never got is a device bug, refused without breaking. */
	assert_int_equal(virtq_push(&t->q, 8, 0), -EINVAL);
	assert_false(virtq_is_broken(&t->q));
	qt_free(t);
}

/* A popped chain given back is popped again, the same one; nothing popped,
 * or everything popped already pushed, is refused without a change. */
static void test_unpop(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	/* Nothing popped at all. */
	assert_int_equal(virtq_unpop(&t->q), -EINVAL);
	fake_desc(&t->g, FAKE_DESC, 3, FAKE_DATA, 64, VIRTQ_DESC_F_WRITE, 0);
	fake_desc(&t->g, FAKE_DESC, 6, FAKE_DATA + 0x1000, 32, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 3);
	fake_avail_add(&t->g, &t->vq, 6);
	/* Available but not popped: not ours to give back. */
	assert_int_equal(virtq_unpop(&t->q), -EINVAL);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 3);
	assert_int_equal(virtq_unpop(&t->q), 0);
	/* Only one was outstanding. */
	assert_int_equal(virtq_unpop(&t->q), -EINVAL);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 3);
	assert_int_equal(t->c.in_bytes, 64);
	assert_int_equal(virtq_push(&t->q, 3, 0), 0);
	/* Pushed: nothing outstanding any more, though chain 6 is available. */
	assert_int_equal(virtq_unpop(&t->q), -EINVAL);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 6);
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);
	assert_int_equal(virtq_unpop(&t->q), 0);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 6);
	assert_int_equal(virtq_push(&t->q, 6, 0), 0);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 2);
	assert_false(virtq_is_broken(&t->q));
	/* A queue that is not running has nothing to give back. */
	virtq_reset(&t->q);
	assert_int_equal(virtq_unpop(&t->q), -EINVAL);
	qt_free(t);
}

/* 70000 round trips on a 4-entry ring: indexes wrap at 2^16 and at the size. */
static void test_index_wrap(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 4, 0);

	for (uint16_t i = 0; i < 4; i++)
		fake_desc(&t->g, FAKE_DESC, i, FAKE_DATA + 64 * i, 64, VIRTQ_DESC_F_WRITE, 0);
	for (unsigned n = 0; n < 70000; n++) {
		uint16_t head = n % 4;

		fake_avail_add(&t->g, &t->vq, head);
		assert_int_equal(virtq_pop(&t->q, &t->c), 1);
		assert_int_equal(t->c.head, head);
		assert_int_equal(virtq_push(&t->q, head, (uint32_t)n), 0);
		assert_int_equal(fake_used_elem(&t->g, &t->vq, (uint16_t)n).len, n);
	}
	assert_int_equal(fake_used_idx(&t->g, &t->vq), (uint16_t)70000);
	qt_free(t);
}

/* A full ring (driver exactly size ahead) is legal. */
static void test_full_ring(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 4, 0);

	for (uint16_t i = 0; i < 4; i++) {
		fake_desc(&t->g, FAKE_DESC, i, FAKE_DATA, 16, 0, 0);
		fake_avail_add(&t->g, &t->vq, i);
	}
	for (uint16_t i = 0; i < 4; i++) {
		assert_int_equal(virtq_pop(&t->q, &t->c), 1);
		assert_int_equal(t->c.head, i);
	}
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);
	qt_free(t);
}

static void test_no_interrupt_flag(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 4, 0);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_flags(&t->g, &t->vq, VIRTQ_AVAIL_F_NO_INTERRUPT);
	fake_avail_add(&t->g, &t->vq, 0);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(virtq_push(&t->q, 0, 16), 0);
	assert_false(virtq_need_interrupt(&t->q));
	qt_free(t);
}

static void test_event_idx(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	for (uint16_t i = 0; i < 8; i++)
		fake_desc(&t->g, FAKE_DESC, i, FAKE_DATA + 64 * i, 64, VIRTQ_DESC_F_WRITE, 0);
	for (uint16_t i = 0; i < 6; i++)
		fake_avail_add(&t->g, &t->vq, i);
	/* Driver wants an interrupt once used idx passes 3 (entry 3 used). */
	fake_used_event(&t->g, &t->vq, 3);

	for (uint16_t i = 0; i < 6; i++)
		assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	/* Queue drained: the device asks for a kick at the next entry. */
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);
	assert_int_equal(fake_avail_event(&t->g, &t->vq), 6);

	/* The first decision always interrupts (nothing signalled yet). */
	assert_int_equal(virtq_push(&t->q, 0, 64), 0);
	assert_true(virtq_need_interrupt(&t->q));
	assert_int_equal(virtq_push(&t->q, 1, 64), 0);
	assert_int_equal(virtq_push(&t->q, 2, 64), 0);
	assert_false(virtq_need_interrupt(&t->q));	/* used idx 3: event 3 not passed */
	assert_int_equal(virtq_push(&t->q, 3, 64), 0);
	assert_true(virtq_need_interrupt(&t->q));	/* used idx 4: passed */
	assert_int_equal(virtq_push(&t->q, 4, 64), 0);
	assert_false(virtq_need_interrupt(&t->q));
	qt_free(t);
}

static void test_indirect(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_INDIRECT, 2, FAKE_DATA + 16, 32, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_INDIRECT, 1, FAKE_DATA + 48, 64, VIRTQ_DESC_F_WRITE, 0);
	fake_desc(&t->g, FAKE_DESC, 3, FAKE_INDIRECT, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&t->g, &t->vq, 3);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 3);
	assert_int_equal(t->c.nout, 2);
	assert_int_equal(t->c.nin, 1);
	assert_int_equal(t->c.out_bytes, 48);
	assert_int_equal(t->c.in_bytes, 64);
	qt_free(t);
}

static void test_chain_copy(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, 0);
	uint8_t buf[16], *p = fake_ptr(&t->g, FAKE_DATA, 0x100);

	for (int i = 0; i < 0x100; i++)
		p[i] = (uint8_t)i;
	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 5, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, FAKE_DATA + 0x10, 5, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 2, FAKE_DATA + 0x80, 3, FAKE_WNEXT, 3);
	fake_desc(&t->g, FAKE_DESC, 3, FAKE_DATA + 0x90, 3, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);

	assert_int_equal(virtq_chain_read(&t->c, 3, buf, sizeof(buf)), 7);
	assert_int_equal(buf[0], 3);
	assert_int_equal(buf[1], 4);
	assert_int_equal(buf[2], 0x10);
	assert_int_equal(buf[6], 0x14);
	assert_int_equal(virtq_chain_read(&t->c, 10, buf, 1), 0);

	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(virtq_chain_write(&t->c, 2, buf, 10), 4);
	assert_int_equal(p[0x81], 0x81);
	assert_int_equal(p[0x82], 0xee);
	assert_int_equal(p[0x90], 0xee);
	assert_int_equal(p[0x92], 0xee);
	assert_int_equal(p[0x93], 0x93);
	qt_free(t);
}

/* ---- malformed rings: each breaks the queue, never the host ---- */

static void test_bad_head_index(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_avail_add(&t->g, &t->vq, 8);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

static void test_bad_next_index(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 0xffff);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

static void test_self_loop(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 4, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 4);
	fake_avail_add(&t->g, &t->vq, 4);
	qt_expect_broken(t, -ELOOP);
	qt_free(t);
}

/* Every descriptor of the table in one chain that comes back to its start:
 * longer than the queue. */
static void test_chain_longer_than_queue(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 256, RINGS);

	for (unsigned i = 0; i < 256; i++)
		fake_desc(&t->g, FAKE_DESC, (uint16_t)i, FAKE_DATA, 1, VIRTQ_DESC_F_NEXT,
			  (uint16_t)((i + 1) % 256));
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -ELOOP);
	qt_free(t);
}

static void test_avail_idx_ahead(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, 0, 0);
	fake_avail_set_idx(&t->g, &t->vq, 9);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

/* Also after some progress, and with the guest's idx behind ours (it went back). */
static void test_avail_idx_backwards(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, 0);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, 0, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	fake_avail_set_idx(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

static void test_buffer_outside_ram(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_MMIO_BASE, 16, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EFAULT);
	qt_free(t);
}

static void test_buffer_across_ram_end(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_RAM_SIZE - 16, 17, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EFAULT);
	qt_free(t);
}

static void test_buffer_addr_len_overflow(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, 0xfffffffffffff000ULL, 0x2000, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EFAULT);
	qt_free(t);
}

static void test_readable_after_writable(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, FAKE_WNEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, FAKE_DATA, 16, 0, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

/* Descriptors overlapping all of a 32 MiB RAM, 200 of them: over 4 GiB. */
static void test_chain_total_bound(void **state)
{
	const uint64_t ram = 32ULL << 20;
	struct qt *t = qt_new(ram, 256, 0);

	for (unsigned i = 0; i < 200; i++)
		fake_desc(&t->g, FAKE_DESC, (uint16_t)i, 0, (uint32_t)ram, VIRTQ_DESC_F_NEXT,
			  (uint16_t)(i + 1));
	fake_desc(&t->g, FAKE_DESC, 200, 0, 1, 0, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

static void qt_indirect_case(uint64_t features, uint16_t flags, uint64_t addr, uint32_t len,
			     int err)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, features);

	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_DATA, 16, 0, 0);
	fake_desc(&t->g, FAKE_DESC, 0, addr, len, VIRTQ_DESC_F_INDIRECT | flags, 1);
	fake_desc(&t->g, FAKE_DESC, 1, FAKE_DATA, 16, 0, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, err);
	qt_free(t);
}

static void test_indirect_malformed(void **state)
{
	/* Not negotiated. */
	qt_indirect_case(0, 0, FAKE_INDIRECT, 16, -EINVAL);
	/* INDIRECT together with NEXT. */
	qt_indirect_case(RINGS, VIRTQ_DESC_F_NEXT, FAKE_INDIRECT, 16, -EINVAL);
	/* Length zero, not a multiple of 16, bigger than the queue. */
	qt_indirect_case(RINGS, 0, FAKE_INDIRECT, 0, -EINVAL);
	qt_indirect_case(RINGS, 0, FAKE_INDIRECT, 24, -EINVAL);
	qt_indirect_case(RINGS, 0, FAKE_INDIRECT, 9 * 16, -EINVAL);
	/* Table outside RAM, across its end, wrapping. */
	qt_indirect_case(RINGS, 0, FAKE_MMIO_BASE, 16, -EFAULT);
	qt_indirect_case(RINGS, 0, FAKE_RAM_SIZE - 16, 32, -EFAULT);
	qt_indirect_case(RINGS, 0, 0xfffffffffffffff0ULL, 32, -EFAULT);
}

static void test_indirect_nested(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_desc(&t->g, FAKE_DESC, 0, FAKE_INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

/* An indirect descriptor after the head is refused. */
static void test_indirect_not_head(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_DATA, 16, 0, 0);
	fake_desc(&t->g, FAKE_DESC, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, FAKE_INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

static void test_indirect_loop_and_index(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, RINGS);

	/* Two-entry table whose chain goes 0 -> 1 -> 0. */
	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_INDIRECT, 1, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 0);
	fake_desc(&t->g, FAKE_DESC, 0, FAKE_INDIRECT, 32, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -ELOOP);
	qt_free(t);

	/* next beyond the indirect table, though inside the queue size. */
	t = qt_new(FAKE_RAM_SIZE, 8, RINGS);
	fake_desc(&t->g, FAKE_INDIRECT, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 0, FAKE_INDIRECT, 32, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	qt_expect_broken(t, -EINVAL);
	qt_free(t);
}

/* A reset queue starts over: re-enabled, it works from index 0. */
static void test_reset_recovers(void **state)
{
	struct qt *t = qt_new(FAKE_RAM_SIZE, 8, 0);

	fake_avail_add(&t->g, &t->vq, 9);
	qt_expect_broken(t, -EINVAL);
	virtq_reset(&t->q);
	assert_false(virtq_is_ready(&t->q));
	assert_int_equal(virtq_pop(&t->q, &t->c), 0);
	fake_vq_clear(&t->g, &t->vq);
	t->vq.avail_idx = 0;
	t->q.size = 8;
	t->q.desc_gpa = FAKE_DESC;
	t->q.avail_gpa = FAKE_AVAIL;
	t->q.used_gpa = FAKE_USED;
	assert_int_equal(virtq_enable(&t->q, t->g.mem, 8, 0), 0);
	fake_desc(&t->g, FAKE_DESC, 1, FAKE_DATA, 16, 0, 0);
	fake_avail_add(&t->g, &t->vq, 1);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(virtq_push(&t->q, 1, 0), 0);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 1);
	qt_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enable_validation),
		cmocka_unit_test(test_pop_push),
		cmocka_unit_test(test_unpop),
		cmocka_unit_test(test_index_wrap),
		cmocka_unit_test(test_full_ring),
		cmocka_unit_test(test_no_interrupt_flag),
		cmocka_unit_test(test_event_idx),
		cmocka_unit_test(test_indirect),
		cmocka_unit_test(test_chain_copy),
		cmocka_unit_test(test_bad_head_index),
		cmocka_unit_test(test_bad_next_index),
		cmocka_unit_test(test_self_loop),
		cmocka_unit_test(test_chain_longer_than_queue),
		cmocka_unit_test(test_avail_idx_ahead),
		cmocka_unit_test(test_avail_idx_backwards),
		cmocka_unit_test(test_buffer_outside_ram),
		cmocka_unit_test(test_buffer_across_ram_end),
		cmocka_unit_test(test_buffer_addr_len_overflow),
		cmocka_unit_test(test_readable_after_writable),
		cmocka_unit_test(test_chain_total_bound),
		cmocka_unit_test(test_indirect_malformed),
		cmocka_unit_test(test_indirect_nested),
		cmocka_unit_test(test_indirect_not_head),
		cmocka_unit_test(test_indirect_loop_and_index),
		cmocka_unit_test(test_reset_recovers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
