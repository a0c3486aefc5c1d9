#include "vmm/virtio/mmio.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/io.h"
#include "vmm/snapfile.h"
#include "vmm/virtio/queue.h"

/* Register offsets (§4.2.2). */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_SHM_LEN_LOW 0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH 0x0b4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976	/* "virt" */
#define VIRTIO_MMIO_VENDOR 0x4e4c494b	/* "KILN" */

#define VIRTIO_MMIO_INT_VRING 0x1
#define VIRTIO_MMIO_INT_CONFIG 0x2

/* What the transport offers on top of the device's own bits. */
#define VIRTIO_MMIO_FEATURES (VIRTIO_BIT(VIRTIO_F_VERSION_1) | \
			      VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | \
			      VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))
/* Bits 0-23 are device-specific; a device may not offer transport bits. */
#define VIRTIO_MMIO_DEV_FEATURE_MASK ((1ULL << 24) - 1)

struct virtio_mmio_dev {
	pthread_mutex_t lock;	/* everything below, and every call into the device */
	const struct virtio_dev_ops *ops;
	void *dev;
	const struct guest_mem *mem;
	void (*irq)(void *ctx);
	void *irq_ctx;
	uint64_t offered;
	uint64_t driver_features;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	uint32_t status;
	uint32_t int_status;
	uint32_t config_gen;
	struct virtq queues[VIRTIO_MMIO_MAX_QUEUES];
};

static void virtio_mmio_interrupt(struct virtio_mmio_dev *d, uint32_t why)
{
	d->int_status |= why;
	d->irq(d->irq_ctx);
}

/*
 * The guest broke the device (malformed ring or request): stop processing
 * until it writes 0 to Status, and tell it through a config interrupt (§2.1.2).
 */
static void virtio_mmio_needs_reset(struct virtio_mmio_dev *d)
{
	if (d->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	d->status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_mmio_interrupt(d, VIRTIO_MMIO_INT_CONFIG);
}

static void virtio_mmio_reset(struct virtio_mmio_dev *d)
{
	if (d->ops->reset)
		d->ops->reset(d->dev);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		virtq_reset(&d->queues[i]);
	d->driver_features = 0;
	d->device_features_sel = 0;
	d->driver_features_sel = 0;
	d->queue_sel = 0;
	d->status = 0;
	d->int_status = 0;
}

/* The selected queue, or NULL past the device's queues. */
static struct virtq *virtio_mmio_queue(struct virtio_mmio_dev *d)
{
	return d->queue_sel < d->ops->num_queues ? &d->queues[d->queue_sel] : NULL;
}

/* Interrupt once for whatever the device pushed on any of its queues. */
static void virtio_mmio_signal_used(struct virtio_mmio_dev *d)
{
	bool need = false;

	for (unsigned i = 0; i < d->ops->num_queues; i++)
		need |= virtq_need_interrupt(&d->queues[i]);
	if (need)
		virtio_mmio_interrupt(d, VIRTIO_MMIO_INT_VRING);
}

static void virtio_mmio_set_status(struct virtio_mmio_dev *d, uint32_t val)
{
	uint32_t old = d->status, added;

	if (val == 0) {
		virtio_mmio_reset(d);
		return;
	}
	/* NEEDS_RESET is the device's; the driver only ever adds bits. */
	val = (val & 0xff & ~VIRTIO_STATUS_NEEDS_RESET) | (old & VIRTIO_STATUS_NEEDS_RESET);
	if (old & ~val)
		return;
	added = val & ~old;
	/* Refusing FEATURES_OK is how the device says no (§3.1.1): legacy
	 * drivers (no VERSION_1) and bits never offered. */
	if ((added & VIRTIO_STATUS_FEATURES_OK) &&
	    (!(d->driver_features & VIRTIO_BIT(VIRTIO_F_VERSION_1)) ||
	     (d->driver_features & ~d->offered)))
		val &= ~VIRTIO_STATUS_FEATURES_OK;
	if ((added & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK))
		val &= ~VIRTIO_STATUS_DRIVER_OK;
	d->status = val;
	if ((val & ~old & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_NEEDS_RESET) &&
	    d->ops->activate && d->ops->activate(d->dev, d->driver_features) < 0)
		virtio_mmio_needs_reset(d);
}

static void virtio_mmio_queue_ready(struct virtio_mmio_dev *d, uint32_t val)
{
	struct virtq *q = virtio_mmio_queue(d);

	if (!q)
		return;
	if (val == 0) {
		/* Linux writes 0 when it deletes a queue and checks it reads back 0. */
		virtq_reset(q);
		return;
	}
	if (val != 1 || virtq_is_ready(q) || !(d->status & VIRTIO_STATUS_FEATURES_OK))
		return;
	q->dev_name = d->ops->name;
	q->index = (uint16_t)(q - d->queues);
	if (virtq_enable(q, d->mem, d->ops->queue_max, d->driver_features) < 0)
		virtio_mmio_needs_reset(d);
}

static void virtio_mmio_queue_notify(struct virtio_mmio_dev *d, uint32_t idx)
{
	const uint32_t running = VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET;
	int ret;

	if (idx >= d->ops->num_queues || (d->status & running) != VIRTIO_STATUS_DRIVER_OK ||
	    !virtq_is_ready(&d->queues[idx]))
		return;
	ret = d->ops->notify(d->dev, &d->queues[idx], idx);
	/* Requests completed before a failure still get their interrupt. */
	virtio_mmio_signal_used(d);
	if (ret < 0)
		virtio_mmio_needs_reset(d);
}

/* Replace the low or high half (at +4) of a queue address, only while the queue is off. */
static void virtio_mmio_queue_addr(const struct virtq *q, uint64_t *which, uint64_t off,
				   uint32_t val)
{
	if (virtq_is_ready(q))
		return;
	if (off & 4)
		*which = (*which & 0xffffffffULL) | ((uint64_t)val << 32);
	else
		*which = (*which & ~0xffffffffULL) | val;
}

static uint32_t virtio_mmio_read(struct virtio_mmio_dev *d, uint64_t off)
{
	const struct virtq *q = virtio_mmio_queue(d);
	uint32_t val = 0;

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		val = VIRTIO_MMIO_MAGIC;
		break;
	case VIRTIO_MMIO_VERSION:
		val = 2;
		break;
	case VIRTIO_MMIO_DEVICE_ID:
		val = d->ops->device_id;
		break;
	case VIRTIO_MMIO_VENDOR_ID:
		val = VIRTIO_MMIO_VENDOR;
		break;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		if (d->device_features_sel < 2)
			val = (uint32_t)(d->offered >> (32 * d->device_features_sel));
		break;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		val = q ? d->ops->queue_max : 0;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		val = q && virtq_is_ready(q);
		break;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		val = d->int_status;
		break;
	case VIRTIO_MMIO_STATUS:
		val = d->status;
		break;
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
		/* No shared memory regions: every one reads as length -1. */
		val = 0xffffffff;
		break;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		val = d->config_gen;
		break;
	default:
		/* Write-only and reserved registers read as 0. */
		break;
	}
	return val;
}

static void virtio_mmio_write(struct virtio_mmio_dev *d, uint64_t off, uint32_t val)
{
	struct virtq *q = virtio_mmio_queue(d);

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		d->device_features_sel = val;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		/* Frozen once FEATURES_OK is set (§3.1.1). */
		if (d->driver_features_sel < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned shift = 32 * d->driver_features_sel;

			d->driver_features &= ~(0xffffffffULL << shift);
			d->driver_features |= (uint64_t)val << shift;
		}
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		d->driver_features_sel = val;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		d->queue_sel = val;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		/* Out of range sizes become 0, which virtq_enable() refuses,
		 * rather than being truncated into a valid one. */
		if (q && !virtq_is_ready(q))
			q->size = val <= UINT16_MAX ? (uint16_t)val : 0;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		virtio_mmio_queue_ready(d, val);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		virtio_mmio_queue_notify(d, val);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		d->int_status &= ~val;
		break;
	case VIRTIO_MMIO_STATUS:
		virtio_mmio_set_status(d, val);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (q)
			virtio_mmio_queue_addr(q, &q->desc_gpa, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		if (q)
			virtio_mmio_queue_addr(q, &q->avail_gpa, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		if (q)
			virtio_mmio_queue_addr(q, &q->used_gpa, off, val);
		break;
	default:
		/* Read-only and reserved registers ignore writes. */
		break;
	}
}

/* Device config space: 1/2/4/8-byte accesses wholly inside config_size. */
static void virtio_mmio_config(struct virtio_mmio_dev *d, uint64_t off, uint8_t *data,
			       uint32_t len, bool is_write)
{
	bool ok = (len == 1 || len == 2 || len == 4 || len == 8) &&
		  off < d->ops->config_size && len <= d->ops->config_size - off;

	if (is_write) {
		if (ok && d->ops->config_write)
			d->ops->config_write(d->dev, (uint32_t)off, data, len);
		return;
	}
	memset(data, 0, len);
	if (ok && d->ops->config_read)
		d->ops->config_read(d->dev, (uint32_t)off, data, len);
}

/* io_fn: any vCPU thread, concurrently. */
static void virtio_mmio_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct virtio_mmio_dev *d = opaque;
	uint32_t val = 0;

	pthread_mutex_lock(&d->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		virtio_mmio_config(d, off - VIRTIO_MMIO_CONFIG, data, len, is_write);
	} else if (len != 4 || off % 4) {
		/* Registers are 32-bit only (§4.2.2.2); others are ignored. */
		if (!is_write)
			memset(data, 0, len);
	} else if (is_write) {
		memcpy(&val, data, sizeof(val));
		virtio_mmio_write(d, off, val);
	} else {
		val = virtio_mmio_read(d, off);
		memcpy(data, &val, sizeof(val));
	}
	pthread_mutex_unlock(&d->lock);
}

int virtio_mmio_create(struct virtio_mmio_dev **out, const struct virtio_dev_ops *ops, void *dev,
		       const struct guest_mem *mem, void (*irq)(void *ctx), void *irq_ctx)
{
	struct virtio_mmio_dev *d = NULL;
	int ret = -EINVAL;

	*out = NULL;
	if (!ops || !mem || !irq || !ops->notify || ops->num_queues == 0 ||
	    ops->num_queues > VIRTIO_MMIO_MAX_QUEUES || ops->queue_max == 0 ||
	    ops->queue_max > VIRTQ_MAX_SIZE || (ops->queue_max & (ops->queue_max - 1)) ||
	    ops->config_size > VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG)
		goto out;
	ret = -ENOMEM;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto out;
	ret = -pthread_mutex_init(&d->lock, NULL);
	if (ret)
		goto out;
	d->ops = ops;
	d->dev = dev;
	d->mem = mem;
	d->irq = irq;
	d->irq_ctx = irq_ctx;
	d->offered = VIRTIO_MMIO_FEATURES;
	if (ops->features)
		d->offered |= ops->features(dev) & VIRTIO_MMIO_DEV_FEATURE_MASK;
	*out = d;
	d = NULL;
	ret = 0;
out:
	free(d);
	return ret;
}

void virtio_mmio_free(struct virtio_mmio_dev *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int virtio_mmio_run(struct virtio_mmio_dev *d, int (*fn)(void *arg, struct virtq *queues),
		    void *arg)
{
	const uint32_t running = VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET;
	bool live;
	int ret;

	pthread_mutex_lock(&d->lock);
	live = (d->status & running) == VIRTIO_STATUS_DRIVER_OK;
	ret = fn(arg, live ? d->queues : NULL);
	if (live) {
		/* As after a notify: one interrupt for the batch, then the failure. */
		virtio_mmio_signal_used(d);
		if (ret < 0)
			virtio_mmio_needs_reset(d);
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

void virtio_mmio_lock(struct virtio_mmio_dev *d)
{
	pthread_mutex_lock(&d->lock);
}

void virtio_mmio_unlock(struct virtio_mmio_dev *d)
{
	pthread_mutex_unlock(&d->lock);
}

int virtio_mmio_save_locked(struct virtio_mmio_dev *d, struct snap_virtio *out, void *dev_state,
			    size_t cap)
{
	int n = 0;

	memset(out, 0, sizeof(*out));
	out->device_id = d->ops->device_id;
	out->num_queues = d->ops->num_queues;
	out->status = d->status;
	out->offered = d->offered;
	out->driver_features = d->driver_features;
	out->device_features_sel = d->device_features_sel;
	out->driver_features_sel = d->driver_features_sel;
	out->queue_sel = d->queue_sel;
	out->int_status = d->int_status;
	out->config_gen = d->config_gen;
	for (unsigned i = 0; i < d->ops->num_queues && i < SNAP_MAX_QUEUES; i++)
		virtq_save(&d->queues[i], &out->queues[i]);
	if (d->ops->save)
		n = d->ops->save(d->dev, dev_state, cap);
	if (n < 0)
		return n;
	out->dev_len = (size_t)n <= cap ? (uint32_t)n : 0;
	return (size_t)n <= cap ? 0 : -EOVERFLOW;
}

int virtio_mmio_save(struct virtio_mmio_dev *d, struct snap_virtio *out, void *dev_state,
		     size_t cap)
{
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = virtio_mmio_save_locked(d, out, dev_state, cap);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* The transport's registers from s, checked as if the guest had written them. */
static const char *restore_regs(struct virtio_mmio_dev *d, const struct snap_virtio *s)
{
	const uint32_t known = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK |
			       VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED;

	if (s->device_id != d->ops->device_id)
		return "its device id differs";
	if (s->num_queues != d->ops->num_queues)
		return "its queue count differs";
	if (s->offered != d->offered)
		return "the new device offers other features than the saved one";
	if (s->driver_features & ~s->offered)
		return "the driver's features were never offered";
	if (s->status & ~known)
		return "its status has unknown bits";
	if ((s->status & VIRTIO_STATUS_DRIVER_OK) && !(s->status & VIRTIO_STATUS_FEATURES_OK))
		return "its status is DRIVER_OK without FEATURES_OK";
	if ((s->status & VIRTIO_STATUS_FEATURES_OK) &&
	    !(s->driver_features & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		return "its features lack VERSION_1";
	if (s->int_status & ~(uint32_t)(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG))
		return "its interrupt status has unknown bits";
	d->status = s->status;
	d->driver_features = s->driver_features;
	d->device_features_sel = s->device_features_sel;
	d->driver_features_sel = s->driver_features_sel;
	d->queue_sel = s->queue_sel;
	d->int_status = s->int_status;
	d->config_gen = s->config_gen;
	for (unsigned i = 0; i < SNAP_MAX_QUEUES && i < VIRTIO_MMIO_MAX_QUEUES; i++) {
		struct virtq *q = &d->queues[i];

		if (i >= d->ops->num_queues) {
			if (s->queues[i].ready || s->queues[i].size)
				return "a queue past the device's queues is in use";
			continue;
		}
		if (s->queues[i].ready && !(s->status & VIRTIO_STATUS_FEATURES_OK))
			return "a queue is ready before FEATURES_OK";
		if (virtq_restore(q, d->mem, d->ops->queue_max, d->driver_features, &s->queues[i]))
			return "a queue's size, ring addresses or indexes are not valid in this VM";
		q->dev_name = d->ops->name;
		q->index = (uint16_t)i;
	}
	return NULL;
}

int virtio_mmio_restore(struct virtio_mmio_dev *d, const struct snap_virtio *s,
			const void *dev_state, char *why, size_t whylen)
{
	const uint32_t running = VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET;
	const char *bad;
	bool raise;
	int ret = -EINVAL;

	pthread_mutex_lock(&d->lock);
	bad = restore_regs(d, s);
	if (bad) {
		snprintf(why, whylen, "virtio-%s: %s", d->ops->name, bad);
		virtio_mmio_reset(d);
		goto out;
	}
	if (!d->ops->restore) {
		snprintf(why, whylen, "virtio-%s cannot be restored yet", d->ops->name);
		virtio_mmio_reset(d);
		goto out;
	}
	ret = d->ops->restore(d->dev, d->queues, dev_state, s->dev_len, why, whylen);
	if (ret) {
		virtio_mmio_reset(d);
		goto out;
	}
	/* Buffers the guest made available before the snapshot and the
	 * interrupts it was owed: handled now, as a kick would; one interrupt
	 * for all of it. */
	raise = d->int_status != 0;
	if ((d->status & running) == VIRTIO_STATUS_DRIVER_OK) {
		bool used = false;

		for (unsigned i = 0; i < d->ops->num_queues && !ret; i++)
			if (virtq_is_ready(&d->queues[i]))
				ret = d->ops->notify(d->dev, &d->queues[i], i);
		for (unsigned i = 0; i < d->ops->num_queues; i++)
			used |= virtq_need_interrupt(&d->queues[i]);
		if (used)
			d->int_status |= VIRTIO_MMIO_INT_VRING;
		if (ret < 0) {
			d->status |= VIRTIO_STATUS_NEEDS_RESET;
			d->int_status |= VIRTIO_MMIO_INT_CONFIG;
		}
		raise |= used || ret < 0;
		ret = 0;
	}
	if (raise)
		d->irq(d->irq_ctx);
out:
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_mmio_register(struct virtio_mmio_dev *d, struct io_bus *bus, uint64_t base)
{
	return io_register(bus, base, VIRTIO_MMIO_SIZE, virtio_mmio_io, d);
}

int virtio_mmio_cmdline(char *buf, size_t size, uint64_t base, uint32_t irq)
{
	int n = snprintf(buf, size, "virtio_mmio.device=0x%x@0x%" PRIx64 ":%" PRIu32,
			 VIRTIO_MMIO_SIZE, base, irq);
	int ret = -EINVAL;

	if (n >= 0)
		ret = (size_t)n < size ? 0 : -ENOSPC;
	return ret;
}
