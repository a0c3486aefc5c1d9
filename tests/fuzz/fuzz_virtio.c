/*
 * virtio-mmio (src/vmm/virtio/mmio.c) with each of kiln's devices behind it
 * (blk, rng, vsock, net), driven by a fuzzed driver: register accesses,
 * rings and buffers in 1 MiB of fake guest RAM (tests/unit/virtio_fake.h),
 * and for vsock and net the host side too (Unix connections, the backend
 * socket). vsock.c and net.c are compiled into this harness (#include) so
 * their event-thread work runs here, synchronously, step by step: the
 * fuzzer decides when the "thread" runs; time is a fake clock it advances.
 *
 * Input: byte 0 picks the device (and its options), then operations, one
 * byte each with their arguments (see the switch in run()).
 *
 * Properties:
 *  - no access the driver makes crashes the VMM or trips a sanitizer;
 *  - after any device action, guest RAM changed only inside the used rings
 *    and the buffers of device-writable descriptors (indirect tables too),
 *    as they were at this or any earlier device action of the input (a
 *    popped chain stays the device's even if the driver rewrites it);
 *  - every used element names a head < queue size, and its length is no
 *    more than the writable bytes of that chain (walked by the driver's own
 *    reading of its descriptors) and, for rng, no more than 64 KiB;
 *  - a vsock rx packet has a well-formed header (host CID to the guest's,
 *    a known op, a stream type) and used.len = header + its payload; a net
 *    rx buffer holds a 12-byte header with num_buffers 1 and a frame of
 *    14..1514 bytes;
 *  - blk and rng (which work inside the notify) have used every chain made
 *    available, or have set NEEDS_RESET: the device works or says so;
 *  - a read-only disk's bytes never change; config reads past the device's
 *    config space read as zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "virtio_fake.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/rng.h"

/* The devices with an event thread: compiled here to run their work inline. */
#include "vmm/virtio/net.c"
#include "vmm/virtio/vsock.c"

#define RAM	   (1ULL << 20)
#define QAREA(q)   (0x10000ULL + (uint64_t)(q) * 0x8000)
#define DATA	   0x40000ULL
#define DATA_SIZE  0x40000ULL
#define DISK_SIZE  (64 * 1024)
#define MAX_HOST   8
#define VSOCK_PORT 1024

enum dev_kind { D_BLK, D_RNG, D_VSOCK, D_NET };

static uint64_t fake_clock = 1000000000000ULL;

/* Linked with -Wl,--wrap=now_ns: vsock's deadlines run on the fuzzer's clock. */
uint64_t __wrap_now_ns(void);
uint64_t __wrap_now_ns(void)
{
	return fake_clock;
}

static char dir[64], uds[96], listen_path[128];

static void cleanup(void)
{
	unlink(listen_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_scratch_dir("virtio", dir, sizeof(dir));
	snprintf(uds, sizeof(uds), "%s/v.sock", dir);
	snprintf(listen_path, sizeof(listen_path), "%s_%u", uds, VSOCK_PORT);
	atexit(cleanup);
	return 0;
}

struct rig {
	enum dev_kind kind;
	struct fake_guest g;
	const struct virtio_dev_ops *ops;
	struct vblk *blk;
	struct vrng *rng;
	struct vsock *vs;
	struct vnet *net;
	int disk, backend, netfd, listener;
	bool ro;
	uint16_t qsize[VIRTIO_MMIO_MAX_QUEUES]; /* as the driver programmed them; 0: not set */
	uint8_t disk_sum;
	int host[MAX_HOST];
	uint16_t used_seen[VIRTIO_MMIO_MAX_QUEUES];
	uint8_t *before, *allowed;
};

static uint8_t *ram(struct rig *r)
{
	return guest_mem_ptr(r->g.mem, 0, RAM);
}

/* ---- what the driver knows about its own rings ---- */

static struct fake_vq vq_at(unsigned q, uint16_t size)
{
	return (struct fake_vq){ .size = size, .desc = QAREA(q), .avail = QAREA(q) + 0x1000,
				 .used = QAREA(q) + 0x2000 };
}

static void mark(struct rig *r, uint64_t gpa, uint64_t len)
{
	if (gpa < RAM)
		memset(r->allowed + gpa, 1, len > RAM - gpa ? RAM - gpa : len);
}

/*
 * Add everything a device may write now: used rings and writable buffers, all
 * queues. The map accumulates over the input: a chain the device popped stays
 * its own until used, even if the driver rewrites its descriptors meanwhile.
 */
static void allowed_map(struct rig *r)
{
	for (unsigned q = 0; q < r->ops->num_queues; q++) {
		struct fake_vq v = vq_at(q, 256);
		const struct virtq_desc *d = fake_ptr(&r->g, v.desc, 256 * 16);

		mark(r, v.used, 6 + 8 * 256);
		for (unsigned i = 0; i < 256; i++) {
			if (d[i].flags & VIRTQ_DESC_F_WRITE)
				mark(r, d[i].addr, d[i].len);
			if ((d[i].flags & VIRTQ_DESC_F_INDIRECT) && d[i].addr < RAM) {
				const uint8_t *t = guest_mem_ptr(r->g.mem, d[i].addr, 16);
				uint64_t n = d[i].len / 16;

				if (!t || n > (RAM - d[i].addr) / 16)
					continue;
				/* The guest may put a table anywhere: copy, never cast. */
				for (uint64_t k = 0; k < n && k < 256; k++) {
					struct virtq_desc e;

					memcpy(&e, t + k * 16, sizeof(e));
					if (e.flags & VIRTQ_DESC_F_WRITE)
						mark(r, e.addr, e.len);
				}
			}
		}
	}
}

/* Entry i of a descriptor table at any alignment (the guest picks indirect tables' places). */
static struct virtq_desc desc_at(const uint8_t *table, uint32_t i)
{
	struct virtq_desc d;

	memcpy(&d, table + (size_t)i * 16, sizeof(d));
	return d;
}

/* The table holding head's chain (its own, or the head's indirect one): entries in *n. */
static const uint8_t *chain_table(struct rig *r, unsigned q, uint16_t head, uint16_t size,
				  uint32_t *n, uint32_t *first)
{
	const uint8_t *t = fake_ptr(&r->g, vq_at(q, 256).desc, 256 * 16);
	struct virtq_desc h = desc_at(t, head);

	*n = size;
	*first = head;
	if (!(h.flags & VIRTQ_DESC_F_INDIRECT))
		return t;
	*n = h.len / 16;
	*first = 0;
	if (*n == 0 || *n > size)
		return NULL;
	return guest_mem_ptr(r->g.mem, h.addr, h.len);
}

/* Writable bytes of the chain at head, as the driver wrote it; -1 if malformed. */
static int64_t chain_room(struct rig *r, unsigned q, uint16_t head, uint16_t size)
{
	uint32_t n, idx;
	const uint8_t *t;
	int64_t room = 0;

	if (head >= size || !(t = chain_table(r, q, head, size, &n, &idx)))
		return -1;
	for (uint32_t steps = 0; steps <= n; steps++) {
		struct virtq_desc d;

		if (idx >= n)
			return -1;
		d = desc_at(t, idx);
		if (d.flags & VIRTQ_DESC_F_WRITE)
			room += d.len;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return room;
		idx = d.next;
	}
	return -1;
}

/* The first bytes of a chain's writable part, as the driver reads them back. */
static size_t chain_peek(struct rig *r, unsigned q, uint16_t head, uint16_t size, uint8_t *buf,
			 size_t want)
{
	uint32_t n, idx;
	const uint8_t *t = chain_table(r, q, head, size, &n, &idx);
	size_t got = 0;

	for (uint32_t steps = 0; t && steps <= n && idx < n && got < want; steps++) {
		struct virtq_desc d = desc_at(t, idx);

		/* An empty buffer holds nothing, wherever it points (the device skips it). */
		if ((d.flags & VIRTQ_DESC_F_WRITE) && d.len) {
			size_t k = d.len < want - got ? d.len : want - got;
			const uint8_t *p = guest_mem_ptr(r->g.mem, d.addr, k);

			if (!p)
				break;
			memcpy(buf + got, p, k);
			got += k;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		idx = d.next;
	}
	return got;
}

static void check_used_elem(struct rig *r, unsigned q, struct virtq_used_elem e, uint16_t size)
{
	int64_t room = chain_room(r, q, (uint16_t)e.id, size);
	uint8_t buf[64];

	FZ_CHECK(e.id < size, "used id %u in a %u queue", e.id, size);
	if (room < 0)
		return; /* rewritten since it was posted: nothing to compare */
	FZ_CHECK(e.len <= room, "queue %u: used.len %u > %lld writable bytes", q, e.len,
		 (long long)room);
	if (r->kind == D_RNG)
		FZ_CHECK(e.len <= VRNG_MAX_REQ, "rng used.len %u", e.len);
	if (r->kind == D_VSOCK && q == VSOCK_RXQ && e.len) {
		struct virtio_vsock_hdr h;

		FZ_CHECK(e.len >= sizeof(h) && chain_peek(r, q, (uint16_t)e.id, size, buf, sizeof(h)) ==
						   sizeof(h), "vsock rx used.len %u", e.len);
		memcpy(&h, buf, sizeof(h));
		FZ_CHECK(h.src_cid == VIRTIO_VSOCK_HOST_CID && h.dst_cid == VSOCK_DEFAULT_GUEST_CID &&
				 h.type == VIRTIO_VSOCK_TYPE_STREAM && h.op >= 1 && h.op <= 7 &&
				 e.len == sizeof(h) + h.len && h.len <= VSOCK_MAX_PKT,
			 "vsock rx header: op %u len %u used %u", h.op, h.len, e.len);
	}
	if (r->kind == D_NET && q == VNET_RXQ && e.len) {
		struct virtio_net_hdr h;

		FZ_CHECK(e.len >= 12 + 14 && e.len <= 12 + 1514, "net rx used.len %u", e.len);
		FZ_CHECK(chain_peek(r, q, (uint16_t)e.id, size, buf, 12) == 12, "net rx header");
		memcpy(&h, buf, sizeof(h));
		FZ_CHECK(h.num_buffers == 1 && h.gso_type == 0, "net rx header");
	}
}

/* Run a device action and check what it did to guest RAM and the used rings. */
static void device_action(struct rig *r, void (*act)(struct rig *r))
{
	allowed_map(r);
	memcpy(r->before, ram(r), RAM);
	act(r);
	if (memcmp(r->before, ram(r), RAM)) {
		allowed_map(r);
		for (uint64_t b = 0; b < RAM; b += 4096) {
			if (!memcmp(r->before + b, ram(r) + b, 4096))
				continue;
			for (uint64_t k = b; k < b + 4096; k++)
				FZ_CHECK(r->before[k] == ram(r)[k] || r->allowed[k],
					 "%s wrote guest byte %#llx, in no writable buffer",
					 r->ops->name, (unsigned long long)k);
		}
	}
	for (unsigned q = 0; q < r->ops->num_queues; q++) {
		uint16_t size = r->qsize[q];
		struct fake_vq v = vq_at(q, size);
		uint16_t idx;

		if (!size)
			continue;
		idx = fake_used_idx(&r->g, &v);
		for (uint16_t i = r->used_seen[q]; i != idx && (uint16_t)(i - r->used_seen[q]) < size;
		     i++)
			check_used_elem(r, q, fake_used_elem(&r->g, &v, i), size);
		r->used_seen[q] = idx;
	}
}

/* ---- the devices' own work, as their event threads would run it ---- */

static void vsock_step(struct rig *r)
{
	int n = epoll_wait(r->vs->epfd, r->vs->evs, VSOCK_EVENTS, 0);

	r->vs->nevs = n > 0 ? n : 0;
	virtio_mmio_run(r->g.dev, vsock_work, r->vs);
}

static void vnet_step(struct rig *r)
{
	int n = epoll_wait(r->net->epfd, r->net->evs, VNET_EVENTS, 0);

	for (int i = 0; i < n; i++)
		vnet_event(r->net, &r->net->evs[i]);
	virtio_mmio_run(r->g.dev, vnet_work, r->net);
}

static void step(struct rig *r)
{
	if (r->kind == D_VSOCK)
		vsock_step(r);
	else if (r->kind == D_NET)
		vnet_step(r);
}

static unsigned notify_q;

static void do_notify(struct rig *r)
{
	fake_notify(&r->g, notify_q);
	step(r);
}

/* Does a device-writable buffer overlap queue q's used ring (so the device may
 * overwrite used->idx with data)? Checks the table and the indirect area. */
static bool used_ring_aliased(struct rig *r, unsigned q)
{
	const uint8_t *t = fake_ptr(&r->g, QAREA(q), 0x7000);
	uint64_t used = QAREA(q) + 0x2000, end = used + 6 + 8 * 256;

	for (unsigned i = 0; i < 0x700; i++) {
		struct virtq_desc d = desc_at(t, i);

		if ((d.flags & VIRTQ_DESC_F_WRITE) && d.addr < end && d.addr + d.len > used)
			return true;
	}
	return false;
}

/*
 * blk and rng work inside the notify: afterwards every chain made available
 * was used, or the device asks for a reset (it works or it says so).
 */
static void check_done_or_reset(struct rig *r, unsigned q)
{
	struct fake_vq v = vq_at(q, r->qsize[q]);
	uint32_t status = fake_rd(&r->g, R_STATUS);
	const uint16_t *avail = fake_ptr(&r->g, v.avail, 4);

	fake_wr(&r->g, R_QUEUE_SEL, q);
	if ((r->kind != D_BLK && r->kind != D_RNG) || !r->qsize[q] ||
	    !(status & VIRTIO_STATUS_DRIVER_OK) || (status & VIRTIO_STATUS_NEEDS_RESET) ||
	    !fake_rd(&r->g, R_QUEUE_READY) || used_ring_aliased(r, q))
		return;
	FZ_CHECK(fake_used_idx(&r->g, &v) == avail[1],
		 "%s: %u chains made available, used idx %u, and no NEEDS_RESET", r->ops->name,
		 avail[1], fake_used_idx(&r->g, &v));
}

/* ---- set-up and tear-down ---- */

static int memfd_disk(void)
{
	int fd = memfd_create("disk", MFD_CLOEXEC);
	uint8_t buf[4096];

	FZ_CHECK(fd >= 0, "memfd_create");
	for (unsigned i = 0; i < DISK_SIZE / sizeof(buf); i++) {
		memset(buf, (int)i, sizeof(buf));
		FZ_CHECK(write(fd, buf, sizeof(buf)) == sizeof(buf), "disk write");
	}
	return fd;
}

static uint8_t disk_sum(int fd)
{
	static uint8_t buf[DISK_SIZE];
	uint8_t s = 0;

	FZ_CHECK(pread(fd, buf, sizeof(buf), 0) == DISK_SIZE, "disk read");
	for (size_t i = 0; i < sizeof(buf); i++)
		s = (uint8_t)(s * 31 + buf[i]);
	return s;
}

static struct guest_mem *ram_once;
static uint8_t before_buf[RAM], allowed_buf[RAM];

static void rig_up(struct rig *r, uint8_t sel)
{
	void *dev = NULL;
	int sv[2];

	memset(r, 0, sizeof(*r));
	r->kind = (enum dev_kind)(sel % 4);
	r->disk = r->backend = r->netfd = r->listener = -1;
	for (unsigned i = 0; i < MAX_HOST; i++)
		r->host[i] = -1;
	/* One guest RAM for all inputs, zeroed: cheaper than a new mapping. */
	if (!ram_once)
		FZ_CHECK(guest_mem_create(&ram_once, RAM) == 0, "guest_mem_create");
	r->g.mem = ram_once;
	memset(ram(r), 0, RAM);
	switch (r->kind) {
	case D_BLK: {
		struct vblk_params p = { .read_only = sel & 4, .serial = sel & 8 ? "kiln-serial-01234567" : NULL };

		r->disk = memfd_disk();
		r->ro = p.read_only;
		r->disk_sum = disk_sum(r->disk);
		p.fd = r->disk;
		FZ_CHECK(vblk_create(&r->blk, &p) == 0, "vblk_create");
		r->ops = &vblk_ops;
		dev = r->blk;
		break;
	}
	case D_RNG:
		FZ_CHECK(vrng_create(&r->rng) == 0, "vrng_create");
		r->ops = &vrng_ops;
		dev = r->rng;
		break;
	case D_VSOCK: {
		struct vsock_params p = { .uds_path = uds, .max_conns = sel & 4 ? 2 : 0 };
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		FZ_CHECK(vsock_create(&r->vs, &p) == 0, "vsock_create");
		r->ops = &vsock_ops;
		dev = r->vs;
		/* A host service for guest-initiated connections to port 1024. */
		unlink(listen_path);
		memcpy(sa.sun_path, listen_path, strlen(listen_path) + 1);
		r->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		FZ_CHECK(r->listener >= 0 && bind(r->listener, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
				 listen(r->listener, 8) == 0,
			 "vsock host listener");
		break;
	}
	case D_NET: {
		struct vnet_params p = { .mac = { 2, 0, 0, 0, 0, 1 }, .mtu = sel & 4 ? 68 : 0 };

		FZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
			 "socketpair");
		p.fd = r->netfd = sv[0];
		r->backend = sv[1];
		FZ_CHECK(vnet_create(&r->net, &p) == 0, "vnet_create");
		r->ops = &vnet_ops;
		dev = r->net;
		break;
	}
	}
	FZ_CHECK(virtio_mmio_create(&r->g.dev, r->ops, dev, r->g.mem, fake_irq, &r->g) == 0,
		 "virtio_mmio_create");
	FZ_CHECK(virtio_mmio_register(r->g.dev, &r->g.bus, FAKE_MMIO_BASE) == 0, "register");
	if (r->vs)
		r->vs->mmio = r->g.dev;
	if (r->net)
		r->net->mmio = r->g.dev;
	r->before = before_buf;
	r->allowed = allowed_buf;
	memset(r->allowed, 0, RAM);
}

static void rig_down(struct rig *r)
{
	if (r->ro)
		FZ_CHECK(disk_sum(r->disk) == r->disk_sum, "a read-only disk changed");
	for (unsigned i = 0; i < MAX_HOST; i++)
		if (r->host[i] >= 0)
			close(r->host[i]);
	virtio_mmio_free(r->g.dev);
	vblk_free(r->blk);
	vrng_free(r->rng);
	vsock_free(r->vs);
	vnet_free(r->net);
	if (r->netfd >= 0)
		close(r->netfd);
	if (r->backend >= 0)
		close(r->backend);
	if (r->listener >= 0)
		close(r->listener);
	if (r->disk >= 0)
		close(r->disk);
}

/* ---- the fuzzed driver ---- */

static uint64_t pick_addr(struct fz *in, unsigned q)
{
	uint8_t sel = fz_u8(in);
	uint16_t off = fz_u16(in);

	switch (sel % 8) {
	case 4: return QAREA(q) + 0x4000 + off % 0x3000;	/* indirect tables */
	case 5: return fz_u64(in);				/* anywhere */
	case 6: return RAM - off;				/* the end of RAM */
	case 7: return QAREA(q) + 0x2000 + off % 0x1000;	/* its own used ring */
	default: return DATA + ((uint64_t)off * 4) % DATA_SIZE;
	}
}

static uint32_t pick_len(struct fz *in)
{
	uint8_t sel = fz_u8(in);

	return sel & 0x80 ? fz_u32(in) : (uint32_t)sel * 16 + (sel & 1);
}

static void host_vsock(struct rig *r, struct fz *in)
{
	uint8_t sub = fz_u8(in), i = fz_u8(in) % MAX_HOST;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static uint8_t buf[1 << 16];
	const uint8_t *bytes;
	char line[32];
	size_t n;

	switch (sub % 7) {
	case 0: /* host connects to a guest port */
	case 6:
		if (r->host[i] >= 0)
			break;
		memcpy(sa.sun_path, uds, strlen(uds) + 1);
		r->host[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (r->host[i] < 0 || connect(r->host[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			break;
		if (sub % 7 == 0) {
			uint8_t p = fz_u8(in);

			n = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n",
					     p < 128 ? 52u : p < 250 ? 1024u : fz_u32(in));
			(void)!send(r->host[i], line, n, MSG_NOSIGNAL);
		} else {
			n = fz_take(in, fz_u8(in) % 40, &bytes);
			(void)!send(r->host[i], bytes, n, MSG_NOSIGNAL);
		}
		break;
	case 1: /* host writes */
		n = fz_chunk(in, &bytes);
		if (r->host[i] >= 0)
			(void)!send(r->host[i], bytes, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		break;
	case 2: /* host reads */
		if (r->host[i] >= 0)
			(void)!recv(r->host[i], buf, sizeof(buf), MSG_DONTWAIT);
		break;
	case 3:
		if (r->host[i] >= 0)
			shutdown(r->host[i], fz_u8(in) & 1 ? SHUT_WR : SHUT_RD);
		break;
	case 4:
		if (r->host[i] >= 0)
			close(r->host[i]);
		r->host[i] = -1;
		break;
	default: /* the host service accepts a guest's connection */
		if (r->host[i] < 0)
			r->host[i] = accept4(r->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	}
}

static void host_net(struct rig *r, struct fz *in)
{
	static uint8_t buf[16384];
	const uint8_t *bytes;
	uint8_t sub = fz_u8(in);
	size_t n;
	ssize_t k;

	if (r->backend < 0)
		return;
	switch (sub % 3) {
	case 0: /* kiln-net sends a frame */
		n = fz_chunk(in, &bytes);
		(void)!send(r->backend, bytes, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	case 1: /* kiln-net reads what the guest sent: whole frames within the MTU */
		while ((k = recv(r->backend, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
			FZ_CHECK(k >= 14 && (uint32_t)k <= r->net->max_frame,
				 "a %zd-byte frame reached the backend", k);
		break;
	default: /* kiln-net goes away */
		close(r->backend);
		r->backend = -1;
		break;
	}
}

static void run(struct rig *r, struct fz *in)
{
	/* Each device action compares all of guest RAM: bound the work per input. */
	for (unsigned ops = 0; in->n && ops < 256; ops++) {
		uint8_t op = fz_u8(in), q = fz_u8(in) % r->ops->num_queues;
		struct fake_vq v = vq_at(q, r->qsize[q] ? r->qsize[q] : 1);
		uint8_t data[8] = { 0 };
		const uint8_t *bytes;
		uint64_t off, val;
		uint32_t len;
		size_t n;

		switch (op % 16) {
		case 0: /* any register or config write, but the ring set-up (op 3 does it) */
			off = fz_u16(in) % VIRTIO_MMIO_SIZE;
			len = 1u << (fz_u8(in) % 4);
			val = fz_u64(in);
			if (off == R_QUEUE_SEL || off == R_QUEUE_NUM ||
			    (off >= R_QUEUE_DESC_LO && off <= R_QUEUE_DEVICE_HI + 3))
				break;
			memcpy(data, &val, sizeof(val));
			if (off + len <= VIRTIO_MMIO_SIZE)
				io_dispatch(&r->g.bus, FAKE_MMIO_BASE + off, data, len, true);
			break;
		case 1: /* any read; past the device's config space it reads as zero */
			off = fz_u16(in) % VIRTIO_MMIO_SIZE;
			len = 1u << (fz_u8(in) % 4);
			memset(data, 0xa5, sizeof(data));
			if (off + len > VIRTIO_MMIO_SIZE)
				break;
			io_dispatch(&r->g.bus, FAKE_MMIO_BASE + off, data, len, false);
			if (off >= R_CONFIG + r->ops->config_size)
				for (unsigned i = 0; i < len; i++)
					FZ_CHECK(data[i] == 0, "config byte %#llx past the config space",
						 (unsigned long long)off + i);
			break;
		case 2: { /* feature negotiation */
			uint8_t how = fz_u8(in);
			uint64_t f = fz_u64(in);

			if (how & 1) { /* take what is offered */
				fake_wr(&r->g, R_DEV_FEATURES_SEL, 0);
				f = fake_rd(&r->g, R_DEV_FEATURES);
				fake_wr(&r->g, R_DEV_FEATURES_SEL, 1);
				f |= (uint64_t)fake_rd(&r->g, R_DEV_FEATURES) << 32;
				if (how & 2)
					f &= ~VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
				if (how & 4)
					f &= ~VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC);
			}
			fake_negotiate(&r->g, f);
			break;
		}
		case 3: { /* queue set-up */
			uint8_t s = fz_u8(in);
			uint16_t size = s < 0xf0 ? (uint16_t)(1u << (s % 9)) : fz_u16(in);

			fake_wr(&r->g, R_QUEUE_SEL, q);
			if (fake_rd(&r->g, R_QUEUE_READY))
				break;
			v = vq_at(q, 256);
			fake_vq_clear(&r->g, &v);
			v.size = size;
			r->qsize[q] = size > 256 || !size ? 0 : size;
			r->used_seen[q] = 0;
			fake_queue_setup(&r->g, q, &v);
			if (!fake_rd(&r->g, R_QUEUE_READY))
				r->qsize[q] = 0;
			break;
		}
		case 4:
			fake_driver_ok(&r->g);
			break;
		case 5: { /* a descriptor of the queue's table */
			uint8_t i = fz_u8(in);
			uint64_t addr = pick_addr(in, q);

			len = pick_len(in);
			fake_desc(&r->g, QAREA(q), i, addr, len, fz_u8(in) & 7, fz_u8(in));
			break;
		}
		case 6: { /* a descriptor of an indirect table */
			uint16_t i = fz_u16(in) % 0x300;
			uint64_t addr = pick_addr(in, q);

			len = pick_len(in);
			fake_desc(&r->g, QAREA(q) + 0x4000, i, addr, len, fz_u8(in) & 7, fz_u8(in));
			break;
		}
		case 7: /* make a chain available */
			if (r->qsize[q]) {
				v.avail_idx = fake_ptr(&r->g, v.avail, 4) ? ((uint16_t *)fake_ptr(&r->g, v.avail, 4))[1] : 0;
				fake_avail_add(&r->g, &v, fz_u16(in) % (r->qsize[q] + 1));
			}
			break;
		case 8:
			notify_q = q;
			device_action(r, do_notify);
			check_done_or_reset(r, q);
			break;
		case 9: /* buffer contents */
			off = fz_u16(in) * 4ULL % DATA_SIZE;
			n = fz_take(in, fz_u8(in), &bytes);
			memcpy(fake_ptr(&r->g, DATA + off, n ? n : 1), bytes, n);
			break;
		case 10:
			device_action(r, step);
			break;
		case 11:
			if (r->kind == D_VSOCK)
				host_vsock(r, in);
			else if (r->kind == D_NET)
				host_net(r, in);
			break;
		case 12: /* device reset */
			fake_wr(&r->g, R_STATUS, 0);
			device_action(r, step);
			break;
		case 13:
			fake_clock += (uint64_t)fz_u16(in) * 10000000ULL;
			break;
		case 14: /* config space write */
			off = R_CONFIG + fz_u8(in) % 16;
			len = 1u << (fz_u8(in) % 4);
			val = fz_u64(in);
			memcpy(data, &val, sizeof(val));
			io_dispatch(&r->g.bus, FAKE_MMIO_BASE + off, data, len, true);
			break;
		default: /* interrupt suppression: avail flags, used_event */
			if (r->qsize[q]) {
				fake_avail_flags(&r->g, &v, fz_u8(in) & 1);
				fake_used_event(&r->g, &v, fz_u16(in));
			}
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	struct rig *r = calloc(1, sizeof(*r));

	FZ_CHECK(r, "calloc");
	rig_up(r, fz_u8(&in));
	run(r, &in);
	rig_down(r);
	free(r);
	return 0;
}
