#include "vmm/config.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "guestnet.h"
#include "util.h"
#include "vmm/jail.h"

const char config_usage[] =
	"usage: kiln-vmm --kernel VMLINUX [--initrd FILE] [--cmdline STR] [--cpus N]\n"
	"                [--mem MiB] [--console stdio|none|PATH] [--config FILE.json]\n"
	"                [--drive path=FILE|fd=N[,ro][,serial=ID]]... [--vsock UDS_PATH]\n"
	"                [--cid N] [--net fd=N[,mac=MAC]] [--print-boot-time] [--ready-fd N]\n"
	"                [--control-fd N] [--uid N] [--gid N] [--no-jail] [--no-seccomp]\n"
	"       kiln-vmm --restore DIR [--cpus N] [--mem MiB] [--drive ...,ro] [...]\n"
	"Boots one microVM and exits when it ends. Later settings override earlier ones,\n"
	"so flags after --config override the file. The VMM runs jailed and under\n"
	"seccomp filters; --no-jail and --no-seccomp are for diagnosis only.\n"
	"--restore DIR resumes the VM saved in DIR/state and DIR/mem (a snapshot) instead\n"
	"of booting; --cpus, --mem and the devices must be the saved VM's.\n";

/*
 * Messages quote what was given (an argument, a JSON key or value): turn its
 * control bytes into '?', so that an error stays one line and never sends
 * escape sequences to a terminal. Returns ret.
 */
static int config_fail(char *err, size_t errlen, int ret)
{
	for (size_t i = 0; i < errlen && err[i]; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = '?';
	return ret;
}

void config_defaults(struct vmm_config *c)
{
	memset(c, 0, sizeof(*c));
	c->cpus = 1;
	c->mem_mib = 128;
	c->console = CONSOLE_STDIO;
	c->vsock_cid = 3;
	c->jail_uid = c->jail_gid = JAIL_DEFAULT_ID;
	c->net_fd = -1;
	c->ready_fd = -1;
	c->control_fd = -1;
	memcpy(c->net_mac, (const uint8_t[6])GUESTNET_GUEST_MAC, 6);
	snprintf(c->cmdline, sizeof(c->cmdline), "%s", CONFIG_DEFAULT_CMDLINE);
}

static int set_str(char *dst, size_t size, const char *val, const char *what, char *err,
		   size_t errlen)
{
	size_t n = strlen(val);

	if (n == 0) {
		snprintf(err, errlen, "%s must not be empty", what);
		return -EINVAL;
	}
	if (n >= size) {
		snprintf(err, errlen, "%s is too long (%zu bytes, at most %zu)", what, n, size - 1);
		return -EINVAL;
	}
	memcpy(dst, val, n + 1);
	return 0;
}

static int set_cpus(struct vmm_config *c, const char *s, char *err, size_t errlen)
{
	uint64_t v;

	if (parse_u64(s, 1, CONFIG_MAX_CPUS, &v)) {
		snprintf(err, errlen, "--cpus must be a whole number from 1 to %d, not '%s'",
			 CONFIG_MAX_CPUS, s);
		return -EINVAL;
	}
	c->cpus = (unsigned)v;
	return 0;
}

static int set_mem(struct vmm_config *c, const char *s, char *err, size_t errlen)
{
	uint64_t v;

	if (parse_u64(s, CONFIG_MIN_MEM_MIB, (64ULL << 10), &v)) {
		snprintf(err, errlen, "--mem must be a size in MiB from %d to %llu, not '%s'",
			 CONFIG_MIN_MEM_MIB, 64ULL << 10, s);
		return -EINVAL;
	}
	c->mem_mib = v;
	return 0;
}

static int set_cid(struct vmm_config *c, const char *s, char *err, size_t errlen)
{
	if (parse_u64(s, 3, 0xfffffffeULL, &c->vsock_cid)) {
		snprintf(err, errlen, "--cid must be a number from 3 to 4294967294, not '%s'", s);
		return -EINVAL;
	}
	return 0;
}

/* The jail's uid or gid: never 0 (that would keep the VMM root), never -1. */
static int set_id(uint32_t *id, const char *s, const char *what, char *err, size_t errlen)
{
	uint64_t v;

	if (parse_u64(s, 1, 0xfffffffeULL, &v)) {
		snprintf(err, errlen, "%s must be a number from 1 to 4294967294, not '%s'", what, s);
		return -EINVAL;
	}
	*id = (uint32_t)v;
	return 0;
}

static int set_console(struct vmm_config *c, const char *s, char *err, size_t errlen)
{
	if (!strcmp(s, "stdio")) {
		c->console = CONSOLE_STDIO;
		return 0;
	}
	if (!strcmp(s, "none")) {
		c->console = CONSOLE_NONE;
		return 0;
	}
	c->console = CONSOLE_FILE;
	return set_str(c->console_path, sizeof(c->console_path), s, "--console path", err, errlen);
}

int config_add_drive(struct vmm_config *c, const char *spec, char *err, size_t errlen)
{
	struct drive_config d = { .fd = -1 };
	char buf[CONFIG_MAX_PATH + 64];
	char *save = NULL, *tok;
	bool have_src = false, have_serial = false;

	if (c->ndrives >= CONFIG_MAX_DRIVES) {
		snprintf(err, errlen, "at most %d drives", CONFIG_MAX_DRIVES);
		return -EINVAL;
	}
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "--drive spec is too long");
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t fd;

		if (!strncmp(tok, "path=", 5) && !have_src) {
			if (set_str(d.path, sizeof(d.path), tok + 5, "--drive path", err, errlen))
				return -EINVAL;
			have_src = true;
		} else if (!strncmp(tok, "fd=", 3) && !have_src) {
			if (parse_u64(tok + 3, 3, 1023, &fd)) {
				snprintf(err, errlen, "--drive fd= must be a descriptor number from 3 to 1023");
				return -EINVAL;
			}
			d.fd = (int)fd;
			have_src = true;
		} else if (!strcmp(tok, "ro")) {
			d.read_only = true;
		} else if (!strcmp(tok, "rw")) {
			d.read_only = false;
		} else if (!strncmp(tok, "serial=", 7) && !have_serial) {
			have_serial = true;
			if (set_str(d.serial, sizeof(d.serial), tok + 7, "--drive serial", err, errlen))
				return -EINVAL;
		} else {
			snprintf(err, errlen, "--drive: unknown or repeated item '%.64s' (want path=FILE or fd=N, ro|rw, serial=ID)",
				 tok);
			return -EINVAL;
		}
	}
	if (!have_src) {
		snprintf(err, errlen, "--drive needs path=FILE or fd=N");
		return -EINVAL;
	}
	c->drives[c->ndrives++] = d;
	return 0;
}

/* "XX:XX:XX:XX:XX:XX", hex digits only (no signs or spaces), unicast, not zero. */
static int parse_mac(const char *s, uint8_t mac[6])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t m[6] = { 0 };

	if (strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 17; i++) {
		const char *d = strchr(hex, s[i] | 0x20);

		if (i % 3 == 2 ? s[i] != ':' : (!s[i] || !d))
			return -EINVAL;
		if (i % 3 != 2)
			m[i / 3] = (uint8_t)(m[i / 3] << 4 | (d - hex));
	}
	if ((m[0] & 1) || !(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
		return -EINVAL;
	memcpy(mac, m, 6);
	return 0;
}

/* --ready-fd, --control-fd: a descriptor the VMM inherits. */
static int set_fd(int *out, const char *opt, const char *val, char *err, size_t errlen)
{
	uint64_t v;

	if (parse_u64(val, 3, 1023, &v)) {
		snprintf(err, errlen, "--%s must be a descriptor number from 3 to 1023, not '%.32s'",
			 opt, val);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

int config_set_net(struct vmm_config *c, const char *spec, char *err, size_t errlen)
{
	char buf[64];
	char *save = NULL, *tok;
	int fd = -1;

	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "--net spec is too long");
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (!strncmp(tok, "fd=", 3) && fd < 0) {
			if (parse_u64(tok + 3, 3, 1023, &v)) {
				snprintf(err, errlen, "--net fd= must be a descriptor number from 3 to 1023");
				return -EINVAL;
			}
			fd = (int)v;
		} else if (!strncmp(tok, "mac=", 4)) {
			if (parse_mac(tok + 4, c->net_mac)) {
				snprintf(err, errlen, "--net mac= must be a unicast XX:XX:XX:XX:XX:XX, not '%.32s'",
					 tok + 4);
				return -EINVAL;
			}
		} else {
			snprintf(err, errlen, "--net: unknown or repeated item '%.32s' (want fd=N[,mac=MAC])", tok);
			return -EINVAL;
		}
	}
	if (fd < 0) {
		snprintf(err, errlen, "--net needs fd=N (a socket to kiln-net)");
		return -EINVAL;
	}
	c->net_fd = fd;
	return 0;
}

/* "drives": [{"path": P | "fd": N, "read_only": bool, "serial": S}, ...] */
static int load_json_drives(struct vmm_config *c, json_t *arr, const char *path, char *err,
			    size_t errlen)
{
	size_t i;
	json_t *d;

	if (!json_is_array(arr)) {
		snprintf(err, errlen, "config file %s: \"drives\" must be an array", path);
		return -EINVAL;
	}
	json_array_foreach(arr, i, d) {
		char spec[CONFIG_MAX_PATH + 64];
		json_t *p = json_object_get(d, "path"), *fd = json_object_get(d, "fd");
		json_t *ro = json_object_get(d, "read_only"), *ser = json_object_get(d, "serial");
		size_t n;

		if (!json_is_object(d) || json_object_size(d) != (size_t)(!!p + !!fd + !!ro + !!ser) ||
		    (p && !json_is_string(p)) || (fd && !json_is_integer(fd)) ||
		    (ro && !json_is_boolean(ro)) || (ser && !json_is_string(ser)) || (!p == !fd)) {
			snprintf(err, errlen,
				 "config file %s: drive %zu must be {\"path\": STR or \"fd\": N, \"read_only\": BOOL, \"serial\": STR}",
				 path, i);
			return -EINVAL;
		}
		/* The spec below is split at commas, so neither value may hold one. */
		if ((p && strchr(json_string_value(p), ',')) ||
		    (ser && strchr(json_string_value(ser), ','))) {
			snprintf(err, errlen, "config file %s: drive %zu: %s must not contain ','", path,
				 i, p && strchr(json_string_value(p), ',') ? "path" : "serial");
			return -EINVAL;
		}
		if (p)
			n = (size_t)snprintf(spec, sizeof(spec), "path=%s", json_string_value(p));
		else
			n = (size_t)snprintf(spec, sizeof(spec), "fd=%lld", (long long)json_integer_value(fd));
		if (n < sizeof(spec) && ro && json_is_true(ro))
			n += (size_t)snprintf(spec + n, sizeof(spec) - n, ",ro");
		if (n < sizeof(spec) && ser)
			n += (size_t)snprintf(spec + n, sizeof(spec) - n, ",serial=%s", json_string_value(ser));
		if (n >= sizeof(spec) || config_add_drive(c, spec, err, errlen)) {
			if (n >= sizeof(spec))
				snprintf(err, errlen, "config file %s: drive %zu is too long", path, i);
			return -EINVAL;
		}
	}
	return 0;
}

int config_load_json(struct vmm_config *c, const char *path, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = NULL, *val;
	const char *key;
	struct stat st;
	char num[32];
	int ret = -EINVAL;

	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_FILE) {
		snprintf(err, errlen, "config file %s is not a regular file of at most %d bytes",
			 path, CONFIG_MAX_FILE);
		goto out;
	}
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, errlen, "config file %s, line %d: %s", path, jerr.line, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "config file %s must hold a JSON object", path);
		goto out;
	}
	json_object_foreach(root, key, val) {
		int r;

		if (!strcmp(key, "jail") || !strcmp(key, "seccomp")) {
			if (!json_is_boolean(val)) {
				snprintf(err, errlen, "config file %s: \"%s\" must be true or false",
					 path, key);
				goto out;
			}
			if (key[0] == 'j')
				c->no_jail = !json_is_true(val);
			else
				c->no_seccomp = !json_is_true(val);
			r = 0;
		} else if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
			if (!json_is_integer(val) || json_integer_value(val) < 0) {
				snprintf(err, errlen, "config file %s: \"%s\" must be a whole number",
					 path, key);
				goto out;
			}
			snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(val));
			r = set_id(key[0] == 'u' ? &c->jail_uid : &c->jail_gid, num,
				   key[0] == 'u' ? "uid" : "gid", err, errlen);
		} else if (!strcmp(key, "cpus") || !strcmp(key, "mem_mib") || !strcmp(key, "cid") ||
			   !strcmp(key, "ready_fd") || !strcmp(key, "control_fd")) {
			if (!json_is_integer(val) || json_integer_value(val) < 0) {
				snprintf(err, errlen, "config file %s: \"%s\" must be a whole number",
					 path, key);
				goto out;
			}
			snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(val));
			if (!strcmp(key, "cid"))
				r = set_cid(c, num, err, errlen);
			else if (!strcmp(key, "ready_fd"))
				r = set_fd(&c->ready_fd, "ready-fd", num, err, errlen);
			else if (!strcmp(key, "control_fd"))
				r = set_fd(&c->control_fd, "control-fd", num, err, errlen);
			else
				r = key[0] == 'c' ? set_cpus(c, num, err, errlen) : set_mem(c, num, err, errlen);
		} else if (!strcmp(key, "drives")) {
			r = load_json_drives(c, val, path, err, errlen);
		} else if (!strcmp(key, "kernel") || !strcmp(key, "initrd") ||
			   !strcmp(key, "cmdline") || !strcmp(key, "console") || !strcmp(key, "vsock") ||
			   !strcmp(key, "net")) {
			const char *s = json_string_value(val);

			if (!json_is_string(val) || !s) {
				snprintf(err, errlen, "config file %s: \"%s\" must be a string", path,
					 key);
				goto out;
			}
			if (!strcmp(key, "kernel"))
				r = set_str(c->kernel, sizeof(c->kernel), s, "kernel path", err, errlen);
			else if (!strcmp(key, "initrd"))
				r = set_str(c->initrd, sizeof(c->initrd), s, "initrd path", err, errlen);
			else if (!strcmp(key, "vsock"))
				r = set_str(c->vsock_path, sizeof(c->vsock_path), s, "vsock path", err, errlen);
			else if (!strcmp(key, "net"))
				r = config_set_net(c, s, err, errlen);
			else if (!strcmp(key, "cmdline"))
				r = set_str(c->cmdline, sizeof(c->cmdline), s, "cmdline", err, errlen);
			else
				r = set_console(c, s, err, errlen);
		} else {
			snprintf(err, errlen, "config file %s: unknown key \"%.64s\"", path, key);
			goto out;
		}
		if (r)
			goto out;
	}
	ret = 0;
out:
	json_decref(root);
	return ret ? config_fail(err, errlen, ret) : 0;
}

int config_parse_args(struct vmm_config *c, int argc, char **argv, bool *help, char *err,
		      size_t errlen)
{
	enum { O_KERNEL = 256, O_INITRD, O_CMDLINE, O_CPUS, O_MEM, O_CONSOLE, O_CONFIG, O_BOOTTIME,
	       O_DRIVE, O_VSOCK, O_CID, O_NET, O_READY, O_CONTROL, O_UID, O_GID, O_NO_JAIL, O_NO_SECCOMP,
	       O_TEST_HOOKS, O_RESTORE };
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "initrd", required_argument, NULL, O_INITRD },
		{ "cmdline", required_argument, NULL, O_CMDLINE },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "mem", required_argument, NULL, O_MEM },
		{ "console", required_argument, NULL, O_CONSOLE },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "print-boot-time", no_argument, NULL, O_BOOTTIME },
		{ "drive", required_argument, NULL, O_DRIVE },
		{ "vsock", required_argument, NULL, O_VSOCK },
		{ "cid", required_argument, NULL, O_CID },
		{ "net", required_argument, NULL, O_NET },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "control-fd", required_argument, NULL, O_CONTROL },
		{ "uid", required_argument, NULL, O_UID },
		{ "gid", required_argument, NULL, O_GID },
		{ "no-jail", no_argument, NULL, O_NO_JAIL },
		{ "no-seccomp", no_argument, NULL, O_NO_SECCOMP },
		{ "restore", required_argument, NULL, O_RESTORE },
#ifdef KILN_TEST_HOOKS
		{ "test-hooks", no_argument, NULL, O_TEST_HOOKS },
#endif
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *args[256];
	int opt, r = 0;

	*help = false;
	if (argc + 1 > (int)(sizeof(args) / sizeof(args[0]))) {
		snprintf(err, errlen, "too many arguments");
		return -EINVAL;
	}
	/* getopt wants argv[0]. */
	args[0] = (char *)"kiln-vmm";
	for (int i = 0; i < argc; i++)
		args[i + 1] = argv[i];
	args[argc + 1] = NULL;
	/* 0, not 1: glibc then forgets everything of an earlier call, including
	 * the rest of a short-option cluster it stopped in ("-?hh"), which would
	 * otherwise be read from that call's argv. */
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc + 1, args, ":h", opts, NULL)) != -1 && r == 0) {
		switch (opt) {
		case O_KERNEL:
			r = set_str(c->kernel, sizeof(c->kernel), optarg, "--kernel", err, errlen);
			break;
		case O_INITRD:
			r = set_str(c->initrd, sizeof(c->initrd), optarg, "--initrd", err, errlen);
			break;
		case O_CMDLINE:
			r = set_str(c->cmdline, sizeof(c->cmdline), optarg, "--cmdline", err, errlen);
			break;
		case O_CPUS:
			r = set_cpus(c, optarg, err, errlen);
			break;
		case O_MEM:
			r = set_mem(c, optarg, err, errlen);
			break;
		case O_CONSOLE:
			r = set_console(c, optarg, err, errlen);
			break;
		case O_CONFIG:
			r = config_load_json(c, optarg, err, errlen);
			break;
		case O_BOOTTIME:
			c->print_boot_time = true;
			break;
		case O_DRIVE:
			r = config_add_drive(c, optarg, err, errlen);
			break;
		case O_VSOCK:
			r = set_str(c->vsock_path, sizeof(c->vsock_path), optarg, "--vsock path", err,
				    errlen);
			break;
		case O_CID:
			r = set_cid(c, optarg, err, errlen);
			break;
		case O_NET:
			r = config_set_net(c, optarg, err, errlen);
			break;
		case O_READY:
			r = set_fd(&c->ready_fd, "ready-fd", optarg, err, errlen);
			break;
		case O_CONTROL:
			r = set_fd(&c->control_fd, "control-fd", optarg, err, errlen);
			break;
		case O_UID:
			r = set_id(&c->jail_uid, optarg, "--uid", err, errlen);
			break;
		case O_GID:
			r = set_id(&c->jail_gid, optarg, "--gid", err, errlen);
			break;
		case O_NO_JAIL:
			c->no_jail = true;
			break;
		case O_NO_SECCOMP:
			c->no_seccomp = true;
			break;
		case O_RESTORE:
			r = set_str(c->restore_dir, sizeof(c->restore_dir), optarg, "--restore", err,
				    errlen);
			break;
#ifdef KILN_TEST_HOOKS
		case O_TEST_HOOKS:
			c->test_hooks = true;
			break;
#endif
		case 'h':
			*help = true;
			return 0;
		case ':':
			snprintf(err, errlen, "option %s needs a value", args[optind - 1]);
			r = -EINVAL;
			break;
		default:
			snprintf(err, errlen, "unknown option '%s'", args[optind - 1]);
			r = -EINVAL;
			break;
		}
	}
	if (!r && optind < argc + 1) {
		snprintf(err, errlen, "unexpected argument '%s'", args[optind]);
		r = -EINVAL;
	}
	return r ? config_fail(err, errlen, r) : 0;
}

int config_validate(const struct vmm_config *c, uint64_t host_mem_mib, char *err, size_t errlen)
{
	if (c->restore_dir[0] && (c->kernel[0] || c->initrd[0])) {
		snprintf(err, errlen, "--restore resumes a saved VM: no --kernel or --initrd with it");
		return -EINVAL;
	}
	if (!c->kernel[0] && !c->restore_dir[0]) {
		snprintf(err, errlen, "no kernel given (--kernel VMLINUX)");
		return -EINVAL;
	}
	if (c->cpus < 1 || c->cpus > CONFIG_MAX_CPUS) {
		snprintf(err, errlen, "--cpus must be from 1 to %d", CONFIG_MAX_CPUS);
		return -EINVAL;
	}
	if (c->mem_mib < CONFIG_MIN_MEM_MIB) {
		snprintf(err, errlen, "--mem must be at least %d MiB", CONFIG_MIN_MEM_MIB);
		return -EINVAL;
	}
	if (c->control_fd >= 0) {
		bool clash = c->control_fd == c->ready_fd || c->control_fd == c->net_fd;

		for (unsigned i = 0; i < c->ndrives; i++)
			clash = clash || c->control_fd == c->drives[i].fd;
		if (clash) {
			snprintf(err, errlen, "--control-fd %d is also given for another use",
				 c->control_fd);
			return -EINVAL;
		}
	}
	if (host_mem_mib && c->mem_mib > host_mem_mib) {
		snprintf(err, errlen, "--mem %llu MiB is more than this host's %llu MiB of RAM",
			 (unsigned long long)c->mem_mib, (unsigned long long)host_mem_mib);
		return -EINVAL;
	}
	return 0;
}
