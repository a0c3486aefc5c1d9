#include "vmm/virtio/queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm/memory.h"
#include "vmm/snapfile.h"
#include "vmm/virtio/virtio.h"

/*
 * The guest may rewrite a descriptor while we look at it. Copying it to a
 * local and then telling the compiler memory may have changed guarantees each
 * field is read from guest RAM once, so a check and the use that follows it
 * see the same value.
 */
#define virtq_compiler_barrier() __asm__ __volatile__("" ::: "memory")

/* --check-writes: set once at start-up, before any device thread exists. */
static bool virtq_checking;
static void (*virtq_check_fail_fn)(const char *msg);

void virtq_check_enable(void)
{
	virtq_checking = true;
}

bool virtq_check_enabled(void)
{
	return virtq_checking;
}

void virtq_check_set_fail(void (*fn)(const char *msg))
{
	virtq_check_fail_fn = fn;
}

/* A violation: one line naming device, queue and chain, then the VM ends. */
static void __attribute__((format(printf, 3, 4)))
virtq_check_fail(const struct virtq *q, unsigned head, const char *fmt, ...)
{
	char msg[256], line[384];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = snprintf(line, sizeof(line), "kiln-vmm: virtio check: %s queue %u chain %u: %s (exit %d)\n",
		     q && q->dev_name ? q->dev_name : "?", q ? q->index : 0u, head, msg,
		     VIRTQ_CHECK_EXIT);
	if (virtq_check_fail_fn) {
		virtq_check_fail_fn(line);
		return;
	}
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nothing better to do: the exit status still says it. */
	}
	_exit(VIRTQ_CHECK_EXIT);
}

/* Offset of [p, p + len) in c's writable part, or -1 when it is not wholly
 * inside one writable buffer. */
static int64_t virtq_check_offset(const struct virtq_chain *c, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p;
	uint64_t off = 0;

	for (unsigned i = c->nout; i < (unsigned)c->nout + c->nin; i++) {
		uintptr_t base = (uintptr_t)c->iov[i].iov_base;
		size_t seg = c->iov[i].iov_len;

		if (a >= base && a - base <= seg && len <= seg - (a - base))
			return (int64_t)(off + (a - base));
		off += seg;
	}
	return -1;
}

/* Record len bytes stored at p (if count); a store outside the writable part
 * is a violation (false). */
static bool virtq_check_store(const struct virtq_chain *c, const void *p, size_t len,
			      bool count)
{
	struct virtq_chain *w = (struct virtq_chain *)c;	/* bookkeeping only */

	if (virtq_check_offset(c, p, len) < 0) {
		virtq_check_fail(c->q, c->head,
				 "store of %zu bytes at a host address outside the chain's "
				 "%u writable bytes (%u writable descriptors)",
				 len, c->in_bytes, c->nin);
		return false;
	}
	if (count)
		w->written = len > UINT32_MAX - w->written ? UINT32_MAX : w->written + (uint32_t)len;
	return true;
}

void virtq_chain_wrote(const struct virtq_chain *c, const struct iovec *iov, unsigned k,
		       size_t n)
{
	size_t piece;

	if (!virtq_checking)
		return;
	for (unsigned i = 0; i < k; i++) {
		piece = iov[i].iov_len < n ? iov[i].iov_len : n;
		n -= piece;
		/* Unwritten pieces were offered to the kernel all the same. */
		if (!virtq_check_store(c, iov[i].iov_base, iov[i].iov_len, false))
			return;
		if (piece)
			virtq_check_store(c, iov[i].iov_base, piece, true);
	}
	if (n)
		virtq_check_fail(c->q, c->head, "%zu bytes stored beyond the %u-piece slice", n, k);
}

static uint64_t virtq_desc_bytes(const struct virtq *q)
{
	return (uint64_t)q->size * sizeof(struct virtq_desc);
}

/* flags, idx, ring[size], and used_event when EVENT_IDX is on. */
static uint64_t virtq_avail_bytes(const struct virtq *q)
{
	return 4 + 2ULL * q->size + (q->event_idx ? 2 : 0);
}

/* flags, idx, ring[size], and avail_event when EVENT_IDX is on. */
static uint64_t virtq_used_bytes(const struct virtq *q)
{
	return 4 + 8ULL * q->size + (q->event_idx ? 2 : 0);
}

/* The rings were checked in virtq_enable(); translating again on each access
 * costs a compare or two and keeps every guest pointer derived the same way. */
static struct virtq_avail *virtq_avail_ring(const struct virtq *q)
{
	return guest_mem_ptr(q->mem, q->avail_gpa, virtq_avail_bytes(q));
}

static struct virtq_used *virtq_used_ring(const struct virtq *q)
{
	return guest_mem_ptr(q->mem, q->used_gpa, virtq_used_bytes(q));
}

int virtq_enable(struct virtq *q, const struct guest_mem *mem, uint16_t max_size,
		 uint64_t features)
{
	int ret = -EINVAL;

	q->ready = false;
	q->event_idx = features & VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	q->indirect = features & VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC);
	if (max_size > VIRTQ_MAX_SIZE || q->size == 0 || q->size > max_size ||
	    (q->size & (q->size - 1)))
		goto out;
	if (q->desc_gpa % VIRTQ_DESC_ALIGN || q->avail_gpa % VIRTQ_AVAIL_ALIGN ||
	    q->used_gpa % VIRTQ_USED_ALIGN)
		goto out;
	ret = -EFAULT;
	if (!guest_mem_ptr(mem, q->desc_gpa, virtq_desc_bytes(q)) ||
	    !guest_mem_ptr(mem, q->avail_gpa, virtq_avail_bytes(q)) ||
	    !guest_mem_ptr(mem, q->used_gpa, virtq_used_bytes(q)))
		goto out;
	q->mem = mem;
	memset(q->popped, 0, sizeof(q->popped));
	q->broken = false;
	q->need_signal = false;
	q->signalled_valid = false;
	q->last_avail = 0;
	q->next_used = 0;
	q->signalled_used = 0;
	q->ready = true;
	ret = 0;
out:
	return ret;
}

void virtq_reset(struct virtq *q)
{
	memset(q, 0, sizeof(*q));
}

void virtq_save(const struct virtq *q, struct snap_virtq *s)
{
	memset(s, 0, sizeof(*s));
	s->size = q->size;
	s->last_avail = q->last_avail;
	s->next_used = q->next_used;
	s->signalled_used = q->signalled_used;
	s->ready = q->ready;
	s->broken = q->broken;
	s->event_idx = q->event_idx;
	s->indirect = q->indirect;
	s->desc_gpa = q->desc_gpa;
	s->avail_gpa = q->avail_gpa;
	s->used_gpa = q->used_gpa;
}

int virtq_restore(struct virtq *q, const struct guest_mem *mem, uint16_t max_size,
		  uint64_t features, const struct snap_virtq *s)
{
	int ret = -EINVAL;

	virtq_reset(q);
	q->size = s->size;
	q->desc_gpa = s->desc_gpa;
	q->avail_gpa = s->avail_gpa;
	q->used_gpa = s->used_gpa;
	if (s->ready > 1 || s->broken > 1 || s->event_idx > 1 || s->indirect > 1 || s->pad)
		goto out;
	if (!s->ready) {
		/* Registers the driver wrote and has not enabled yet: they are
		 * checked when it does, as any driver write is. */
		ret = s->broken || s->event_idx || s->indirect || s->last_avail || s->next_used ||
		      s->signalled_used ? -EINVAL : 0;
		goto out;
	}
	ret = virtq_enable(q, mem, max_size, features);
	if (ret)
		goto out;
	ret = -EINVAL;
	if (s->event_idx != q->event_idx || s->indirect != q->indirect ||
	    (uint16_t)(s->last_avail - s->next_used) > q->size)
		goto out;
	q->last_avail = s->last_avail;
	q->next_used = s->next_used;
	q->signalled_used = s->signalled_used;
	q->broken = s->broken;
	ret = 0;
out:
	if (ret)
		virtq_reset(q);
	return ret;
}

bool virtq_is_ready(const struct virtq *q)
{
	return q->ready;
}

bool virtq_is_broken(const struct virtq *q)
{
	return q->broken;
}

/* Descriptor idx of the table at gpa holding n entries (idx < n checked by the caller). */
static int virtq_read_desc(const struct virtq *q, uint64_t table, uint32_t n, uint32_t idx,
			   struct virtq_desc *d)
{
	const void *p = guest_mem_ptr(q->mem, table, (uint64_t)n * sizeof(*d));

	if (!p)
		return -EFAULT;
	memcpy(d, (const char *)p + (size_t)idx * sizeof(*d), sizeof(*d));
	virtq_compiler_barrier();
	return 0;
}

/*
 * Walk the chain starting at head into c. Bounds: every index < its table's
 * size; at most table-size descriptors per table (a longer walk must revisit
 * one: a loop); one indirect table, only at the head, itself no bigger than
 * the queue; readable before writable; every buffer wholly in RAM; the total
 * under VIRTQ_MAX_CHAIN_BYTES.
 */
static int virtq_walk(const struct virtq *q, uint16_t head, struct virtq_chain *c)
{
	uint64_t table = q->desc_gpa;
	uint32_t table_size = q->size;
	uint32_t idx = head;
	uint32_t ndesc = 0;
	uint64_t total = 0;
	bool in_indirect = false;
	struct virtq_desc d;
	unsigned nseg;
	void *p;
	int ret;

	c->head = head;
	c->nout = c->nin = 0;
	c->out_bytes = c->in_bytes = 0;
	c->written = 0;
	c->q = q;
	for (;;) {
		ret = -EINVAL;
		if (idx >= table_size)
			goto out;
		ret = -ELOOP;
		if (++ndesc > table_size)
			goto out;
		ret = virtq_read_desc(q, table, table_size, idx, &d);
		if (ret)
			goto out;

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			/* The spec forbids INDIRECT with NEXT and indirect tables
			 * inside indirect tables; accepting it only at the head
			 * keeps one table switch per chain. */
			ret = -EINVAL;
			if (!q->indirect || in_indirect || ndesc != 1 ||
			    (d.flags & VIRTQ_DESC_F_NEXT) || d.len == 0 ||
			    d.len % sizeof(struct virtq_desc) ||
			    d.len / sizeof(struct virtq_desc) > q->size)
				goto out;
			ret = -EFAULT;
			if (!guest_mem_ptr(q->mem, d.addr, d.len))
				goto out;
			table = d.addr;
			table_size = d.len / sizeof(struct virtq_desc);
			idx = 0;
			ndesc = 0;
			in_indirect = true;
			continue;
		}

		ret = -EINVAL;
		if (!(d.flags & VIRTQ_DESC_F_WRITE) && c->nin)
			goto out;
		total += d.len;
		if (total > VIRTQ_MAX_CHAIN_BYTES)
			goto out;
		if (d.len) {
			nseg = (unsigned)c->nout + c->nin;
			ret = -E2BIG;
			if (nseg >= VIRTQ_MAX_SIZE)
				goto out;
			ret = -EFAULT;
			p = guest_mem_ptr(q->mem, d.addr, d.len);
			if (!p)
				goto out;
			c->iov[nseg] = (struct iovec){ .iov_base = p, .iov_len = d.len };
			if (d.flags & VIRTQ_DESC_F_WRITE) {
				c->nin++;
				c->in_bytes += d.len;
			} else {
				c->nout++;
				c->out_bytes += d.len;
			}
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		idx = d.next;
	}
	ret = 0;
out:
	return ret;
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	struct virtq_avail *avail;
	struct virtq_used *used;
	uint16_t avail_idx, head;
	int ret = -EIO;

	if (q->broken)
		goto out;
	ret = 0;
	if (!q->ready)
		goto out;
	ret = -EFAULT;
	avail = virtq_avail_ring(q);
	used = virtq_used_ring(q);
	if (!avail || !used)
		goto out;
	/* Acquire: the ring entries and descriptors the driver wrote before
	 * bumping idx are visible once we see the new idx. */
	avail_idx = __atomic_load_n(&avail->idx, __ATOMIC_ACQUIRE);
	if (avail_idx == q->last_avail && q->event_idx) {
		/* Ask for a kick at the next buffer, then look again: the
		 * driver may have added one after our read but before it saw
		 * the new avail_event, and then it will not kick. */
		__atomic_store_n((uint16_t *)&used->ring[q->size], q->last_avail,
				 __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail_idx = __atomic_load_n(&avail->idx, __ATOMIC_ACQUIRE);
	}
	ret = 0;
	if (avail_idx == q->last_avail)
		goto out;
	/* A driver can only be a whole ring ahead of us. */
	ret = -EINVAL;
	if ((uint16_t)(avail_idx - q->last_avail) > q->size)
		goto out;
	head = __atomic_load_n(&avail->ring[q->last_avail & (q->size - 1)], __ATOMIC_RELAXED);
	ret = virtq_walk(q, head, c);
	if (ret)
		goto out;
	if (virtq_checking) {
		if (q->popped[head])
			virtq_check_fail(q, head, "popped again before it was pushed");
		q->popped[head] = c;
	}
	q->last_avail++;
	ret = 1;
out:
	if (ret < 0)
		q->broken = true;
	return ret;
}

int virtq_unpop(struct virtq *q)
{
	struct virtq_avail *avail;
	uint16_t head;
	int ret = -EINVAL;

	/* last_avail - next_used counts the chains popped and not pushed:
	 * the only ones that can be given back. */
	if (!q->ready || q->broken || q->last_avail == q->next_used)
		goto out;
	q->last_avail--;
	if (virtq_checking) {
		avail = virtq_avail_ring(q);
		head = avail ? __atomic_load_n(&avail->ring[q->last_avail & (q->size - 1)],
					       __ATOMIC_RELAXED) : UINT16_MAX;
		if (head < q->size)
			q->popped[head] = NULL;
	}
	ret = 0;
out:
	return ret;
}

int virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
	struct virtq_used *used;
	struct virtq_used_elem *e;
	int ret = -EIO;

	if (q->broken || !q->ready)
		goto out;
	ret = -EINVAL;
	if (head >= q->size)
		goto out;
	if (virtq_checking) {
		const struct virtq_chain *c = q->popped[head];

		if (!c || c->head != head)
			virtq_check_fail(q, head, "pushed but not outstanding");
		else if (len != c->written)
			virtq_check_fail(q, head, "used length %u but %u bytes stored", len,
					 c->written);
		q->popped[head] = NULL;
	}
	ret = -EFAULT;
	used = virtq_used_ring(q);
	if (!used)
		goto out;
	e = &used->ring[q->next_used & (q->size - 1)];
	__atomic_store_n(&e->id, head, __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, len, __ATOMIC_RELAXED);
	q->next_used++;
	/* Release: the element and the buffer contents are visible before idx. */
	__atomic_store_n(&used->idx, q->next_used, __ATOMIC_RELEASE);
	q->need_signal = true;
	/* 2^16 pushes since the last interrupt: the event index comparison
	 * can no longer tell, so the next decision must interrupt. */
	if (q->next_used == q->signalled_used)
		q->signalled_valid = false;
	ret = 0;
out:
	if (ret == -EFAULT)
		q->broken = true;
	return ret;
}

bool virtq_need_interrupt(struct virtq *q)
{
	const struct virtq_avail *avail;
	uint16_t event, old;
	bool valid, ret = false;

	if (!q->need_signal || !q->ready)
		goto out;
	q->need_signal = false;
	/* The used idx store must be visible before we read the driver's
	 * suppression fields; the driver orders the mirror image. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	ret = true;
	avail = virtq_avail_ring(q);
	if (!avail)
		goto out;
	if (!q->event_idx) {
		ret = !(__atomic_load_n(&avail->flags, __ATOMIC_RELAXED) &
			VIRTQ_AVAIL_F_NO_INTERRUPT);
		goto out;
	}
	event = __atomic_load_n(&avail->ring[q->size], __ATOMIC_RELAXED);
	old = q->signalled_used;
	valid = q->signalled_valid;
	q->signalled_used = q->next_used;
	q->signalled_valid = true;
	/* Interrupt when used_event lies in [old, next_used) (§2.7.10). */
	ret = !valid || (uint16_t)(q->next_used - event - 1) < (uint16_t)(q->next_used - old);
out:
	return ret;
}

size_t virtq_chain_read(const struct virtq_chain *c, size_t off, void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < c->nout && done < len; i++) {
		const struct iovec *v = &c->iov[i];
		size_t n;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		n = v->iov_len - off;
		if (n > len - done)
			n = len - done;
		memcpy((char *)buf + done, (const char *)v->iov_base + off, n);
		done += n;
		off = 0;
	}
	/* Callers validate what they copied: make them use the copy. */
	virtq_compiler_barrier();
	return done;
}

size_t virtq_chain_write(const struct virtq_chain *c, size_t off, const void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned i = c->nout; i < (unsigned)c->nout + c->nin && done < len; i++) {
		const struct iovec *v = &c->iov[i];
		size_t n;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		n = v->iov_len - off;
		if (n > len - done)
			n = len - done;
		if (virtq_checking)
			virtq_check_store(c, (char *)v->iov_base + off, n, true);
		memcpy((char *)v->iov_base + off, (const char *)buf + done, n);
		done += n;
		off = 0;
	}
	return done;
}
