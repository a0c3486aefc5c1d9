/*
 * Split virtqueues (virtio 1.x §2.7), device side, with the guest treated as
 * hostile: every ring and buffer address goes through guest_mem_ptr(), every
 * index read from the guest is bounded, and any malformed structure breaks the
 * queue for good (until the transport resets it) instead of being trusted.
 *
 * A device pops a chain into a struct virtq_chain (host iovecs: readable
 * segments first, then writable ones), handles it, pushes it back as used,
 * and the transport asks virtq_need_interrupt() once the batch is done.
 * Not thread-safe: the transport's lock covers every call.
 */
#ifndef KILN_VMM_VIRTIO_QUEUE_H
#define KILN_VMM_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct guest_mem;

/* Largest queue any kiln device offers; also bounds a chain's descriptors. */
#define VIRTQ_MAX_SIZE 256
/* Bytes one chain may describe, both directions together (used.len is 32-bit). */
#define VIRTQ_MAX_CHAIN_BYTES 0xffffffffULL

struct virtq_chain;

struct virtq {
	/* Set by the transport: names the queue in --check-writes reports. */
	const char *dev_name;
	uint16_t index;

	/* Driver-written registers, set by the transport while !ready. */
	uint16_t size;
	uint64_t desc_gpa;
	uint64_t avail_gpa;
	uint64_t used_gpa;

	/* Everything below is private to queue.c. */
	const struct guest_mem *mem;
	bool ready;
	bool broken;		/* malformed once: nothing more until reset */
	bool event_idx;		/* VIRTIO_RING_F_EVENT_IDX negotiated */
	bool indirect;		/* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	bool need_signal;	/* used entries pushed since the last interrupt decision */
	bool signalled_valid;	/* signalled_used means something (event idx) */
	uint16_t last_avail;	/* next avail ring slot to consume */
	uint16_t next_used;	/* our copy of used->idx, never read back from the guest */
	uint16_t signalled_used;
	/* --check-writes only: the chain each outstanding head was popped into. */
	struct virtq_chain *popped[VIRTQ_MAX_SIZE];
};

/*
 * One popped descriptor chain. Zero-length descriptors are dropped, so the
 * segment counts never exceed the number of descriptors (<= queue size).
 */
struct virtq_chain {
	uint16_t head;
	uint16_t nout;		/* device-readable: iov[0 .. nout) */
	uint16_t nin;		/* device-writable: iov[nout .. nout + nin) */
	uint32_t out_bytes;
	uint32_t in_bytes;
	/* --check-writes only: bytes the device said it stored, and its queue. */
	uint32_t written;
	const struct virtq *q;
	struct iovec iov[VIRTQ_MAX_SIZE];
};

/*
 * Validate the driver's size and ring addresses (power-of-two size <= max,
 * alignment, every ring wholly in RAM) and start the queue from index 0.
 * features: the negotiated ones (ring feature bits are honoured).
 * 0, -EINVAL (size or alignment) or -EFAULT (not RAM); the queue stays off on error.
 */
int virtq_enable(struct virtq *q, const struct guest_mem *mem, uint16_t max_size,
		 uint64_t features);
/* Forget everything, registers included. */
void virtq_reset(struct virtq *q);

/* 1 and *c filled, 0 when the driver has made nothing available, or -errno when
 * the ring is malformed (the queue is then broken: see virtq_is_broken()). */
int virtq_pop(struct virtq *q, struct virtq_chain *c);
/* Return chain head to the driver with len bytes written. 0 or -errno. */
int virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/*
 * Give back the chain popped last and not pushed: the next virtq_pop() reads
 * the same avail ring slot again (a device that held a popped chain across a
 * snapshot; the restored queue is one past it). Only when a chain is
 * outstanding (popped and not yet pushed: last_avail != next_used); 0, or
 * -EINVAL when none is or the queue is not running.
 */
int virtq_unpop(struct virtq *q);
/* After a batch of pushes: does the driver want an interrupt for them? */
bool virtq_need_interrupt(struct virtq *q);

/* The queue's registers and indexes, for a snapshot (src/vmm/snapfile.h). */
struct snap_virtq;
void virtq_save(const struct virtq *q, struct snap_virtq *s);
/* The reverse, from an untrusted file: a ready queue goes through
 * virtq_enable()'s checks (size, alignment, rings in RAM), its ring feature
 * flags must be the negotiated ones and no more buffers than its size may be
 * in flight. 0 or -EINVAL/-EFAULT with the queue reset. */
int virtq_restore(struct virtq *q, const struct guest_mem *mem, uint16_t max_size,
		  uint64_t features, const struct snap_virtq *s);

bool virtq_is_ready(const struct virtq *q);
bool virtq_is_broken(const struct virtq *q);

/* Copy bytes [off, off + len) of the chain's readable part into buf, or buf into
 * its writable part. Both return the bytes copied (short at the end). */
size_t virtq_chain_read(const struct virtq_chain *c, size_t off, void *buf, size_t len);
size_t virtq_chain_write(const struct virtq_chain *c, size_t off, const void *buf, size_t len);

/*
 * Device write-bounds checks (kiln-vmm --check-writes, for diagnosis): once
 * enabled, every store a device reports (virtq_chain_write() reports its own)
 * must lie inside the writable descriptors of the chain it was handed, and the
 * used length pushed for a chain must equal the bytes stored into it. A
 * violation is written to stderr naming device, queue and chain, and ends the
 * process with VIRTQ_CHECK_EXIT. Enable before any device thread starts.
 */
#define VIRTQ_CHECK_EXIT 7
void virtq_check_enable(void);
bool virtq_check_enabled(void);
/* The device stored n bytes into iov[0 .. k), a slice of c's writable part,
 * filling the pieces in order (readv, recvmsg, pread): every piece must lie
 * inside c's writable buffers, written or not. */
void virtq_chain_wrote(const struct virtq_chain *c, const struct iovec *iov, unsigned k,
		       size_t n);
/* Test hook: replaces the report-and-exit on a violation (NULL restores it). */
void virtq_check_set_fail(void (*fn)(const char *msg));

#endif
