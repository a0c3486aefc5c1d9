#include "vmm/virtio/rng.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "vmm/virtio/queue.h"

struct vrng {
	struct virtq_chain chain;	/* scratch for the chain being handled */
};

/* Fill up to len bytes at p; returns how many were filled. */
static size_t vrng_getrandom(void *p, size_t len)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = getrandom((char *)p + done, len - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	return done;
}

/* Fill the chain's writable segments, VRNG_MAX_REQ bytes at most; the byte count. */
static uint32_t vrng_fill(const struct virtq_chain *c)
{
	size_t total = 0, want, got;

	for (unsigned i = c->nout; i < (unsigned)c->nout + c->nin && total < VRNG_MAX_REQ; i++) {
		want = c->iov[i].iov_len;
		if (want > VRNG_MAX_REQ - total)
			want = VRNG_MAX_REQ - total;
		got = vrng_getrandom(c->iov[i].iov_base, want);
		virtq_chain_wrote(c, &c->iov[i], 1, got);
		total += got;
		if (got < want)
			break;
	}
	return (uint32_t)total;
}

static int vrng_notify(void *dev, struct virtq *q, unsigned qidx)
{
	struct vrng *r = dev;
	int ret;

	/* Readable descriptors carry nothing for us and are ignored. */
	while ((ret = virtq_pop(q, &r->chain)) > 0) {
		ret = virtq_push(q, r->chain.head, vrng_fill(&r->chain));
		if (ret < 0)
			break;
	}
	return ret;
}

/* No state beyond the transport's. */
static int vrng_restore(void *dev, struct virtq *queues, const void *buf, size_t len, char *why,
			size_t whylen)
{
	(void)dev;
	(void)queues;
	(void)buf;
	if (len == 0)
		return 0;
	snprintf(why, whylen, "virtio-rng: %zu bytes of device state where none is saved", len);
	return -EINVAL;
}

const struct virtio_dev_ops vrng_ops = {
	.name = "rng",
	.device_id = VIRTIO_ID_RNG,
	.num_queues = 1,
	.queue_max = VRNG_QUEUE_SIZE,
	.notify = vrng_notify,
	.restore = vrng_restore,
};

int vrng_create(struct vrng **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void vrng_free(struct vrng *r)
{
	free(r);
}
