#include "vmm/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/virtio/queue.h"

/* One pread/pwrite moves at most this much, whatever a segment claims. */
#define VBLK_IO_CHUNK (1u << 20)

struct vblk {
	int fd;
	bool read_only;
	uint64_t capacity;	/* 512-byte sectors */
	char serial[VIRTIO_BLK_ID_BYTES];
	struct virtq_chain chain;	/* scratch for the request being handled */
};

static uint64_t vblk_features(void *dev)
{
	const struct vblk *b = dev;
	uint64_t f = VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);

	if (b->read_only)
		f |= VIRTIO_BIT(VIRTIO_BLK_F_RO);
	return f;
}

static void vblk_config_read(void *dev, uint32_t off, void *data, uint32_t len)
{
	const struct vblk *b = dev;
	const struct virtio_blk_config cfg = {
		.capacity = b->capacity,
		.seg_max = VBLK_SEG_MAX,
	};

	/* The transport checked off + len <= sizeof(cfg). */
	memcpy(data, (const char *)&cfg + off, len);
}

/* Move len bytes between buf and the file at pos, whatever the short counts. */
static int vblk_pio(int fd, char *buf, size_t len, uint64_t pos, bool write)
{
	size_t chunk;
	ssize_t n;
	int ret = 0;

	while (len) {
		chunk = len < VBLK_IO_CHUNK ? len : VBLK_IO_CHUNK;
		n = write ? pwrite(fd, buf, chunk, (off_t)pos) : pread(fd, buf, chunk, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* 0: the file shrank under us. */
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		buf += n;
		len -= (size_t)n;
		pos += (uint64_t)n;
	}
	return ret;
}

/* I/O for len bytes of the chain's readable (write) or writable (read)
 * segments, skipping the first skip bytes. */
static int vblk_io(const struct vblk *b, const struct virtq_chain *c, size_t skip,
		   size_t len, uint64_t pos, bool write)
{
	const struct iovec *iov = write ? c->iov : c->iov + c->nout;
	unsigned n = write ? c->nout : c->nin;
	struct iovec piece;
	size_t seg;
	int ret = 0;

	for (unsigned i = 0; i < n && len && !ret; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		seg = iov[i].iov_len - skip;
		if (seg > len)
			seg = len;
		piece = (struct iovec){ (char *)iov[i].iov_base + skip, seg };
		ret = vblk_pio(b->fd, piece.iov_base, seg, pos, write);
		if (!ret && !write)
			virtq_chain_wrote(c, &piece, 1, seg);
		skip = 0;
		len -= seg;
		pos += seg;
	}
	return ret;
}

/*
 * T_IN (data = writable bytes before the status) or T_OUT (data = readable
 * bytes after the header). *written: data bytes put in guest buffers.
 */
static uint8_t vblk_rw(const struct vblk *b, const struct virtq_chain *c, uint64_t sector,
		       bool write, uint32_t *written)
{
	size_t len = write ? c->out_bytes - sizeof(struct virtio_blk_req_hdr) : c->in_bytes - 1u;
	uint64_t nsect = len / VIRTIO_BLK_SECTOR_SIZE;
	uint64_t pos = sector * VIRTIO_BLK_SECTOR_SIZE;
	uint8_t status = VIRTIO_BLK_S_IOERR;

	*written = 0;
	/* The device refuses writes to a read-only disk even when the driver
	 * ignored VIRTIO_BLK_F_RO. Range: sector + nsect <= capacity, without
	 * overflow (capacity < 2^55, so pos cannot wrap once this passes). */
	if ((write && b->read_only) || len % VIRTIO_BLK_SECTOR_SIZE ||
	    sector > b->capacity || nsect > b->capacity - sector)
		goto out;
	if (write) {
		if (vblk_io(b, c, sizeof(struct virtio_blk_req_hdr), len, pos, true))
			goto out;
	} else {
		if (vblk_io(b, c, 0, len, pos, false))
			goto out;
		*written = (uint32_t)len;
	}
	status = VIRTIO_BLK_S_OK;
out:
	return status;
}

/*
 * One request: header in the readable part, status in the last writable
 * byte, data between. 0 with *used set, or -EINVAL for a chain too short to
 * hold a header and a status: such a request cannot even be failed.
 */
static int vblk_request(const struct vblk *b, const struct virtq_chain *c, uint32_t *used)
{
	struct virtio_blk_req_hdr hdr;
	uint32_t written = 0, id_len;
	uint8_t status;
	int ret = -EINVAL;

	*used = 0;
	if (c->out_bytes < sizeof(hdr) || c->in_bytes < 1)
		goto out;
	virtq_chain_read(c, 0, &hdr, sizeof(hdr));
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		status = vblk_rw(b, c, hdr.sector, false, &written);
		break;
	case VIRTIO_BLK_T_OUT:
		status = vblk_rw(b, c, hdr.sector, true, &written);
		break;
	case VIRTIO_BLK_T_FLUSH:
		status = fdatasync(b->fd) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
		break;
	case VIRTIO_BLK_T_GET_ID:
		id_len = c->in_bytes - 1;
		if (id_len > VIRTIO_BLK_ID_BYTES)
			id_len = VIRTIO_BLK_ID_BYTES;
		written = (uint32_t)virtq_chain_write(c, 0, b->serial, id_len);
		status = VIRTIO_BLK_S_OK;
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	/* Last, so the driver never sees a status before the data. */
	virtq_chain_write(c, c->in_bytes - 1u, &status, 1);
	*used = written + 1;
	ret = 0;
out:
	return ret;
}

static int vblk_notify(void *dev, struct virtq *q, unsigned qidx)
{
	struct vblk *b = dev;
	uint32_t used;
	int ret;

	while ((ret = virtq_pop(q, &b->chain)) > 0) {
		ret = vblk_request(b, &b->chain, &used);
		if (ret < 0)
			break;
		ret = virtq_push(q, b->chain.head, used);
		if (ret < 0)
			break;
	}
	return ret;
}

/* Snapshots: what the guest was told about the disk (capacity, read-only,
 * serial), so a restore can refuse a backing file that does not match. */
struct vblk_saved {
	uint64_t capacity;
	uint32_t read_only;
	char serial[VIRTIO_BLK_ID_BYTES];
	uint8_t pad[4];
};

static int vblk_save(void *dev, void *buf, size_t cap)
{
	const struct vblk *b = dev;
	struct vblk_saved s;

	if (cap < sizeof(s))
		return -ENOSPC;
	memset(&s, 0, sizeof(s));
	s.capacity = b->capacity;
	s.read_only = b->read_only;
	memcpy(s.serial, b->serial, sizeof(s.serial));
	memcpy(buf, &s, sizeof(s));
	return (int)sizeof(s);
}

/*
 * The disk the guest was told about: capacity, read-only flag and serial
 * equal. A writable disk is restorable too, but what is on it must be what
 * the guest's page cache (in the saved RAM) believes: that is the caller's
 * job, not checked here (libkiln gives each clone an exact copy of the
 * template's scratch disk, taken with the snapshot).
 */
static int vblk_restore(void *dev, struct virtq *queues, const void *buf, size_t len, char *why,
			size_t whylen)
{
	const struct vblk *b = dev;
	struct vblk_saved s;
	const char *bad = NULL;

	(void)queues;
	if (len != sizeof(s)) {
		snprintf(why, whylen, "virtio-blk: its saved state is %zu bytes, not %zu", len,
			 sizeof(s));
		return -EINVAL;
	}
	memcpy(&s, buf, sizeof(s));
	if (s.read_only > 1)
		bad = "its saved read-only flag is neither 0 nor 1";
	else if (s.read_only && !b->read_only)
		bad = "the saved disk was read-only, the new one is not";
	else if (!s.read_only && b->read_only)
		bad = "the saved disk was writable, the new one is read-only";
	else if (s.capacity != b->capacity)
		bad = "the new disk's size differs from the saved one's";
	else if (memcmp(s.serial, b->serial, sizeof(s.serial)))
		bad = "the new disk's serial differs from the saved one's";
	if (bad)
		snprintf(why, whylen, "virtio-blk: %s", bad);
	return bad ? -EINVAL : 0;
}

const struct virtio_dev_ops vblk_ops = {
	.name = "blk",
	.device_id = VIRTIO_ID_BLOCK,
	.num_queues = 1,
	.queue_max = VBLK_QUEUE_SIZE,
	.config_size = sizeof(struct virtio_blk_config),
	.features = vblk_features,
	.config_read = vblk_config_read,
	.notify = vblk_notify,
	.save = vblk_save,
	.restore = vblk_restore,
};

int vblk_create(struct vblk **out, const struct vblk_params *p)
{
	struct vblk *b = NULL;
	size_t serial_len = p->serial ? strlen(p->serial) : 0;
	off_t end;
	int fl, ret = -EINVAL;

	*out = NULL;
	if (p->fd < 0 || serial_len > VIRTIO_BLK_ID_BYTES)
		goto out;
	fl = fcntl(p->fd, F_GETFL);
	end = lseek(p->fd, 0, SEEK_END);
	if (fl < 0 || end < 0) {
		ret = -errno;
		goto out;
	}
	ret = -ENOMEM;
	b = calloc(1, sizeof(*b));
	if (!b)
		goto out;
	b->fd = p->fd;
	b->read_only = p->read_only || (fl & O_ACCMODE) == O_RDONLY;
	b->capacity = (uint64_t)end / VIRTIO_BLK_SECTOR_SIZE;
	/* Zero-padded; exactly 20 bytes goes without a NUL, as the spec says. */
	memcpy(b->serial, p->serial ? p->serial : "", serial_len);
	*out = b;
	b = NULL;
	ret = 0;
out:
	free(b);
	return ret;
}

void vblk_free(struct vblk *b)
{
	free(b);
}

int vblk_scratch_create(const char *dir, uint64_t size)
{
	char path[PATH_MAX];
	int fd = -1, n, ret = -EINVAL;

	if (size == 0 || size % VIRTIO_BLK_SECTOR_SIZE || size > (uint64_t)INT64_MAX)
		goto out;
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
		/* No O_TMPFILE here (EISDIR: kernel without it). The name
		 * lives for two system calls; a crash between them leaves it. */
		n = snprintf(path, sizeof(path), "%s/.kiln-scratch-XXXXXX", dir);
		ret = -ENAMETOOLONG;
		if (n < 0 || (size_t)n >= sizeof(path))
			goto out;
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0 && unlink(path) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		ret = -errno;
		goto out;
	}
	ret = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}
