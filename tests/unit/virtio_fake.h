/*
 * A fake virtio driver for unit tests: guest RAM from guest_mem_create(), ring
 * structures written into it the way a guest driver would, and register
 * accesses made through io_dispatch() the way a vCPU thread would. Every
 * helper is static inline so each test file uses what it needs.
 */
#ifndef KILN_TESTS_VIRTIO_FAKE_H
#define KILN_TESTS_VIRTIO_FAKE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "util.h"
#include "vmm/io.h"
#include "vmm/memory.h"
#include "vmm/virtio/mmio.h"
#include "vmm/virtio/queue.h"
#include "vmm/virtio/virtio.h"

#define FAKE_RAM_SIZE (2ULL << 20)
#define FAKE_MMIO_BASE 0xd0000000ULL

/* Where the fake driver puts things (all inside FAKE_RAM_SIZE). */
#define FAKE_DESC 0x10000ULL
#define FAKE_AVAIL 0x14000ULL
#define FAKE_USED 0x18000ULL
#define FAKE_INDIRECT 0x1c000ULL
#define FAKE_DATA 0x40000ULL

/* Register offsets straight from the spec (§4.2.2), independent of mmio.c. */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_VENDOR_ID 0x00c
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INT_STATUS 0x060
#define R_INT_ACK 0x064
#define R_STATUS 0x070
#define R_QUEUE_DESC_LO 0x080
#define R_QUEUE_DESC_HI 0x084
#define R_QUEUE_DRIVER_LO 0x090
#define R_QUEUE_DRIVER_HI 0x094
#define R_QUEUE_DEVICE_LO 0x0a0
#define R_QUEUE_DEVICE_HI 0x0a4
#define R_CONFIG_GEN 0x0fc
#define R_CONFIG 0x100

#define FAKE_VERSION_1 VIRTIO_BIT(VIRTIO_F_VERSION_1)
#define FAKE_WNEXT (VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT)

struct fake_guest {
	struct guest_mem *mem;
	struct io_bus bus;
	struct virtio_mmio_dev *dev;
	unsigned irqs;
};

/* The driver's view of one split queue. */
struct fake_vq {
	uint16_t size;
	uint64_t desc;
	uint64_t avail;
	uint64_t used;
	uint16_t avail_idx;
};

static inline void fake_irq(void *ctx)
{
	((struct fake_guest *)ctx)->irqs++;
}

static inline void *fake_ptr(struct fake_guest *g, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(g->mem, gpa, len);

	assert_non_null(p);
	return p;
}

/* Guest RAM only (queue tests), mem_size bytes. */
static inline void fake_mem_init(struct fake_guest *g, uint64_t mem_size)
{
	memset(g, 0, sizeof(*g));
	assert_int_equal(guest_mem_create(&g->mem, mem_size), 0);
}

/* Guest RAM plus a transport for ops/dev, registered at FAKE_MMIO_BASE. */
static inline void fake_init(struct fake_guest *g, const struct virtio_dev_ops *ops, void *dev)
{
	fake_mem_init(g, FAKE_RAM_SIZE);
	assert_int_equal(virtio_mmio_create(&g->dev, ops, dev, g->mem, fake_irq, g), 0);
	assert_int_equal(virtio_mmio_register(g->dev, &g->bus, FAKE_MMIO_BASE), 0);
}

static inline void fake_fini(struct fake_guest *g)
{
	virtio_mmio_free(g->dev);
	guest_mem_free(g->mem);
	memset(g, 0, sizeof(*g));
}

static inline uint32_t fake_rd(struct fake_guest *g, uint64_t off)
{
	uint32_t v = 0xdeadbeef;

	assert_true(io_dispatch(&g->bus, FAKE_MMIO_BASE + off, (uint8_t *)&v, 4, false));
	return v;
}

static inline void fake_wr(struct fake_guest *g, uint64_t off, uint32_t v)
{
	assert_true(io_dispatch(&g->bus, FAKE_MMIO_BASE + off, (uint8_t *)&v, 4, true));
}

/* The standard queue placement for size entries. */
static inline struct fake_vq fake_vq_std(uint16_t size)
{
	return (struct fake_vq){ .size = size, .desc = FAKE_DESC, .avail = FAKE_AVAIL,
				 .used = FAKE_USED };
}

/* Zero the rings as a driver allocating them would. */
static inline void fake_vq_clear(struct fake_guest *g, const struct fake_vq *vq)
{
	memset(fake_ptr(g, vq->desc, 16ULL * vq->size), 0, 16ULL * vq->size);
	memset(fake_ptr(g, vq->avail, 6 + 2ULL * vq->size), 0, 6 + 2ULL * vq->size);
	memset(fake_ptr(g, vq->used, 6 + 8ULL * vq->size), 0, 6 + 8ULL * vq->size);
}

/* Entry i of the descriptor table at gpa table. */
static inline void fake_desc(struct fake_guest *g, uint64_t table, uint16_t i, uint64_t addr,
			     uint32_t len, uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { .addr = addr, .len = len, .flags = flags, .next = next };

	memcpy(fake_ptr(g, table + 16ULL * i, 16), &d, sizeof(d));
}

static inline void fake_avail_set_idx(struct fake_guest *g, struct fake_vq *vq, uint16_t idx)
{
	struct virtq_avail *a = fake_ptr(g, vq->avail, 4);

	vq->avail_idx = idx;
	__atomic_store_n(&a->idx, idx, __ATOMIC_RELEASE);
}

/* Make chain head available. */
static inline void fake_avail_add(struct fake_guest *g, struct fake_vq *vq, uint16_t head)
{
	struct virtq_avail *a = fake_ptr(g, vq->avail, 4 + 2ULL * vq->size);

	a->ring[vq->avail_idx & (vq->size - 1)] = head;
	fake_avail_set_idx(g, vq, (uint16_t)(vq->avail_idx + 1));
}

static inline void fake_avail_flags(struct fake_guest *g, struct fake_vq *vq, uint16_t flags)
{
	struct virtq_avail *a = fake_ptr(g, vq->avail, 4);

	a->flags = flags;
}

/* used_event lives after avail->ring[size]. */
static inline void fake_used_event(struct fake_guest *g, struct fake_vq *vq, uint16_t ev)
{
	struct virtq_avail *a = fake_ptr(g, vq->avail, 6 + 2ULL * vq->size);

	a->ring[vq->size] = ev;
}

/* avail_event lives after used->ring[size]. */
static inline uint16_t fake_avail_event(struct fake_guest *g, struct fake_vq *vq)
{
	uint16_t v;

	memcpy(&v, fake_ptr(g, vq->used + 4 + 8ULL * vq->size, 2), 2);
	return v;
}

static inline uint16_t fake_used_idx(struct fake_guest *g, struct fake_vq *vq)
{
	struct virtq_used *u = fake_ptr(g, vq->used, 4);

	return __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);
}

/* Wait (at most wait_ms, else fail the test) until fewer than slots of the
 * queued chains are still with the device (chains come back in order). */
static inline void fake_wait_room(struct fake_guest *g, struct fake_vq *vq, uint16_t queued,
				  uint16_t slots, unsigned wait_ms)
{
	uint64_t end = now_ns() + (uint64_t)wait_ms * 1000000;

	while ((uint16_t)(queued - fake_used_idx(g, vq)) >= slots) {
		assert_true(now_ns() < end);
		usleep(100);
	}
}

static inline struct virtq_used_elem fake_used_elem(struct fake_guest *g, struct fake_vq *vq,
						    uint16_t i)
{
	struct virtq_used *u = fake_ptr(g, vq->used, 4 + 8ULL * vq->size);

	return u->ring[i & (vq->size - 1)];
}

/* ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the Status read back. */
static inline uint32_t fake_negotiate(struct fake_guest *g, uint64_t features)
{
	fake_wr(g, R_STATUS, 0);
	fake_wr(g, R_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	fake_wr(g, R_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	fake_wr(g, R_DRV_FEATURES_SEL, 0);
	fake_wr(g, R_DRV_FEATURES, (uint32_t)features);
	fake_wr(g, R_DRV_FEATURES_SEL, 1);
	fake_wr(g, R_DRV_FEATURES, (uint32_t)(features >> 32));
	fake_wr(g, R_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		VIRTIO_STATUS_FEATURES_OK);
	return fake_rd(g, R_STATUS);
}

/* Program queue qidx from vq and set QueueReady; returns QueueReady read back. */
static inline uint32_t fake_queue_setup(struct fake_guest *g, uint32_t qidx,
					const struct fake_vq *vq)
{
	fake_wr(g, R_QUEUE_SEL, qidx);
	fake_wr(g, R_QUEUE_NUM, vq->size);
	fake_wr(g, R_QUEUE_DESC_LO, (uint32_t)vq->desc);
	fake_wr(g, R_QUEUE_DESC_HI, (uint32_t)(vq->desc >> 32));
	fake_wr(g, R_QUEUE_DRIVER_LO, (uint32_t)vq->avail);
	fake_wr(g, R_QUEUE_DRIVER_HI, (uint32_t)(vq->avail >> 32));
	fake_wr(g, R_QUEUE_DEVICE_LO, (uint32_t)vq->used);
	fake_wr(g, R_QUEUE_DEVICE_HI, (uint32_t)(vq->used >> 32));
	fake_wr(g, R_QUEUE_READY, 1);
	return fake_rd(g, R_QUEUE_READY);
}

static inline void fake_driver_ok(struct fake_guest *g)
{
	uint32_t s = fake_rd(g, R_STATUS);

	fake_wr(g, R_STATUS, s | VIRTIO_STATUS_DRIVER_OK);
}

/* The whole handshake for a one-queue device using vq. */
static inline void fake_bring_up(struct fake_guest *g, struct fake_vq *vq, uint64_t features)
{
	assert_true(fake_negotiate(g, features) & VIRTIO_STATUS_FEATURES_OK);
	fake_vq_clear(g, vq);
	vq->avail_idx = 0;
	assert_int_equal(fake_queue_setup(g, 0, vq), 1);
	fake_driver_ok(g);
	assert_true(fake_rd(g, R_STATUS) & VIRTIO_STATUS_DRIVER_OK);
}

static inline void fake_notify(struct fake_guest *g, uint32_t qidx)
{
	fake_wr(g, R_QUEUE_NOTIFY, qidx);
}

static inline int fake_needs_reset(struct fake_guest *g)
{
	return (fake_rd(g, R_STATUS) & VIRTIO_STATUS_NEEDS_RESET) != 0;
}

#endif
