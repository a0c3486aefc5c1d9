/*
 * virtio-mmio transport tests, driven through io_dispatch() like a vCPU:
 * identity registers, the feature handshake, queue set-up, notification and
 * interrupts, reset, config space, and malformed rings ending in NEEDS_RESET.
 * virtio-rng doubles as the real device behind the transport.
 */
#include "virtio_fake.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmm/virtio/rng.h"

#define RINGS (VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))
#define INT_VRING 1
#define INT_CONFIG 2

/* ---- a test device that records what the transport does to it ---- */

struct tdev {
	uint8_t config[12];
	unsigned activated, resets, notifies, config_writes;
	uint64_t features;
	unsigned last_qidx;
	int notify_ret;
	int activate_ret;
	struct virtq_chain chain;
};

static uint64_t tdev_features(void *dev)
{
	/* Bit 30 is a transport bit a device may not offer: the transport masks it. */
	return VIRTIO_BIT(3) | VIRTIO_BIT(23) | VIRTIO_BIT(30);
}

static void tdev_config_read(void *dev, uint32_t off, void *data, uint32_t len)
{
	struct tdev *t = dev;

	memcpy(data, t->config + off, len);
}

static void tdev_config_write(void *dev, uint32_t off, const void *data, uint32_t len)
{
	struct tdev *t = dev;

	memcpy(t->config + off, data, len);
	t->config_writes++;
}

static int tdev_activate(void *dev, uint64_t features)
{
	struct tdev *t = dev;

	t->activated++;
	t->features = features;
	return t->activate_ret;
}

/* Completes every chain with its writable length, then fails if told to. */
static int tdev_notify(void *dev, struct virtq *q, unsigned qidx)
{
	struct tdev *t = dev;
	int ret;

	t->notifies++;
	t->last_qidx = qidx;
	while ((ret = virtq_pop(q, &t->chain)) > 0) {
		ret = virtq_push(q, t->chain.head, t->chain.in_bytes);
		if (ret < 0)
			break;
	}
	return ret < 0 ? ret : t->notify_ret;
}

static void tdev_reset(void *dev)
{
	((struct tdev *)dev)->resets++;
}

static const struct virtio_dev_ops tdev_ops = {
	.name = "test",
	.device_id = 42,
	.num_queues = 2,
	.queue_max = 16,
	.config_size = 12,
	.features = tdev_features,
	.config_read = tdev_config_read,
	.config_write = tdev_config_write,
	.activate = tdev_activate,
	.notify = tdev_notify,
	.reset = tdev_reset,
};

struct mt {
	struct fake_guest g;
	struct tdev t;
	struct vrng *rng;
	struct fake_vq vq;
};

static struct mt *mt_new_tdev(void)
{
	struct mt *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	fake_init(&m->g, &tdev_ops, &m->t);
	m->vq = fake_vq_std(16);
	return m;
}

static struct mt *mt_new_rng(uint16_t qsize)
{
	struct mt *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	assert_int_equal(vrng_create(&m->rng), 0);
	fake_init(&m->g, &vrng_ops, m->rng);
	m->vq = fake_vq_std(qsize);
	return m;
}

static void mt_free(struct mt *m)
{
	fake_fini(&m->g);
	vrng_free(m->rng);
	free(m);
}

static void test_identity(void **state)
{
	struct mt *m = mt_new_tdev();

	assert_int_equal(fake_rd(&m->g, R_MAGIC), 0x74726976);
	assert_int_equal(fake_rd(&m->g, R_VERSION), 2);
	assert_int_equal(fake_rd(&m->g, R_DEVICE_ID), 42);
	assert_int_not_equal(fake_rd(&m->g, R_VENDOR_ID), 0xdeadbeef);
	assert_int_equal(fake_rd(&m->g, R_STATUS), 0);
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), 0);
	assert_int_equal(fake_rd(&m->g, R_CONFIG_GEN), 0);
	/* Write-only and reserved registers read as 0; reads have no effect. */
	assert_int_equal(fake_rd(&m->g, R_QUEUE_NOTIFY), 0);
	assert_int_equal(fake_rd(&m->g, 0x0f0), 0);
	/* Writes to read-only registers change nothing. */
	fake_wr(&m->g, R_MAGIC, 0);
	fake_wr(&m->g, R_DEVICE_ID, 7);
	assert_int_equal(fake_rd(&m->g, R_MAGIC), 0x74726976);
	assert_int_equal(fake_rd(&m->g, R_DEVICE_ID), 42);
	mt_free(m);
}

static void test_narrow_register_access(void **state)
{
	struct mt *m = mt_new_tdev();
	uint8_t b[8];
	uint16_t h = VIRTIO_STATUS_ACKNOWLEDGE;

	memset(b, 0x55, sizeof(b));
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_MAGIC, b, 1, false));
	assert_int_equal(b[0], 0);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_MAGIC, b, 2, false));
	assert_int_equal(b[0] | b[1], 0);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_MAGIC, b, 8, false));
	assert_int_equal(b[0] | b[7], 0);
	/* Misaligned 32-bit access. */
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_MAGIC + 2, b, 4, false));
	assert_int_equal(b[0] | b[3], 0);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_STATUS, (uint8_t *)&h, 2, true));
	assert_int_equal(fake_rd(&m->g, R_STATUS), 0);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_STATUS + 1, b, 4, true));
	assert_int_equal(fake_rd(&m->g, R_STATUS), 0);
	/* The end of the window is still ours; beyond it is not. */
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + VIRTIO_MMIO_SIZE - 4, b, 4, false));
	assert_false(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + VIRTIO_MMIO_SIZE, b, 4, false));
	mt_free(m);
}

static void test_features(void **state)
{
	struct mt *m = mt_new_tdev();
	uint32_t lo, hi;

	fake_wr(&m->g, R_DEV_FEATURES_SEL, 0);
	lo = fake_rd(&m->g, R_DEV_FEATURES);
	fake_wr(&m->g, R_DEV_FEATURES_SEL, 1);
	hi = fake_rd(&m->g, R_DEV_FEATURES);
	assert_int_equal(lo, (1u << 3) | (1u << 23) | (1u << VIRTIO_RING_F_INDIRECT_DESC) |
			 (1u << VIRTIO_RING_F_EVENT_IDX));
	assert_int_equal(hi, 1u << (VIRTIO_F_VERSION_1 - 32));
	fake_wr(&m->g, R_DEV_FEATURES_SEL, 2);
	assert_int_equal(fake_rd(&m->g, R_DEV_FEATURES), 0);
	fake_wr(&m->g, R_DEV_FEATURES_SEL, 0xffffffff);
	assert_int_equal(fake_rd(&m->g, R_DEV_FEATURES), 0);
	mt_free(m);
}

static void test_features_ok_refused(void **state)
{
	struct mt *m = mt_new_tdev();

	/* A legacy driver: everything but VERSION_1. */
	assert_false(fake_negotiate(&m->g, VIRTIO_BIT(3) | RINGS) & VIRTIO_STATUS_FEATURES_OK);
	/* A bit never offered (the masked transport bit 30, device bit 4). */
	assert_false(fake_negotiate(&m->g, FAKE_VERSION_1 | VIRTIO_BIT(30)) &
		     VIRTIO_STATUS_FEATURES_OK);
	assert_false(fake_negotiate(&m->g, FAKE_VERSION_1 | VIRTIO_BIT(4)) &
		     VIRTIO_STATUS_FEATURES_OK);
	/* DRIVER_OK without FEATURES_OK is refused too, and nothing activates. */
	fake_driver_ok(&m->g);
	assert_false(fake_rd(&m->g, R_STATUS) & VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(m->t.activated, 0);

	assert_true(fake_negotiate(&m->g, FAKE_VERSION_1 | VIRTIO_BIT(3)) &
		    VIRTIO_STATUS_FEATURES_OK);
	/* Features are frozen once FEATURES_OK is set. */
	fake_wr(&m->g, R_DRV_FEATURES_SEL, 0);
	fake_wr(&m->g, R_DRV_FEATURES, 0);
	fake_driver_ok(&m->g);
	assert_int_equal(m->t.activated, 1);
	assert_int_equal(m->t.features, FAKE_VERSION_1 | VIRTIO_BIT(3));
	mt_free(m);
}

static void test_status_only_grows(void **state)
{
	struct mt *m = mt_new_tdev();

	fake_negotiate(&m->g, FAKE_VERSION_1);
	/* Clearing a bit without a full reset is ignored. */
	fake_wr(&m->g, R_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	assert_int_equal(fake_rd(&m->g, R_STATUS), VIRTIO_STATUS_ACKNOWLEDGE |
			 VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	/* The driver cannot set NEEDS_RESET itself. */
	fake_wr(&m->g, R_STATUS, fake_rd(&m->g, R_STATUS) | VIRTIO_STATUS_NEEDS_RESET);
	assert_false(fake_needs_reset(&m->g));
	assert_int_equal(m->g.irqs, 0);
	mt_free(m);
}

static void test_queue_setup(void **state)
{
	struct mt *m = mt_new_tdev();
	struct fake_vq vq2 = m->vq;

	fake_wr(&m->g, R_QUEUE_SEL, 0);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_NUM_MAX), 16);
	fake_wr(&m->g, R_QUEUE_SEL, 1);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_NUM_MAX), 16);
	fake_wr(&m->g, R_QUEUE_SEL, 2);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_NUM_MAX), 0);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_READY), 0);

	/* Before FEATURES_OK a queue cannot go ready. */
	assert_int_equal(fake_queue_setup(&m->g, 0, &m->vq), 0);
	assert_false(fake_needs_reset(&m->g));

	fake_negotiate(&m->g, FAKE_VERSION_1 | RINGS);
	fake_vq_clear(&m->g, &m->vq);
	assert_int_equal(fake_queue_setup(&m->g, 0, &m->vq), 1);
	/* Queue 1 elsewhere, and a queue past the device's ignored. */
	vq2.desc = FAKE_DESC + 0x1000;
	vq2.avail = FAKE_AVAIL + 0x1000;
	vq2.used = FAKE_USED + 0x1000;
	fake_vq_clear(&m->g, &vq2);
	assert_int_equal(fake_queue_setup(&m->g, 1, &vq2), 1);
	assert_int_equal(fake_queue_setup(&m->g, 5, &vq2), 0);
	assert_false(fake_needs_reset(&m->g));

	/* A ready queue's registers are frozen: garbage now changes nothing. */
	fake_wr(&m->g, R_QUEUE_SEL, 0);
	fake_wr(&m->g, R_QUEUE_NUM, 3);
	fake_wr(&m->g, R_QUEUE_DESC_LO, 0x7);
	fake_wr(&m->g, R_QUEUE_DEVICE_HI, 0xffff);
	fake_driver_ok(&m->g);

	fake_desc(&m->g, vq2.desc, 0, FAKE_DATA, 32, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &vq2, 0);
	fake_notify(&m->g, 1);
	assert_int_equal(m->t.last_qidx, 1);
	assert_int_equal(fake_used_idx(&m->g, &vq2), 1);
	assert_int_equal(fake_used_elem(&m->g, &vq2, 0).len, 32);

	fake_desc(&m->g, FAKE_DESC, 3, FAKE_DATA, 16, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 3);
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.last_qidx, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	assert_false(fake_needs_reset(&m->g));

	/* QueueReady 0 turns a queue off (Linux checks it reads back 0). */
	fake_wr(&m->g, R_QUEUE_SEL, 1);
	fake_wr(&m->g, R_QUEUE_READY, 0);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_READY), 0);
	mt_free(m);
}

static void test_notify_and_interrupt(void **state)
{
	struct mt *m = mt_new_tdev();

	/* Kicks before DRIVER_OK reach nobody. */
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.notifies, 0);
	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1);
	assert_int_equal(m->t.activated, 1);
	/* Queue 1 not ready, queue 9 does not exist. */
	fake_notify(&m->g, 1);
	fake_notify(&m->g, 9);
	assert_int_equal(m->t.notifies, 0);

	/* A kick with nothing available: no interrupt. */
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.notifies, 1);
	assert_int_equal(m->g.irqs, 0);

	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_desc(&m->g, FAKE_DESC, 1, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_avail_add(&m->g, &m->vq, 1);
	fake_notify(&m->g, 0);
	/* Two chains, one interrupt. */
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 2);
	assert_int_equal(m->g.irqs, 1);
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), INT_VRING);
	fake_wr(&m->g, R_INT_ACK, INT_VRING);
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), 0);

	/* The driver suppresses interrupts. */
	fake_avail_flags(&m->g, &m->vq, VIRTQ_AVAIL_F_NO_INTERRUPT);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 3);
	assert_int_equal(m->g.irqs, 1);
	mt_free(m);
}

static void test_reset(void **state)
{
	struct mt *m = mt_new_tdev();

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1);
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), INT_VRING);

	/* fake_negotiate() began with one reset already. */
	assert_int_equal(m->t.resets, 1);
	fake_wr(&m->g, R_STATUS, 0);
	assert_int_equal(m->t.resets, 2);
	assert_int_equal(fake_rd(&m->g, R_STATUS), 0);
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), 0);
	fake_wr(&m->g, R_QUEUE_SEL, 0);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_READY), 0);
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.notifies, 1);

	/* And up again from scratch. */
	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1 | RINGS);
	assert_int_equal(m->t.activated, 2);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	mt_free(m);
}

static void test_config_space(void **state)
{
	struct mt *m = mt_new_tdev();
	uint8_t b[8];
	uint32_t w = 0xa1b2c3d4;

	for (int i = 0; i < 12; i++)
		m->t.config[i] = (uint8_t)(0x10 + i);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG + 3, b, 1, false));
	assert_int_equal(b[0], 0x13);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG + 2, b, 2, false));
	assert_int_equal(b[0] | b[1] << 8, 0x1312);
	assert_int_equal(fake_rd(&m->g, R_CONFIG + 8), 0x1b1a1918);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG + 4, b, 8, false));
	assert_int_equal(b[0], 0x14);
	assert_int_equal(b[7], 0x1b);
	/* Past the end, straddling it, odd sizes: zeros, and the device is not asked. */
	assert_int_equal(fake_rd(&m->g, R_CONFIG + 12), 0);
	assert_int_equal(fake_rd(&m->g, R_CONFIG + 0xfc), 0);
	memset(b, 0x55, sizeof(b));
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG + 8, b, 8, false));
	assert_int_equal(b[0] | b[7], 0);
	memset(b, 0x55, sizeof(b));
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG, b, 3, false));
	assert_int_equal(b[0] | b[2], 0);

	fake_wr(&m->g, R_CONFIG + 4, w);
	assert_int_equal(m->t.config_writes, 1);
	assert_int_equal(fake_rd(&m->g, R_CONFIG + 4), w);
	fake_wr(&m->g, R_CONFIG + 10, w);
	assert_true(io_dispatch(&m->g.bus, FAKE_MMIO_BASE + R_CONFIG, b, 3, true));
	assert_int_equal(m->t.config_writes, 1);
	mt_free(m);
}

static void test_device_error_needs_reset(void **state)
{
	struct mt *m = mt_new_tdev();

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1);
	m->t.notify_ret = -EINVAL;
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	/* The completed chain still interrupts, then the config interrupt. */
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	assert_true(fake_needs_reset(&m->g));
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), INT_VRING | INT_CONFIG);
	assert_int_equal(m->g.irqs, 2);
	/* Dead until reset. */
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.notifies, 1);
	m->t.notify_ret = 0;
	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1);
	assert_false(fake_needs_reset(&m->g));
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	mt_free(m);
}

static void test_activate_failure(void **state)
{
	struct mt *m = mt_new_tdev();

	m->t.activate_ret = -ENOMEM;
	assert_true(fake_negotiate(&m->g, FAKE_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	fake_vq_clear(&m->g, &m->vq);
	fake_queue_setup(&m->g, 0, &m->vq);
	fake_driver_ok(&m->g);
	assert_true(fake_needs_reset(&m->g));
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), INT_CONFIG);
	fake_notify(&m->g, 0);
	assert_int_equal(m->t.notifies, 0);
	mt_free(m);
}

static void test_create_bad_ops(void **state)
{
	struct fake_guest g;
	struct virtio_mmio_dev *d = (void *)1;
	struct virtio_dev_ops ops = tdev_ops;

	fake_mem_init(&g, FAKE_RAM_SIZE);
	ops.queue_max = 24;
	assert_int_equal(virtio_mmio_create(&d, &ops, NULL, g.mem, fake_irq, &g), -EINVAL);
	assert_null(d);
	ops = tdev_ops;
	ops.queue_max = 512;
	assert_int_equal(virtio_mmio_create(&d, &ops, NULL, g.mem, fake_irq, &g), -EINVAL);
	ops = tdev_ops;
	ops.num_queues = VIRTIO_MMIO_MAX_QUEUES + 1;
	assert_int_equal(virtio_mmio_create(&d, &ops, NULL, g.mem, fake_irq, &g), -EINVAL);
	ops = tdev_ops;
	ops.config_size = VIRTIO_MMIO_SIZE;
	assert_int_equal(virtio_mmio_create(&d, &ops, NULL, g.mem, fake_irq, &g), -EINVAL);
	ops = tdev_ops;
	ops.notify = NULL;
	assert_int_equal(virtio_mmio_create(&d, &ops, NULL, g.mem, fake_irq, &g), -EINVAL);
	assert_int_equal(virtio_mmio_create(&d, &tdev_ops, NULL, g.mem, NULL, &g), -EINVAL);
	guest_mem_free(g.mem);
}

static void test_cmdline(void **state)
{
	char buf[64];

	assert_int_equal(virtio_mmio_cmdline(buf, sizeof(buf), 0xd0000000, 5), 0);
	assert_string_equal(buf, "virtio_mmio.device=0x200@0xd0000000:5");
	assert_int_equal(virtio_mmio_cmdline(buf, 37, 0xd0000000, 5), -ENOSPC);
	assert_int_equal(virtio_mmio_cmdline(buf, 38, 0xd0000000, 5), 0);
	assert_int_equal(virtio_mmio_cmdline(buf, 0, 0xd0000000, 5), -ENOSPC);
}

/* ---- virtio-rng ---- */

static void test_rng_bytes(void **state)
{
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);
	uint8_t *p = fake_ptr(&m->g, FAKE_DATA, 0x2000);
	unsigned zeros = 0;

	assert_int_equal(fake_rd(&m->g, R_DEVICE_ID), VIRTIO_ID_RNG);
	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1 | RINGS);
	memset(p, 0, 0x2000);
	/* A readable descriptor is ignored; two writable ones of 32 bytes. */
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA + 0x1000, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&m->g, FAKE_DESC, 1, FAKE_DATA, 32, FAKE_WNEXT, 2);
	fake_desc(&m->g, FAKE_DESC, 2, FAKE_DATA + 64, 32, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	assert_int_equal(fake_used_elem(&m->g, &m->vq, 0).id, 0);
	assert_int_equal(fake_used_elem(&m->g, &m->vq, 0).len, 64);
	assert_int_equal(m->g.irqs, 1);
	for (int i = 0; i < 32; i++)
		zeros += (p[i] == 0) + (p[64 + i] == 0);
	assert_true(zeros < 16);
	/* Untouched around them. */
	assert_int_equal(p[32] | p[63] | p[96], 0);
	mt_free(m);
}

static void test_rng_capped(void **state)
{
	const uint32_t len = 2 * VRNG_MAX_REQ;
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);
	uint8_t *p = fake_ptr(&m->g, FAKE_DATA, len);
	unsigned changed = 0;

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1);
	memset(p, 0xa5, len);
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, len, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_elem(&m->g, &m->vq, 0).len, VRNG_MAX_REQ);
	for (uint32_t i = 0; i < VRNG_MAX_REQ; i++)
		changed += p[i] != 0xa5;
	assert_true(changed > VRNG_MAX_REQ - VRNG_MAX_REQ / 64);
	for (uint32_t i = VRNG_MAX_REQ; i < len; i++)
		if (p[i] != 0xa5)
			fail_msg("byte %u past the cap was written", i);
	mt_free(m);
}

/* ---- malformed rings through the transport: NEEDS_RESET, never a crash ---- */

typedef void (*mt_break_fn)(struct mt *m);

static void brk_head_oob(struct mt *m)
{
	fake_avail_add(&m->g, &m->vq, m->vq.size);
}

static void brk_next_oob(struct mt *m)
{
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, FAKE_WNEXT, 100);
	fake_avail_add(&m->g, &m->vq, 0);
}

static void brk_loop(struct mt *m)
{
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, FAKE_WNEXT, 1);
	fake_desc(&m->g, FAKE_DESC, 1, FAKE_DATA, 8, FAKE_WNEXT, 0);
	fake_avail_add(&m->g, &m->vq, 0);
}

static void brk_too_long(struct mt *m)
{
	for (uint16_t i = 0; i < m->vq.size; i++)
		fake_desc(&m->g, FAKE_DESC, i, FAKE_DATA, 8, FAKE_WNEXT,
			  (uint16_t)((i + 1) % m->vq.size));
	fake_avail_add(&m->g, &m->vq, 0);
}

static void brk_avail_ahead(struct mt *m)
{
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_set_idx(&m->g, &m->vq, 0x8000);
}

static void brk_outside_ram(struct mt *m)
{
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_RAM_SIZE, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
}

static void brk_overflow(struct mt *m)
{
	fake_desc(&m->g, FAKE_DESC, 0, UINT64_MAX - 7, 0x100, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 0);
}

static void brk_nested_indirect(struct mt *m)
{
	fake_desc(&m->g, FAKE_INDIRECT, 0, FAKE_INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_desc(&m->g, FAKE_DESC, 0, FAKE_INDIRECT, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fake_avail_add(&m->g, &m->vq, 0);
}

/* Bring rng up, break its ring, kick: NEEDS_RESET with a config interrupt,
 * then nothing is processed until a reset, after which all works again. */
static void mt_break_case(mt_break_fn brk)
{
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);
	uint16_t used;

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1 | RINGS);
	brk(m);
	fake_notify(&m->g, 0);
	assert_true(fake_needs_reset(&m->g));
	assert_true(fake_rd(&m->g, R_INT_STATUS) & INT_CONFIG);
	assert_int_equal(m->g.irqs, 1);

	used = fake_used_idx(&m->g, &m->vq);
	fake_desc(&m->g, FAKE_DESC, 3, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 3);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), used);
	assert_int_equal(m->g.irqs, 1);

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1 | RINGS);
	assert_false(fake_needs_reset(&m->g));
	fake_desc(&m->g, FAKE_DESC, 3, FAKE_DATA, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&m->g, &m->vq, 3);
	fake_notify(&m->g, 0);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), 1);
	assert_int_equal(fake_used_elem(&m->g, &m->vq, 0).len, 8);
	mt_free(m);
}

static void test_malformed_head_oob(void **state) { mt_break_case(brk_head_oob); }
static void test_malformed_next_oob(void **state) { mt_break_case(brk_next_oob); }
static void test_malformed_loop(void **state) { mt_break_case(brk_loop); }
static void test_malformed_too_long(void **state) { mt_break_case(brk_too_long); }
static void test_malformed_avail_ahead(void **state) { mt_break_case(brk_avail_ahead); }
static void test_malformed_outside_ram(void **state) { mt_break_case(brk_outside_ram); }
static void test_malformed_overflow(void **state) { mt_break_case(brk_overflow); }
static void test_malformed_nested_indirect(void **state) { mt_break_case(brk_nested_indirect); }

/* Queue set-up the device must refuse: QueueReady stays 0, NEEDS_RESET. */
static void mt_bad_queue(struct fake_vq vq)
{
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);

	assert_true(fake_negotiate(&m->g, FAKE_VERSION_1 | RINGS) & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(fake_queue_setup(&m->g, 0, &vq), 0);
	assert_true(fake_needs_reset(&m->g));
	assert_int_equal(fake_rd(&m->g, R_INT_STATUS), INT_CONFIG);
	fake_driver_ok(&m->g);
	fake_notify(&m->g, 0);
	mt_free(m);
}

static void test_malformed_queue_setup(void **state)
{
	struct fake_vq vq = fake_vq_std(16);

	vq.desc = FAKE_RAM_SIZE - 16 * 8;	/* across the end of RAM */
	mt_bad_queue(vq);
	vq = fake_vq_std(16);
	vq.avail = FAKE_RAM_SIZE - 8;
	mt_bad_queue(vq);
	vq = fake_vq_std(16);
	vq.used = FAKE_RAM_SIZE - 4 - 8 * 16;	/* fits only without avail_event */
	mt_bad_queue(vq);
	vq = fake_vq_std(16);
	vq.used = 0xfffffffffffffffcULL;
	mt_bad_queue(vq);
	vq = fake_vq_std(16);
	vq.desc = FAKE_DESC + 4;		/* misaligned */
	mt_bad_queue(vq);
	vq = fake_vq_std(12);			/* not a power of two */
	mt_bad_queue(vq);
	vq = fake_vq_std(VRNG_QUEUE_SIZE * 2);	/* over QueueNumMax */
	mt_bad_queue(vq);
	vq = fake_vq_std(0);
	mt_bad_queue(vq);
}

/* QueueNum over 16 bits must not wrap into a valid size. */
static void test_queue_num_truncation(void **state)
{
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);

	fake_negotiate(&m->g, FAKE_VERSION_1);
	fake_vq_clear(&m->g, &m->vq);
	fake_queue_setup(&m->g, 0, &m->vq);
	fake_wr(&m->g, R_STATUS, 0);
	fake_negotiate(&m->g, FAKE_VERSION_1);
	fake_wr(&m->g, R_QUEUE_SEL, 0);
	fake_wr(&m->g, R_QUEUE_NUM, 0x10010);
	fake_wr(&m->g, R_QUEUE_DESC_LO, FAKE_DESC);
	fake_wr(&m->g, R_QUEUE_DRIVER_LO, FAKE_AVAIL);
	fake_wr(&m->g, R_QUEUE_DEVICE_LO, FAKE_USED);
	fake_wr(&m->g, R_QUEUE_READY, 1);
	assert_int_equal(fake_rd(&m->g, R_QUEUE_READY), 0);
	assert_true(fake_needs_reset(&m->g));
	mt_free(m);
}

/* ---- concurrency smoke: vCPU threads hitting one device at once ---- */

struct hammer {
	struct mt *m;
	unsigned id;
};

static void *hammer_fn(void *arg)
{
	struct hammer *h = arg;

	for (unsigned i = 0; i < 20000; i++) {
		switch ((i + h->id) % 4) {
		case 0:
			fake_notify(&h->m->g, 0);
			break;
		case 1:
			(void)fake_rd(&h->m->g, R_INT_STATUS);
			break;
		case 2:
			fake_wr(&h->m->g, R_INT_ACK, INT_VRING);
			break;
		default:
			(void)fake_rd(&h->m->g, R_STATUS);
			break;
		}
	}
	return NULL;
}

static void test_concurrent_access(void **state)
{
	struct mt *m = mt_new_rng(VRNG_QUEUE_SIZE);
	struct hammer h[4];
	pthread_t th[4];

	fake_bring_up(&m->g, &m->vq, FAKE_VERSION_1 | RINGS);
	for (uint16_t i = 0; i < VRNG_QUEUE_SIZE; i++) {
		fake_desc(&m->g, FAKE_DESC, i, FAKE_DATA + 16ULL * i, 16, VIRTQ_DESC_F_WRITE, 0);
		fake_avail_add(&m->g, &m->vq, i);
	}
	for (unsigned i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .m = m, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, hammer_fn, &h[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(fake_used_idx(&m->g, &m->vq), VRNG_QUEUE_SIZE);
	assert_false(fake_needs_reset(&m->g));
	mt_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_narrow_register_access),
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_features_ok_refused),
		cmocka_unit_test(test_status_only_grows),
		cmocka_unit_test(test_queue_setup),
		cmocka_unit_test(test_notify_and_interrupt),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_config_space),
		cmocka_unit_test(test_device_error_needs_reset),
		cmocka_unit_test(test_activate_failure),
		cmocka_unit_test(test_create_bad_ops),
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_rng_bytes),
		cmocka_unit_test(test_rng_capped),
		cmocka_unit_test(test_malformed_head_oob),
		cmocka_unit_test(test_malformed_next_oob),
		cmocka_unit_test(test_malformed_loop),
		cmocka_unit_test(test_malformed_too_long),
		cmocka_unit_test(test_malformed_avail_ahead),
		cmocka_unit_test(test_malformed_outside_ram),
		cmocka_unit_test(test_malformed_overflow),
		cmocka_unit_test(test_malformed_nested_indirect),
		cmocka_unit_test(test_malformed_queue_setup),
		cmocka_unit_test(test_queue_num_truncation),
		cmocka_unit_test(test_concurrent_access),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
