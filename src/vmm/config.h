/*
 * kiln-vmm's validated configuration, from command-line flags or a JSON file
 * (`--config FILE`, the form the daemon uses). Parsing only: nothing here
 * opens the kernel or touches KVM.
 */
#ifndef KILN_VMM_CONFIG_H
#define KILN_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MIN_MEM_MIB 32
#define CONFIG_MAX_CPUS 32
#define CONFIG_MAX_PATH 4096
#define CONFIG_MAX_CMDLINE 1536 /* leaves room for device arguments the VMM appends */
#define CONFIG_MAX_FILE (1 << 20)

#define CONFIG_MAX_DRIVES 8
#define CONFIG_MAX_SERIAL 20 /* virtio-blk GET_ID */

enum console_mode { CONSOLE_STDIO, CONSOLE_NONE, CONSOLE_FILE };

/* A virtio-blk disk: a path the VMM opens, or an fd it inherited. */
struct drive_config {
	char path[CONFIG_MAX_PATH]; /* "" when fd is used */
	int fd;                     /* -1 when path is used */
	bool read_only;
	char serial[CONFIG_MAX_SERIAL + 1];
};

struct vmm_config {
	char kernel[CONFIG_MAX_PATH];
	char restore_dir[CONFIG_MAX_PATH]; /* --restore DIR (state, mem): no kernel then; "" = boot */
	char initrd[CONFIG_MAX_PATH]; /* "" = none */
	char cmdline[CONFIG_MAX_CMDLINE];
	unsigned cpus;
	uint64_t mem_mib;
	enum console_mode console;
	char console_path[CONFIG_MAX_PATH];
	bool print_boot_time;
	struct drive_config drives[CONFIG_MAX_DRIVES];
	unsigned ndrives;
	int net_fd;           /* --net fd=N: SOCK_SEQPACKET to kiln-net; -1 = no network device */
	int ready_fd;         /* --ready-fd N: one byte written at the guest's boot mark; -1 = none */
	int control_fd;       /* --control-fd N: a SOCK_SEQPACKET control channel (common/ctl.h); -1 = none */
	uint8_t net_mac[6];
	char vsock_path[108]; /* Unix socket for the guest's vsock; "" = no vsock device */
	uint64_t vsock_cid;
	/* Defence in depth (docs/security.md); the two escape hatches are for diagnosis. */
	bool no_jail;
	bool no_seccomp;
	uint32_t jail_uid, jail_gid; /* what a root caller drops to */
#ifdef KILN_TEST_HOOKS
	bool test_hooks;
#endif
};

#define CONFIG_DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=-1 pci=off io_delay=none"

void config_defaults(struct vmm_config *c);

/* Parse argv (after the program name). On error returns -EINVAL and writes a
 * one-line message to err. Sets *help when --help was asked. */
int config_parse_args(struct vmm_config *c, int argc, char **argv, bool *help, char *err,
		      size_t errlen);

/* Load a JSON config file over c. Same error convention. */
int config_load_json(struct vmm_config *c, const char *path, char *err, size_t errlen);

/* Parse a --drive spec: path=FILE or fd=N, then optional ro|rw and serial=ID,
 * comma-separated (paths cannot contain commas). */
int config_add_drive(struct vmm_config *c, const char *spec, char *err, size_t errlen);

/* Parse a --net spec: fd=N (a connected SOCK_SEQPACKET socket), then
 * optional mac=XX:XX:XX:XX:XX:XX (unicast). */
int config_set_net(struct vmm_config *c, const char *spec, char *err, size_t errlen);

/* Checks that need the whole config (kernel given, limits, host memory). */
int config_validate(const struct vmm_config *c, uint64_t host_mem_mib, char *err, size_t errlen);

extern const char config_usage[];

#endif
