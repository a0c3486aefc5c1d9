/*
 * Constants and layouts from the virtio 1.x specification that kiln uses, and
 * the ops table through which a transport drives a device. Everything here is
 * transport-independent: devices include this and queue.h, never mmio.h.
 *
 * virtio 1.x structures are little-endian; kiln only runs on x86-64 hosts, so
 * fields are read and written in host order (checked below).
 */
#ifndef KILN_VMM_VIRTIO_VIRTIO_H
#define KILN_VMM_VIRTIO_VIRTIO_H

#include <stddef.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x is little-endian");

/* Device status (§2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* Reserved feature bits (§6) that kiln offers. */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTIO_BIT(n) (1ULL << (n))

/* Device ids (§5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

/* Split virtqueue (§2.7). */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* avail: u16 flags, u16 idx, u16 ring[size], u16 used_event (EVENT_IDX). */
struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

/* used: u16 flags, u16 idx, elem ring[size], u16 avail_event (EVENT_IDX). */
struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];
};

_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem layout");

/* Required ring alignments (§2.7, table "Virtqueue Part Alignment"). */
#define VIRTQ_DESC_ALIGN 16
#define VIRTQ_AVAIL_ALIGN 2
#define VIRTQ_USED_ALIGN 4

/* virtio-blk (§5.2). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR_SIZE 512

struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* The prefix of struct virtio_blk_config kiln fills; later fields read as 0. */
struct virtio_blk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors;
	uint32_t blk_size;
};

_Static_assert(sizeof(struct virtio_blk_req_hdr) == 16, "virtio_blk_req_hdr layout");
_Static_assert(offsetof(struct virtio_blk_config, blk_size) == 20, "virtio_blk_config layout");

/* virtio-vsock (§5.10): queues rx 0, tx 1, event 2; config is the guest's CID (u64). */
#define VIRTIO_VSOCK_HOST_CID 2

#define VIRTIO_VSOCK_TYPE_STREAM 1

#define VIRTIO_VSOCK_OP_REQUEST 1
#define VIRTIO_VSOCK_OP_RESPONSE 2
#define VIRTIO_VSOCK_OP_RST 3
#define VIRTIO_VSOCK_OP_SHUTDOWN 4
#define VIRTIO_VSOCK_OP_RW 5
#define VIRTIO_VSOCK_OP_CREDIT_UPDATE 6
#define VIRTIO_VSOCK_OP_CREDIT_REQUEST 7

/* OP_SHUTDOWN flags: the sender will receive / send no more. */
#define VIRTIO_VSOCK_SHUTDOWN_RCV 1
#define VIRTIO_VSOCK_SHUTDOWN_SEND 2

/* Every packet, both directions; len bytes of payload follow (RW only). */
struct virtio_vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;	/* receive buffer the sender has for this stream */
	uint32_t fwd_cnt;	/* bytes the sender has consumed from it, wrapping */
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_vsock_hdr) == 44, "virtio_vsock_hdr layout");

/* virtio-net (§5.1): queues receiveq 0, transmitq 1 (no control queue, no multiqueue). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17

#define VIRTIO_NET_S_LINK_UP 1

#define VIRTIO_NET_HDR_GSO_NONE 0

/* Precedes every frame both ways. With VERSION_1 num_buffers is always there
 * (the legacy 10-byte header is gone); it is 1 without MRG_RXBUF. */
struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

/* mac is valid with F_MAC, status with F_STATUS, mtu with F_MTU. */
struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
};

_Static_assert(sizeof(struct virtio_net_hdr) == 12, "virtio_net_hdr layout");
_Static_assert(offsetof(struct virtio_net_config, mtu) == 10, "virtio_net_config layout");

struct virtq;

/*
 * A device model as the transport sees it. The transport serialises every
 * call for one device under its own lock, so a device whose work all happens
 * in notify() needs no lock of its own.
 */
struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	unsigned num_queues;	/* 1..VIRTIO_MMIO_MAX_QUEUES */
	uint16_t queue_max;	/* power of two, <= VIRTQ_MAX_SIZE */
	uint32_t config_size;	/* bytes of device config space */
	/* Device-specific feature bits; the transport adds the ring and VERSION_1 bits. */
	uint64_t (*features)(void *dev);
	/* off and len (1, 2, 4 or 8) already lie inside config_size. Optional. */
	void (*config_read)(void *dev, uint32_t off, void *data, uint32_t len);
	void (*config_write)(void *dev, uint32_t off, const void *data, uint32_t len);
	/* DRIVER_OK with the negotiated features. 0 or -errno (device needs reset). Optional. */
	int (*activate)(void *dev, uint64_t features);
	/* The driver kicked queue q (index qidx). Pops, handles and pushes chains;
	 * the transport decides on the interrupt afterwards. 0 or -errno when the
	 * queue or a request was malformed (device needs reset). */
	int (*notify)(void *dev, struct virtq *q, unsigned qidx);
	/* Back to the just-created state. Optional. */
	void (*reset)(void *dev);
	/* Snapshots: the device's own state (beyond the transport's) into buf
	 * (cap bytes). Bytes written or -errno. Called under the transport's
	 * lock with the vCPUs paused. Optional: without it nothing is saved. */
	int (*save)(void *dev, void *buf, size_t cap);
	/* Restore: what save wrote (len bytes, from an untrusted file) checked
	 * against this device's new backend and applied. queues: the device's
	 * queues (num_queues entries), already restored and checked by the
	 * transport, ready or not; a device that held a popped chain at the
	 * save gives it back here (virtq_unpop). Called under the transport's
	 * lock before any device thread starts. 0, or -errno with a one-line
	 * why. Optional: a device without it cannot be restored. */
	int (*restore)(void *dev, struct virtq *queues, const void *buf, size_t len, char *why,
		       size_t whylen);
};

#endif
