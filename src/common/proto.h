/*
 * The kiln agent protocol: framing and message encoding, shared by the guest
 * agent (kiln-init) and the host client (libkiln). See docs/protocol.md.
 *
 * A frame is a 12-byte little-endian header (u32 payload length, u16 type,
 * u16 flags, u32 id) followed by at most PROTO_MAX_PAYLOAD bytes. Everything
 * read from the wire is untrusted: every decoder checks every length against
 * its cap and against the bytes left, and rejects trailing bytes.
 */
#ifndef KILN_COMMON_PROTO_H
#define KILN_COMMON_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC	  0x6e6c696bu /* "kiln" in little-endian byte order */
#define PROTO_VERSION	  1u
#define PROTO_HDR_SIZE	  12u
#define PROTO_MAX_PAYLOAD (1u << 20)
#define PROTO_MAX_FRAME	  (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD)

/* Caps on fields, in bytes unless said otherwise (strings without a NUL). */
#define PROTO_PATH_MAX	     4096u
#define PROTO_NAME_MAX	     255u
#define PROTO_MSG_MAX	     1024u /* error messages, ping payloads */
#define PROTO_AGENT_NAME_MAX 63u
#define PROTO_ARGC_MAX	     4096u /* entries */
#define PROTO_ENVC_MAX	     4096u /* entries */
#define PROTO_ARG_MAX	     131072u /* one argv or env string */
#define PROTO_ARGV_BYTES_MAX 262144u /* all argv strings together */
#define PROTO_ENV_BYTES_MAX  262144u /* all env strings together */
#define PROTO_SIGNO_MAX	     64
#define PROTO_PTY_DIM_MAX    4096u /* terminal rows and columns: 1..this */
#define PROTO_USER_MAX	     255u /* EXEC's user spec */
#define PROTO_ENTROPY_MIN    32u /* IDENTITY's random bytes */
#define PROTO_ENTROPY_MAX    256u
#define PROTO_HOSTNAME_MAX   63u /* IDENTITY's hostname: one RFC 1123 label */
#define PROTO_SANDBOX_ID_MAX 76u /* IDENTITY's sandbox id (common/fleetid.h's FLEET_ID_MAX) */
#define PROTO_TIME_SEC_MAX   (1ull << 33) /* IDENTITY's wall clock, seconds since 1970 */

enum proto_type {
	PROTO_HELLO = 0x01,	   /* c->a proto_hello */
	PROTO_HELLO_OK = 0x02,	   /* a->c proto_hello_ok */
	PROTO_OK = 0x03,	   /* a->c u64 value */
	PROTO_ERROR = 0x04,	   /* a->c proto_error */
	PROTO_PING = 0x05,	   /* c->a bytes (<= PROTO_MSG_MAX) */
	PROTO_PONG = 0x06,	   /* a->c the same bytes */
	PROTO_SHUTDOWN = 0x07,	   /* c->a empty */
	PROTO_EXEC = 0x10,	   /* c->a proto_exec; its id becomes the exec id */
	PROTO_EXEC_OK = 0x11,	   /* a->c proto_exec_ok */
	PROTO_STDIN = 0x12,	   /* c->a bytes, id = exec id; F_EOF closes stdin */
	PROTO_STDIN_CREDIT = 0x13, /* a->c u32 bytes; F_EOF: the process closed stdin */
	PROTO_STDOUT = 0x14,	   /* a->c bytes, id = exec id */
	PROTO_STDERR = 0x15,	   /* a->c bytes, id = exec id */
	PROTO_EXIT = 0x16,	   /* a->c proto_exit, id = exec id, last frame of an exec */
	PROTO_SIGNAL = 0x17,	   /* c->a proto_signal */
	PROTO_RESIZE = 0x18,	   /* c->a proto_winsize, id = exec id; no reply */
	PROTO_FILE_PUT = 0x20,	   /* c->a proto_path, then FILE_DATA frames with its id */
	PROTO_FILE_GET = 0x21,	   /* c->a proto_path; answered by FILE_DATA frames */
	PROTO_FILE_DATA = 0x22,	   /* both: bytes; F_EOF marks the last */
	PROTO_STAT = 0x23,	   /* c->a proto_path */
	PROTO_STAT_OK = 0x24,	   /* a->c proto_stat */
	PROTO_LIST = 0x25,	   /* c->a proto_path; answered by DIR_ENTRIES frames */
	PROTO_DIR_ENTRIES = 0x26,  /* a->c proto_dirent..., F_EOF marks the last */
	PROTO_MKDIR = 0x27,	   /* c->a proto_path */
	PROTO_REMOVE = 0x28,	   /* c->a proto_path */
	PROTO_IDENTITY = 0x30,	   /* c->a proto_identity; OK or ERROR */
};

/* Header flags. */
#define PROTO_F_EOF   0x0001u
#define PROTO_F_ABORT 0x0002u /* FILE_DATA from the client: the upload is abandoned */

/* Who sent a frame: proto_hdr_decode checks the type's direction. */
#define PROTO_FROM_CLIENT 1
#define PROTO_FROM_AGENT  2

/* Capabilities in HELLO_OK. */
#define PROTO_CAP_EXEC	   0x1u
#define PROTO_CAP_FILES	   0x2u
#define PROTO_CAP_REBOOT   0x4u /* SHUTDOWN powers the VM off (PID-1 mode) */
#define PROTO_CAP_PTY	   0x8u /* EXEC with PROTO_EXEC_PTY, RESIZE */
#define PROTO_CAP_IDENTITY 0x10u /* IDENTITY (PID-1 mode) */
#define PROTO_CAP_OOM	   0x20u /* EXIT tells the OOM kills while the process ran */

/* EXEC flags. */
#define PROTO_EXEC_STDIN 0x1u /* else stdin is /dev/null (or, with PTY, nothing to send) */
#define PROTO_EXEC_PTY	 0x2u /* on a new terminal of rows x cols; stderr merged into stdout */
#define PROTO_EXEC_USER	 0x4u /* as user (USER[:GROUP], looked up in the guest); uid, gid ignored */
#define PROTO_EXEC_FLAGS 0x7u

/* SIGNAL flags. */
#define PROTO_SIG_GROUP 0x1u /* to the process group (the exec is a session leader) */

/* Path request flags. */
#define PROTO_PATH_PARENTS   0x1u /* MKDIR, FILE_PUT: create missing parents */
#define PROTO_PATH_RECURSIVE 0x2u /* REMOVE */
#define PROTO_PATH_NOFOLLOW  0x4u /* STAT */
#define PROTO_PATH_ALL	     0x7u

/* FILE_PUT: uid/gid left unchanged. */
#define PROTO_ID_KEEP 0xffffffffu

struct proto_hdr {
	uint32_t len; /* payload bytes */
	uint16_t type;
	uint16_t flags;
	uint32_t id;
};

struct proto_hello {
	uint32_t version;
	uint32_t flags; /* 0 */
};

struct proto_hello_ok {
	uint32_t version;
	uint32_t caps;
	uint32_t max_payload;
	uint32_t stdin_window; /* initial STDIN credit of every exec */
	char agent[PROTO_AGENT_NAME_MAX + 1];
};

struct proto_error {
	int32_t err; /* positive Linux errno */
	char msg[PROTO_MSG_MAX + 1];
};

/*
 * Decoded by proto_dec_exec into one allocation (free() it); strings are
 * NUL-terminated, argv and envp NULL-terminated.
 */
struct proto_exec {
	uint32_t flags;
	uint32_t uid;
	uint32_t gid;
	uint32_t argc; /* >= 1 */
	uint32_t envc;
	const char *cwd; /* "" = "/" */
	const char *const *argv;
	const char *const *envp;
	uint32_t rows, cols; /* PROTO_EXEC_PTY: 1..PROTO_PTY_DIM_MAX (encoded after envp); else 0 */
	const char *user;    /* PROTO_EXEC_USER: 1..PROTO_USER_MAX bytes (encoded last); else "" */
};

struct proto_winsize {
	uint32_t rows, cols; /* 1..PROTO_PTY_DIM_MAX */
};

struct proto_exec_ok {
	uint32_t pid;
	uint32_t stdin_window;
};

struct proto_exit {
	int32_t code;	/* 0..255, or -1 when killed */
	int32_t signal; /* 0, or the signal that killed it */
	/* PROTO_CAP_OOM: the guest kernel's OOM kills (vmstat oom_kill) between
	 * the process's start and its end, an optional u64 after signal; -1: not
	 * told (an agent without the cap, or /proc/vmstat unreadable). */
	int64_t oom_kills;
};

struct proto_signal {
	uint32_t exec_id;
	int32_t signo; /* 1..PROTO_SIGNO_MAX */
	uint32_t flags;
};

/* FILE_PUT, FILE_GET, STAT, LIST, MKDIR, REMOVE. */
struct proto_path {
	uint32_t flags;
	uint32_t mode; /* permission bits, <= 07777 */
	uint32_t uid;
	uint32_t gid;
	char path[PROTO_PATH_MAX + 1];
};

struct proto_stat {
	uint32_t mode; /* st_mode, type bits included */
	uint32_t uid;
	uint32_t gid;
	uint32_t nlink;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
};

struct proto_dirent {
	uint32_t mode;
	uint64_t size;
	int64_t mtime_sec;
	char name[PROTO_NAME_MAX + 1];
};

/*
 * IDENTITY: what makes a sandbox unique, from the host (a clone restored
 * from a snapshot would otherwise share all of it with its siblings).
 * Wire: u64 sec, u32 nsec, u32 entropy length + bytes, hostname, sandbox id.
 */
struct proto_identity {
	int64_t sec;   /* CLOCK_REALTIME: 0..PROTO_TIME_SEC_MAX */
	uint32_t nsec; /* < 1e9 */
	uint32_t entropy_len; /* PROTO_ENTROPY_MIN..PROTO_ENTROPY_MAX */
	uint8_t entropy[PROTO_ENTROPY_MAX];
	char hostname[PROTO_HOSTNAME_MAX + 1]; /* one RFC 1123 label (common/hostname.h) */
	char sandbox_id[PROTO_SANDBOX_ID_MAX + 1]; /* fleet_sandbox_id_ok (common/fleetid.h) */
};

/*
 * Header. decode checks the length cap, the type and its direction and the
 * flags; -EBADMSG on any violation.
 */
void proto_hdr_encode(void *buf, const struct proto_hdr *h);
int proto_hdr_decode(const void *buf, int from, struct proto_hdr *h);
const char *proto_type_name(unsigned type);

/*
 * Frame writer: errors are sticky, proto_wr_end reports them (-ENOSPC when
 * the buffer is too small, -EMSGSIZE past PROTO_MAX_PAYLOAD).
 */
struct proto_wr {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err;
};
void proto_wr_begin(struct proto_wr *w, void *buf, size_t cap, uint16_t type, uint16_t flags,
		    uint32_t id);
void proto_wr_u32(struct proto_wr *w, uint32_t v);
void proto_wr_u64(struct proto_wr *w, uint64_t v);
void proto_wr_bytes(struct proto_wr *w, const void *p, size_t n);
void proto_wr_str(struct proto_wr *w, const char *s, size_t n);
/* Frame length (> 0) or a negative errno. */
int proto_wr_end(struct proto_wr *w);

/* Payload reader: errors are sticky (-EBADMSG). */
struct proto_rd {
	const uint8_t *p;
	size_t left;
	int err;
};
void proto_rd_init(struct proto_rd *r, const void *payload, size_t len);
uint32_t proto_rd_u32(struct proto_rd *r);
uint64_t proto_rd_u64(struct proto_rd *r);
/* A string of at most max bytes with no NUL, copied with a NUL into out[max + 1]. */
void proto_rd_str(struct proto_rd *r, char *out, size_t max);
/* 0 when everything was read and nothing is left, else -EBADMSG. */
int proto_rd_end(const struct proto_rd *r);

/*
 * Messages: proto_enc_* write a whole frame into buf and return its length or
 * a negative errno (-EINVAL for a field out of its range); proto_dec_* parse a
 * payload and return 0, -EBADMSG (malformed) or -EPROTONOSUPPORT (version).
 */
int proto_enc_hello(void *buf, size_t cap, uint32_t id, const struct proto_hello *m);
int proto_dec_hello(const void *p, size_t len, struct proto_hello *m);
int proto_enc_hello_ok(void *buf, size_t cap, uint32_t id, const struct proto_hello_ok *m);
int proto_dec_hello_ok(const void *p, size_t len, struct proto_hello_ok *m);
int proto_enc_ok(void *buf, size_t cap, uint32_t id, uint64_t value);
int proto_dec_ok(const void *p, size_t len, uint64_t *value);
int proto_enc_error(void *buf, size_t cap, uint32_t id, int err, const char *msg);
int proto_dec_error(const void *p, size_t len, struct proto_error *m);
int proto_enc_exec(void *buf, size_t cap, uint32_t id, const struct proto_exec *m);
int proto_dec_exec(const void *p, size_t len, struct proto_exec **out);
int proto_enc_exec_ok(void *buf, size_t cap, uint32_t id, const struct proto_exec_ok *m);
int proto_dec_exec_ok(const void *p, size_t len, struct proto_exec_ok *m);
int proto_enc_exit(void *buf, size_t cap, uint32_t id, const struct proto_exit *m);
int proto_dec_exit(const void *p, size_t len, struct proto_exit *m);
int proto_enc_signal(void *buf, size_t cap, uint32_t id, const struct proto_signal *m);
int proto_dec_signal(const void *p, size_t len, struct proto_signal *m);
int proto_enc_resize(void *buf, size_t cap, uint32_t exec_id, const struct proto_winsize *m);
int proto_dec_resize(const void *p, size_t len, struct proto_winsize *m);
int proto_enc_credit(void *buf, size_t cap, uint32_t id, uint16_t flags, uint32_t bytes);
int proto_dec_credit(const void *p, size_t len, uint32_t *bytes);
int proto_enc_path(void *buf, size_t cap, uint16_t type, uint32_t id, const struct proto_path *m);
int proto_dec_path(const void *p, size_t len, struct proto_path *m);
int proto_enc_stat(void *buf, size_t cap, uint32_t id, const struct proto_stat *m);
int proto_dec_stat(const void *p, size_t len, struct proto_stat *m);
int proto_enc_identity(void *buf, size_t cap, uint32_t id, const struct proto_identity *m);
int proto_dec_identity(const void *p, size_t len, struct proto_identity *m);
/* A frame header of any type with a raw payload (data frames, PING/PONG, SHUTDOWN). */
int proto_enc_data(void *buf, size_t cap, uint16_t type, uint16_t flags, uint32_t id,
		   const void *data, size_t n);

/* DIR_ENTRIES: a sequence of entries up to the end of the payload. */
#define PROTO_DIRENT_MAX_SIZE (24u + PROTO_NAME_MAX)
void proto_wr_dirent(struct proto_wr *w, const struct proto_dirent *e);
/* 1 with *e filled, 0 at the end, -EBADMSG on a malformed entry. */
int proto_rd_dirent(struct proto_rd *r, struct proto_dirent *e);

#endif
