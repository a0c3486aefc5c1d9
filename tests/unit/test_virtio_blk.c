/*
 * virtio-blk tests through the virtio-mmio transport against a temporary
 * file: config space, read/write round trips, read-only refusal, range and
 * length checks, flush, GET_ID, unsupported and malformed requests, and the
 * scratch-disk helper.
 */
#include "virtio_fake.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/snapfile.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/mmio.h"

#define SECTOR VIRTIO_BLK_SECTOR_SIZE
#define DISK_SIZE (1ULL << 20)
#define DISK_SECTORS (DISK_SIZE / SECTOR)

/* Guest addresses of a request's parts. */
#define HDR_GPA FAKE_DATA
#define STATUS_GPA (FAKE_DATA + 0x100)
#define BUF_GPA (FAKE_DATA + 0x1000)
#define BUF2_GPA (FAKE_DATA + 0x10000)

struct bt {
	struct fake_guest g;
	struct fake_vq vq;
	struct vblk *b;
	int fd;
	char path[64];
	uint16_t used;		/* requests completed so far */
};

/* A fresh disk file of size bytes; opened O_RDWR unless rdonly_fd. */
static struct bt *bt_new_opts(uint64_t size, bool read_only, const char *serial, bool rdonly_fd)
{
	struct bt *t = calloc(1, sizeof(*t));
	struct vblk_params p = { .read_only = read_only, .serial = serial };
	int fd;

	assert_non_null(t);
	snprintf(t->path, sizeof(t->path), "/tmp/kiln-blk-test-XXXXXX");
	fd = mkostemp(t->path, O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (rdonly_fd) {
		t->fd = open(t->path, O_RDONLY | O_CLOEXEC);
		assert_true(t->fd >= 0);
		close(fd);
	} else {
		t->fd = fd;
	}
	unlink(t->path);
	p.fd = t->fd;
	assert_int_equal(vblk_create(&t->b, &p), 0);
	fake_init(&t->g, &vblk_ops, t->b);
	t->vq = fake_vq_std(16);
	fake_bring_up(&t->g, &t->vq, FAKE_VERSION_1 | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) |
		      VIRTIO_BIT(VIRTIO_BLK_F_FLUSH));
	return t;
}

static struct bt *bt_new(void)
{
	return bt_new_opts(DISK_SIZE, false, "kiln-test-disk", false);
}

static void bt_free(struct bt *t)
{
	fake_fini(&t->g);
	vblk_free(t->b);
	close(t->fd);
	free(t);
}

static void bt_hdr(struct bt *t, uint32_t type, uint64_t sector)
{
	struct virtio_blk_req_hdr h = { .type = type, .sector = sector };

	memcpy(fake_ptr(&t->g, HDR_GPA, sizeof(h)), &h, sizeof(h));
	*(uint8_t *)fake_ptr(&t->g, STATUS_GPA, 1) = 0xff;
}

/* Kick, expect one more completion, return its status byte; *used_len if asked. */
static uint8_t bt_kick(struct bt *t, uint16_t head, uint32_t *used_len)
{
	struct virtq_used_elem e;

	fake_avail_add(&t->g, &t->vq, head);
	fake_notify(&t->g, 0);
	assert_false(fake_needs_reset(&t->g));
	assert_int_equal(fake_used_idx(&t->g, &t->vq), (uint16_t)(t->used + 1));
	e = fake_used_elem(&t->g, &t->vq, t->used);
	t->used++;
	assert_int_equal(e.id, head);
	if (used_len)
		*used_len = e.len;
	return *(uint8_t *)fake_ptr(&t->g, STATUS_GPA, 1);
}

/* The usual three-descriptor request: header, data (len bytes at gpa), status. */
static uint8_t bt_req(struct bt *t, uint32_t type, uint64_t sector, uint64_t gpa, uint32_t len,
		      uint32_t *used_len)
{
	uint16_t data_flags = type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE;

	bt_hdr(t, type, sector);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	if (len) {
		fake_desc(&t->g, FAKE_DESC, 1, gpa, len, data_flags | VIRTQ_DESC_F_NEXT, 2);
		fake_desc(&t->g, FAKE_DESC, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	} else {
		fake_desc(&t->g, FAKE_DESC, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	}
	return bt_kick(t, 0, used_len);
}

static void fill_pattern(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

static uint64_t cfg_read64(struct fake_guest *g, uint32_t off)
{
	uint64_t v = 0;

	assert_true(io_dispatch(&g->bus, FAKE_MMIO_BASE + R_CONFIG + off, (uint8_t *)&v, 8, false));
	return v;
}

static void test_config(void **state)
{
	struct bt *t = bt_new_opts(DISK_SIZE + 100, false, NULL, false);
	uint32_t lo;

	assert_int_equal(fake_rd(&t->g, R_DEVICE_ID), VIRTIO_ID_BLOCK);
	assert_int_equal(cfg_read64(&t->g, 0), DISK_SECTORS);
	assert_int_equal(fake_rd(&t->g, R_CONFIG + 0), (uint32_t)DISK_SECTORS);
	assert_int_equal(fake_rd(&t->g, R_CONFIG + 4), 0);
	assert_int_equal(fake_rd(&t->g, R_CONFIG + 12), VBLK_SEG_MAX);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 0);
	lo = fake_rd(&t->g, R_DEV_FEATURES);
	assert_true(lo & (1u << VIRTIO_BLK_F_SEG_MAX));
	assert_true(lo & (1u << VIRTIO_BLK_F_FLUSH));
	assert_false(lo & (1u << VIRTIO_BLK_F_RO));
	fake_wr(&t->g, R_QUEUE_SEL, 0);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), VBLK_QUEUE_SIZE);
	bt_free(t);
}

static void test_write_read_roundtrip(void **state)
{
	struct bt *t = bt_new();
	uint8_t *src = fake_ptr(&t->g, BUF_GPA, 8192);
	uint8_t *dst = fake_ptr(&t->g, BUF2_GPA, 8192);
	uint8_t file[8192];
	uint32_t used;

	fill_pattern(src, 8192, 1);
	/* OUT, data in two descriptors. */
	bt_hdr(t, VIRTIO_BLK_T_OUT, 10);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 4);
	fake_desc(&t->g, FAKE_DESC, 4, BUF_GPA, 4096, VIRTQ_DESC_F_NEXT, 5);
	fake_desc(&t->g, FAKE_DESC, 5, BUF_GPA + 4096, 4096, VIRTQ_DESC_F_NEXT, 6);
	fake_desc(&t->g, FAKE_DESC, 6, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(bt_kick(t, 0, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 1);
	assert_int_equal(pread(t->fd, file, sizeof(file), 10 * SECTOR), (ssize_t)sizeof(file));
	assert_memory_equal(file, src, sizeof(file));

	/* IN, data in three descriptors of other sizes. */
	memset(dst, 0, 8192);
	bt_hdr(t, VIRTIO_BLK_T_IN, 10);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, BUF2_GPA, 1024, FAKE_WNEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 2, BUF2_GPA + 1024, 5120, FAKE_WNEXT, 3);
	fake_desc(&t->g, FAKE_DESC, 3, BUF2_GPA + 6144, 2048, FAKE_WNEXT, 7);
	fake_desc(&t->g, FAKE_DESC, 7, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(bt_kick(t, 0, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 8192 + 1);
	assert_memory_equal(dst, src, 8192);
	assert_int_equal(t->g.irqs, 2);
	bt_free(t);
}

/* Data written by the host is what the guest reads, up to the last sector. */
static void test_read_file_data(void **state)
{
	struct bt *t = bt_new();
	uint8_t pat[1024], *dst = fake_ptr(&t->g, BUF_GPA, 1024);

	fill_pattern(pat, sizeof(pat), 9);
	assert_int_equal(pwrite(t->fd, pat, sizeof(pat), (DISK_SECTORS - 2) * SECTOR),
			 (ssize_t)sizeof(pat));
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, DISK_SECTORS - 2, BUF_GPA, 1024, NULL),
			 VIRTIO_BLK_S_OK);
	assert_memory_equal(dst, pat, sizeof(pat));
	bt_free(t);
}

static void test_read_only(void **state)
{
	struct bt *t = bt_new_opts(DISK_SIZE, true, NULL, false);
	uint8_t *src = fake_ptr(&t->g, BUF_GPA, 512), file[512];

	fake_wr(&t->g, R_DEV_FEATURES_SEL, 0);
	assert_true(fake_rd(&t->g, R_DEV_FEATURES) & (1u << VIRTIO_BLK_F_RO));
	memset(src, 0x77, 512);
	/* The driver did not accept RO (fake_bring_up); the device refuses anyway. */
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_OUT, 0, BUF_GPA, 512, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(pread(t->fd, file, 512, 0), 512);
	for (int i = 0; i < 512; i++)
		assert_int_equal(file[i], 0);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, 0, BUF_GPA, 512, NULL), VIRTIO_BLK_S_OK);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
	bt_free(t);

	/* An fd opened read-only makes the disk read-only whatever the params say. */
	t = bt_new_opts(DISK_SIZE, false, NULL, true);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 0);
	assert_true(fake_rd(&t->g, R_DEV_FEATURES) & (1u << VIRTIO_BLK_F_RO));
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_OUT, 0, BUF_GPA, 512, NULL), VIRTIO_BLK_S_IOERR);
	bt_free(t);
}

static void test_out_of_range(void **state)
{
	struct bt *t = bt_new();
	struct stat st;

	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, DISK_SECTORS, BUF_GPA, 512, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, BUF_GPA, 1024, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, BUF_GPA, 512, NULL),
			 VIRTIO_BLK_S_OK);
	/* sector * 512 and sector + count both overflow 64 bits. */
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, UINT64_MAX / SECTOR + 1, BUF_GPA, 512, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, UINT64_MAX, BUF_GPA, 1024, NULL),
			 VIRTIO_BLK_S_IOERR);
	/* A write past the end must not grow the file. */
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_OUT, DISK_SECTORS, BUF_GPA, 512, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, BUF_GPA, 4096, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(fstat(t->fd, &st), 0);
	assert_int_equal(st.st_size, DISK_SIZE);
	/* Lengths that are not whole sectors. */
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, 0, BUF_GPA, 100, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_OUT, 0, BUF_GPA, 513, NULL), VIRTIO_BLK_S_IOERR);
	bt_free(t);
}

/* The file shrinks under a running disk: reads past its new end fail cleanly. */
static void test_file_shrinks(void **state)
{
	struct bt *t = bt_new();

	assert_int_equal(ftruncate(t->fd, DISK_SIZE / 2), 0);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, DISK_SECTORS - 8, BUF_GPA, 4096, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_IN, 0, BUF_GPA, 4096, NULL), VIRTIO_BLK_S_OK);
	bt_free(t);
}

static void test_flush(void **state)
{
	struct bt *t = bt_new();
	uint32_t used;

	assert_int_equal(bt_req(t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 1);
	bt_free(t);
}

static void test_get_id(void **state)
{
	struct bt *t = bt_new();
	uint8_t *id = fake_ptr(&t->g, BUF_GPA, 32);
	struct vblk_params p = { .fd = 0, .serial = "123456789012345678901" };
	struct vblk *b = (void *)1;
	uint32_t used;

	memset(id, 0xee, 32);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_GET_ID, 0, BUF_GPA, 20, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 21);
	assert_memory_equal(id, "kiln-test-disk\0\0\0\0\0\0", 20);
	assert_int_equal(id[20], 0xee);
	/* A short buffer gets what fits. */
	memset(id, 0xee, 32);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_GET_ID, 0, BUF_GPA, 4, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 5);
	assert_memory_equal(id, "kiln", 4);
	assert_int_equal(id[4], 0xee);
	bt_free(t);

	/* Exactly 20 bytes: no NUL. */
	t = bt_new_opts(DISK_SIZE, false, "12345678901234567890", false);
	id = fake_ptr(&t->g, BUF_GPA, 32);
	memset(id, 0xee, 32);
	assert_int_equal(bt_req(t, VIRTIO_BLK_T_GET_ID, 0, BUF_GPA, 32, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 21);
	assert_memory_equal(id, "12345678901234567890", 20);
	assert_int_equal(id[20], 0xee);
	bt_free(t);

	assert_int_equal(vblk_create(&b, &p), -EINVAL);
	assert_null(b);
}

static void test_unsupported(void **state)
{
	struct bt *t = bt_new();
	uint32_t used;

	assert_int_equal(bt_req(t, 11 /* DISCARD */, 0, BUF_GPA, 16, &used), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(used, 1);
	assert_int_equal(bt_req(t, 0xffffffff, 0, 0, 0, NULL), VIRTIO_BLK_S_UNSUPP);
	bt_free(t);
}

/* The device must not assume a descriptor layout: split header, data and
 * status sharing one descriptor, an indirect table. */
static void test_framing(void **state)
{
	struct bt *t = bt_new();
	uint8_t *buf = fake_ptr(&t->g, BUF_GPA, 1024), pat[512];
	uint32_t used;

	fill_pattern(pat, sizeof(pat), 3);
	assert_int_equal(pwrite(t->fd, pat, sizeof(pat), 5 * SECTOR), (ssize_t)sizeof(pat));
	bt_hdr(t, VIRTIO_BLK_T_IN, 5);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, HDR_GPA + 8, 8, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 2, BUF_GPA, 513, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	fake_notify(&t->g, 0);
	t->used++;
	assert_int_equal(fake_used_elem(&t->g, &t->vq, 0).len, 513);
	assert_memory_equal(buf, pat, 512);
	assert_int_equal(buf[512], VIRTIO_BLK_S_OK);

	/* The same through an indirect table. */
	memset(buf, 0, 1024);
	fake_desc(&t->g, FAKE_INDIRECT, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_INDIRECT, 1, BUF_GPA, 512, FAKE_WNEXT, 2);
	fake_desc(&t->g, FAKE_INDIRECT, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	fake_desc(&t->g, FAKE_DESC, 9, FAKE_INDIRECT, 48, VIRTQ_DESC_F_INDIRECT, 0);
	bt_hdr(t, VIRTIO_BLK_T_IN, 5);
	assert_int_equal(bt_kick(t, 9, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 513);
	assert_memory_equal(buf, pat, 512);
	bt_free(t);
}

static void test_batch(void **state)
{
	struct bt *t = bt_new();

	bt_hdr(t, VIRTIO_BLK_T_FLUSH, 0);
	for (uint16_t i = 0; i < 3; i++) {
		fake_desc(&t->g, FAKE_DESC, 2 * i, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 2 * i + 1);
		fake_desc(&t->g, FAKE_DESC, 2 * i + 1, STATUS_GPA + i, 1, VIRTQ_DESC_F_WRITE, 0);
		fake_avail_add(&t->g, &t->vq, 2 * i);
	}
	fake_notify(&t->g, 0);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 3);
	assert_int_equal(t->g.irqs, 1);
	bt_free(t);
}

/* A snapshot of the transport (virtio_mmio_save) after three requests: the
 * registers, the queue's indexes, and the disk as the guest was told it
 * (the device's save hook); a buffer too small for the hook is an error. */
static void test_snapshot_save(void **state)
{
	struct bt *t = bt_new_opts(DISK_SIZE, true, "snap-disk", false);
	struct snap_virtio v;
	uint8_t dev[64], tiny[8];
	uint64_t cap;
	uint32_t ro;

	bt_hdr(t, VIRTIO_BLK_T_FLUSH, 0);
	for (uint16_t i = 0; i < 3; i++) {
		fake_desc(&t->g, FAKE_DESC, 2 * i, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 2 * i + 1);
		fake_desc(&t->g, FAKE_DESC, 2 * i + 1, STATUS_GPA + i, 1, VIRTQ_DESC_F_WRITE, 0);
		fake_avail_add(&t->g, &t->vq, 2 * i);
	}
	fake_notify(&t->g, 0);
	assert_int_equal(virtio_mmio_save(t->g.dev, &v, dev, sizeof(dev)), 0);
	assert_int_equal(v.device_id, VIRTIO_ID_BLOCK);
	assert_int_equal(v.num_queues, 1);
	assert_true(v.status & VIRTIO_STATUS_DRIVER_OK);
	assert_true(v.driver_features & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	assert_true(v.offered & VIRTIO_BIT(VIRTIO_BLK_F_RO));
	assert_int_equal(v.queues[0].ready, 1);
	assert_int_equal(v.queues[0].size, 16);
	assert_int_equal(v.queues[0].last_avail, 3);
	assert_int_equal(v.queues[0].next_used, 3);
	assert_int_equal(v.queues[0].desc_gpa, t->vq.desc);
	assert_int_equal(v.queues[0].used_gpa, t->vq.used);
	assert_true(v.dev_len >= 36 && v.dev_len <= sizeof(dev));
	memcpy(&cap, dev, sizeof(cap));
	memcpy(&ro, dev + 8, sizeof(ro));
	assert_int_equal(cap, DISK_SECTORS);
	assert_int_equal(ro, 1);
	assert_memory_equal(dev + 12, "snap-disk", 9);
	assert_int_equal(virtio_mmio_save(t->g.dev, &v, tiny, sizeof(tiny)), -ENOSPC);
	bt_free(t);
}

/* Restore into a new disk: one like the saved one (writable or read-only)
 * is accepted; a read-only flag, size or serial that differs is refused
 * with why, and the transport left reset. */
static void blk_restore_case(const struct snap_virtio *v, const uint8_t *dev, uint64_t size,
			     bool read_only, const char *serial, const char *want)
{
	struct bt *t = bt_new_opts(size, read_only, serial, false);
	struct snap_virtio after;
	uint8_t none[64];
	char why[256] = "";
	int ret;

	/* The new transport starts from scratch, as a restoring VMM's does. */
	fake_wr(&t->g, R_STATUS, 0);
	ret = virtio_mmio_restore(t->g.dev, v, dev, why, sizeof(why));
	if (!want) {
		assert_int_equal(ret, 0);
		assert_int_equal(virtio_mmio_save(t->g.dev, &after, none, sizeof(none)), 0);
		assert_int_equal(after.queues[0].last_avail, v->queues[0].last_avail);
		assert_true(after.status & VIRTIO_STATUS_DRIVER_OK);
	} else {
		assert_int_equal(ret, -EINVAL);
		if (!strstr(why, want))
			fail_msg("wanted '%s' in '%s'", want, why);
		assert_int_equal(virtio_mmio_save(t->g.dev, &after, none, sizeof(none)), 0);
		assert_int_equal(after.status, 0);
	}
	bt_free(t);
}

static void test_snapshot_restore(void **state)
{
	struct bt *w = bt_new_opts(DISK_SIZE, false, "scratch", false);
	struct bt *r = bt_new_opts(DISK_SIZE, true, "rootfs", false);
	struct snap_virtio vw, vr;
	uint8_t dw[64], dr[64];

	bt_hdr(w, VIRTIO_BLK_T_FLUSH, 0);
	fake_desc(&w->g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&w->g, FAKE_DESC, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&w->g, &w->vq, 0);
	fake_notify(&w->g, 0);
	assert_int_equal(virtio_mmio_save(w->g.dev, &vw, dw, sizeof(dw)), 0);
	assert_int_equal(vw.queues[0].last_avail, 1);
	assert_int_equal(virtio_mmio_save(r->g.dev, &vr, dr, sizeof(dr)), 0);
	/* A writable disk onto a writable one of the same size and serial. */
	blk_restore_case(&vw, dw, DISK_SIZE, false, "scratch", NULL);
	blk_restore_case(&vr, dr, DISK_SIZE, true, "rootfs", NULL);
	/* A read-only flag that differs changes the features offered (RO): the
	 * transport refuses first; the device's own check says the same. */
	blk_restore_case(&vw, dw, DISK_SIZE, true, "scratch", "offers other features");
	blk_restore_case(&vr, dr, DISK_SIZE, false, "rootfs", "offers other features");
	{
		char why[256] = "";

		assert_int_equal(vblk_ops.restore(r->b, NULL, dw, vw.dev_len, why, sizeof(why)),
				 -EINVAL);
		assert_string_equal(why, "virtio-blk: the saved disk was writable, the new one "
				    "is read-only");
		assert_int_equal(vblk_ops.restore(w->b, NULL, dr, vr.dev_len, why, sizeof(why)),
				 -EINVAL);
		assert_string_equal(why, "virtio-blk: the saved disk was read-only, the new one "
				    "is not");
		assert_int_equal(vblk_ops.restore(w->b, NULL, dw, vw.dev_len, why, sizeof(why)), 0);
	}
	blk_restore_case(&vw, dw, 2 * DISK_SIZE, false, "scratch",
			 "virtio-blk: the new disk's size differs");
	blk_restore_case(&vw, dw, DISK_SIZE, false, "other",
			 "virtio-blk: the new disk's serial differs");
	bt_free(w);
	bt_free(r);
}

/* Requests without room for a header or a status cannot be answered. */
static void test_malformed_requests(void **state)
{
	struct bt *t = bt_new();

	bt_hdr(t, VIRTIO_BLK_T_IN, 0);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	fake_notify(&t->g, 0);
	assert_true(fake_needs_reset(&t->g));
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 0);
	bt_free(t);

	t = bt_new();
	bt_hdr(t, VIRTIO_BLK_T_IN, 0);
	fake_desc(&t->g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_DESC, 1, BUF_GPA, 512, 0, 0);
	fake_avail_add(&t->g, &t->vq, 0);
	fake_notify(&t->g, 0);
	assert_true(fake_needs_reset(&t->g));
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 0);
	bt_free(t);
}

static unsigned dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static void test_scratch_disk(void **state)
{
	char dir[] = "/tmp/kiln-scratch-test-XXXXXX";
	const uint64_t size = 64ULL << 20;
	struct vblk_params p = { 0 };
	struct fake_guest g;
	struct fake_vq vq = fake_vq_std(8);
	struct virtio_blk_req_hdr hdr;
	struct vblk *b;
	struct stat st;
	uint8_t *buf;
	int fd;

	assert_non_null(mkdtemp(dir));
	fd = vblk_scratch_create(dir, size);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, size);
	assert_int_equal(st.st_blocks, 0);	/* sparse */
	assert_int_equal(st.st_nlink, 0);	/* nameless */
	assert_int_equal(dir_entries(dir), 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);

	/* Usable as a disk: write the last sector, read it back. */
	p.fd = fd;
	assert_int_equal(vblk_create(&b, &p), 0);
	fake_init(&g, &vblk_ops, b);
	fake_bring_up(&g, &vq, FAKE_VERSION_1);
	assert_int_equal(cfg_read64(&g, 0), size / SECTOR);
	buf = fake_ptr(&g, BUF_GPA, 512);
	memset(buf, 0x3c, 512);
	hdr = (struct virtio_blk_req_hdr){ .type = VIRTIO_BLK_T_OUT, .sector = size / SECTOR - 1 };
	memcpy(fake_ptr(&g, HDR_GPA, sizeof(hdr)), &hdr, sizeof(hdr));
	fake_desc(&g, FAKE_DESC, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&g, FAKE_DESC, 1, BUF_GPA, 512, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&g, FAKE_DESC, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&g, &vq, 0);
	fake_notify(&g, 0);
	assert_int_equal(*(uint8_t *)fake_ptr(&g, STATUS_GPA, 1), VIRTIO_BLK_S_OK);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, size);
	assert_true(st.st_blocks * 512 < (blkcnt_t)(1 << 20));
	fake_fini(&g);
	vblk_free(b);
	close(fd);

	assert_int_equal(dir_entries(dir), 0);
	assert_int_equal(rmdir(dir), 0);

	assert_int_equal(vblk_scratch_create("/nonexistent-kiln-dir", size), -ENOENT);
	assert_int_equal(vblk_scratch_create("/tmp", 0), -EINVAL);
	assert_int_equal(vblk_scratch_create("/tmp", 1000), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_write_read_roundtrip),
		cmocka_unit_test(test_read_file_data),
		cmocka_unit_test(test_read_only),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_file_shrinks),
		cmocka_unit_test(test_flush),
		cmocka_unit_test(test_get_id),
		cmocka_unit_test(test_unsupported),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_batch),
		cmocka_unit_test(test_snapshot_save),
		cmocka_unit_test(test_snapshot_restore),
		cmocka_unit_test(test_malformed_requests),
		cmocka_unit_test(test_scratch_disk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
