/*
 * kiln-vmm's configuration (src/vmm/config.c): the JSON file the daemon
 * writes (--config) and the command line.
 *
 * Input: byte 0 picks the form. Even: the rest is the JSON file (read
 * through a memfd, as a path). Odd: the rest is argv, NUL-separated
 * (arguments starting with "--conf" are dropped: no file but the input's is
 * ever read).
 *
 * Properties: an accepted config is within its documented bounds (1..32
 * vCPUs, 32 MiB..64 GiB, CID 3..2^32-2, uid/gid never 0 or -1, every string
 * NUL-terminated inside its field and the non-empty ones non-empty, at most
 * 8 drives each with exactly one of a comma-free path or an fd 3..1023 and
 * a serial of at most 20 bytes, a net fd 3..1023 with a unicast MAC) and
 * passes config_validate; the same input parses to the same config twice;
 * a JSON config written back as JSON loads to the same config; a rejected
 * one gets a one-line message without control bytes.
 */
#include <errno.h>
#include <jansson.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmm/config.h"

/* One printable line: no control bytes at all (they could drive a terminal). */
static bool one_line(const char *s)
{
	if (!s[0])
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static bool str_ok(const char *s, size_t size)
{
	return strnlen(s, size) < size;
}

static void check_bounds(const struct vmm_config *c)
{
	FZ_CHECK(c->cpus >= 1 && c->cpus <= CONFIG_MAX_CPUS, "cpus %u", c->cpus);
	FZ_CHECK(c->mem_mib >= CONFIG_MIN_MEM_MIB && c->mem_mib <= (64ULL << 10), "mem %llu",
		 (unsigned long long)c->mem_mib);
	FZ_CHECK(c->vsock_cid >= 3 && c->vsock_cid <= 0xfffffffeULL, "cid %llu",
		 (unsigned long long)c->vsock_cid);
	FZ_CHECK(c->jail_uid != 0 && c->jail_uid != 0xffffffffu && c->jail_gid != 0 &&
			 c->jail_gid != 0xffffffffu,
		 "jail ids %u/%u", c->jail_uid, c->jail_gid);
	FZ_CHECK(str_ok(c->kernel, sizeof(c->kernel)) && str_ok(c->initrd, sizeof(c->initrd)) &&
			 str_ok(c->cmdline, sizeof(c->cmdline)) && c->cmdline[0] &&
			 str_ok(c->console_path, sizeof(c->console_path)) &&
			 str_ok(c->vsock_path, sizeof(c->vsock_path)),
		 "a string field");
	FZ_CHECK(c->console == CONSOLE_STDIO || c->console == CONSOLE_NONE ||
			 (c->console == CONSOLE_FILE && c->console_path[0]),
		 "console %d", c->console);
	FZ_CHECK(c->ndrives <= CONFIG_MAX_DRIVES, "%u drives", c->ndrives);
	for (unsigned i = 0; i < c->ndrives; i++) {
		const struct drive_config *d = &c->drives[i];

		FZ_CHECK(str_ok(d->path, sizeof(d->path)) && str_ok(d->serial, sizeof(d->serial)),
			 "drive %u strings", i);
		FZ_CHECK(d->path[0] ? d->fd == -1 && !strchr(d->path, ',')
				    : d->fd >= 3 && d->fd <= 1023,
			 "drive %u: path '%s' fd %d", i, d->path, d->fd);
	}
	FZ_CHECK(c->net_fd == -1 || (c->net_fd >= 3 && c->net_fd <= 1023), "net fd %d", c->net_fd);
	FZ_CHECK(!(c->net_mac[0] & 1) && (c->net_mac[0] | c->net_mac[1] | c->net_mac[2] |
					  c->net_mac[3] | c->net_mac[4] | c->net_mac[5]),
		 "net mac");
}

static int memfd_with(const void *p, size_t n)
{
	int fd = memfd_create("config", MFD_CLOEXEC);

	FZ_CHECK(fd >= 0 && write(fd, p, n) == (ssize_t)n, "memfd");
	return fd;
}

static int load(const void *p, size_t n, struct vmm_config *c, char *err, size_t errlen)
{
	char path[64];
	int fd = memfd_with(p, n), r;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	config_defaults(c);
	r = config_load_json(c, path, err, errlen);
	close(fd);
	return r;
}

/* The config as a JSON file that should load to the same config. */
static char *to_json(const struct vmm_config *c)
{
	json_t *o = json_object(), *drives = json_array();
	char net[64];
	char *text;

	json_object_set_new(o, "cpus", json_integer(c->cpus));
	json_object_set_new(o, "mem_mib", json_integer((json_int_t)c->mem_mib));
	json_object_set_new(o, "cid", json_integer((json_int_t)c->vsock_cid));
	json_object_set_new(o, "uid", json_integer(c->jail_uid));
	json_object_set_new(o, "gid", json_integer(c->jail_gid));
	json_object_set_new(o, "jail", json_boolean(!c->no_jail));
	json_object_set_new(o, "seccomp", json_boolean(!c->no_seccomp));
	json_object_set_new(o, "cmdline", json_string(c->cmdline));
	if (c->kernel[0])
		json_object_set_new(o, "kernel", json_string(c->kernel));
	if (c->initrd[0])
		json_object_set_new(o, "initrd", json_string(c->initrd));
	if (c->vsock_path[0])
		json_object_set_new(o, "vsock", json_string(c->vsock_path));
	json_object_set_new(o, "console", json_string(c->console == CONSOLE_STDIO ? "stdio"
						     : c->console == CONSOLE_NONE ? "none"
										   : c->console_path));
	if (c->net_fd >= 0) {
		snprintf(net, sizeof(net), "fd=%d,mac=%02x:%02x:%02x:%02x:%02x:%02x", c->net_fd,
			 c->net_mac[0], c->net_mac[1], c->net_mac[2], c->net_mac[3], c->net_mac[4],
			 c->net_mac[5]);
		json_object_set_new(o, "net", json_string(net));
	}
	for (unsigned i = 0; i < c->ndrives; i++) {
		const struct drive_config *d = &c->drives[i];
		json_t *j = json_object();

		if (d->path[0])
			json_object_set_new(j, "path", json_string(d->path));
		else
			json_object_set_new(j, "fd", json_integer(d->fd));
		json_object_set_new(j, "read_only", json_boolean(d->read_only));
		if (d->serial[0])
			json_object_set_new(j, "serial", json_string(d->serial));
		json_array_append_new(drives, j);
	}
	if (c->ndrives)
		json_object_set_new(o, "drives", drives);
	else
		json_decref(drives);
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	FZ_CHECK(text, "json_dumps");
	return text;
}

static bool same(const struct vmm_config *a, const struct vmm_config *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static void json_mode(const uint8_t *p, size_t n)
{
	static struct vmm_config c, c2, c3;
	char err[512], err2[512];
	char *text;
	int r = load(p, n, &c, err, sizeof(err)), r2 = load(p, n, &c2, err2, sizeof(err2));

	FZ_CHECK(r == r2 && (r ? !strcmp(err, err2) : same(&c, &c2)), "two loads differ");
	if (r) {
		FZ_CHECK(r == -EINVAL && one_line(err), "error '%s'", err);
		return;
	}
	check_bounds(&c);
	if (c.kernel[0])
		FZ_CHECK(config_validate(&c, 0, err, sizeof(err)) == 0, "validate: %s", err);
	text = to_json(&c);
	r = load(text, strlen(text), &c3, err, sizeof(err));
	FZ_CHECK(r == 0 && same(&c, &c3), "written back as %s, loads %s", text,
		 r ? err : "differently");
	free(text);
}

static void argv_mode(const uint8_t *p, size_t n)
{
	static struct vmm_config c, c2;
	char *buf = malloc(n + 1), *argv[256];
	char err[512], err2[512];
	int argc = 0, r, r2;
	bool help, help2;

	FZ_CHECK(buf, "malloc");
	memcpy(buf, p, n);
	buf[n] = 0;
	for (char *s = buf; s < buf + n + 1 && argc < 250; s += strlen(s) + 1)
		if (strncmp(s, "--conf", 6))
			argv[argc++] = s;
	argv[argc] = NULL;
	config_defaults(&c);
	config_defaults(&c2);
	r = config_parse_args(&c, argc, argv, &help, err, sizeof(err));
	r2 = config_parse_args(&c2, argc, argv, &help2, err2, sizeof(err2));
	FZ_CHECK(r == r2 && help == help2 && (r ? !strcmp(err, err2) : same(&c, &c2)),
		 "two parses differ");
	if (r)
		FZ_CHECK(r == -EINVAL && one_line(err), "error '%s'", err);
	else
		check_bounds(&c);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	if (data[0] & 1)
		argv_mode(data + 1, size - 1);
	else
		json_mode(data + 1, size - 1);
	return 0;
}
