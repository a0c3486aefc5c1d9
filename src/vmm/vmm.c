#include "vmm/vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "util.h"
#include "vmm/acpi.h"
#include "vmm/boot.h"
#include "vmm/devices/boottimer.h"
#include "vmm/devices/i8042.h"
#include "vmm/devices/power.h"
#include "vmm/devices/serial.h"
#include "vmm/exit.h"
#include "vmm/io.h"
#include "vmm/jail.h"
#include "vmm/kvm.h"
#include "vmm/restore.h"
#include "vmm/seccomp.h"
#include "vmm/snapshot.h"
#include "vmm/vcpu.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/mmio.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/rng.h"
#include "vmm/virtio/vsock.h"

/* virtio-mmio windows and their edge-triggered GSIs (4 is the UART's). */
#define VIRTIO_MMIO_BASE 0xd0000000ULL
#define VIRTIO_MMIO_STRIDE 0x1000ULL
#define VIRTIO_GSI_FIRST 5
#define VIRTIO_MAX_DEVS (KVM_MAX_IRQFDS - VIRTIO_GSI_FIRST)

#define CONSOLE_FILE_LIMIT (64ULL << 20)

struct irq_line {
	struct kvm_vm *vm;
	unsigned gsi;
	const bool *held;	/* the VMM's irqs_held */
	bool owed;		/* raised while held */
};

struct vmm {
	const struct vmm_config *cfg;
	uint64_t start_ns;
	struct kvm_vm *vm;
	struct io_bus pio;
	struct io_bus mmio;
	struct vcpu_env env;
	bool irqs_held;			/* restoring: device interrupts wait (irq_line_pulse) */
	struct vcpu vcpus[VCPU_MAX];
	unsigned nvcpus;

	struct restore *restore;	/* --restore: the checked snapshot, else NULL */
	struct boot_kernel kernel;
	uint64_t initrd_gpa;
	uint64_t initrd_size;
	struct acpi_dev acpi_devs[ACPI_MAX_DEVICES];
	unsigned n_acpi_devs;

	struct virtio_slot {
		struct virtio_mmio_dev *mmio;
		const struct virtio_dev_ops *ops;
		void *dev;
		struct irq_line irq;
	} virtio[VIRTIO_MAX_DEVS];
	unsigned nvirtio;
	struct vsock *vsock;		/* started once the jail is closed */
	struct virtio_mmio_dev *vsock_mmio;
	struct vnet *net;		/* started once the jail is closed */
	struct virtio_mmio_dev *net_mmio;
	int drive_fd[CONFIG_MAX_DRIVES]; /* fds the VMM opened itself */

	struct irq_line serial_irq;
	struct serial *serial;
	struct i8042 kbd;
	struct power power;
	struct boottimer timer;

	int console_fd; /* owned when the console is a file */
	int stop_efd;
	int sig_fd;
	int ctl_fd;	/* --control-fd once checked, else -1 */
	bool paused;	/* main thread only */
	uint64_t boot_us; /* the guest's boot mark (atomic), 0 before it */

	uint64_t walls_ns; /* jail + main and vsock seccomp set-up (bench/run) */

	pthread_mutex_t lock;
	int status; /* -1 while running */
	char why[160];
};

/*
 * While a restore's vCPUs have not all set their LAPIC, an interrupt would
 * land in a LAPIC that KVM_SET_LAPIC then overwrites, lost for good: the
 * devices' and COM1's (owed ones raised by the restore, a device thread's
 * first completions) are held and raised once every vCPU is restored. The second
 * look catches a release that ran between the first and the mark; the
 * exchange makes one of the two raise it, once.
 */
static void irq_line_pulse(void *opaque)
{
	struct irq_line *l = opaque;

	if (__atomic_load_n(l->held, __ATOMIC_SEQ_CST)) {
		__atomic_store_n(&l->owed, true, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(l->held, __ATOMIC_SEQ_CST) ||
		    !__atomic_exchange_n(&l->owed, false, __ATOMIC_SEQ_CST))
			return;
	}
	kvm_vm_irq_pulse(l->vm, l->gsi);
}

/* vcpu_env.restored: every LAPIC is set; the held interrupts go out. */
static void irqs_release(void *ctx)
{
	struct vmm *v = ctx;

	__atomic_store_n(&v->irqs_held, false, __ATOMIC_SEQ_CST);
	if (__atomic_exchange_n(&v->serial_irq.owed, false, __ATOMIC_SEQ_CST))
		kvm_vm_irq_pulse(v->serial_irq.vm, v->serial_irq.gsi);
	for (unsigned i = 0; i < v->nvirtio; i++)
		if (__atomic_exchange_n(&v->virtio[i].irq.owed, false, __ATOMIC_SEQ_CST))
			kvm_vm_irq_pulse(v->virtio[i].irq.vm, v->virtio[i].irq.gsi);
}

/* First terminal event wins; every vCPU is then told to stop. */
static void vmm_stop(void *ctx, int status, const char *why)
{
	struct vmm *v = ctx;
	uint64_t one = 1;

	pthread_mutex_lock(&v->lock);
	if (v->status < 0) {
		v->status = status;
		snprintf(v->why, sizeof(v->why), "%s", why);
	}
	pthread_mutex_unlock(&v->lock);
	__atomic_store_n(&v->env.stopping, 1, __ATOMIC_RELEASE);
	if (write(v->stop_efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow with the few writes we make */
	}
}

static void on_reset(void *ctx)
{
	vmm_stop(ctx, VMM_EXIT_RESET, "guest reset");
}

static void on_poweroff(void *ctx)
{
	vmm_stop(ctx, VMM_EXIT_POWEROFF, "guest powered off");
}

static void on_panic(void *ctx)
{
	vmm_stop(ctx, VMM_EXIT_PANIC, "guest kernel panic");
}

static void on_boot_mark(void *ctx, uint64_t elapsed_ns)
{
	struct vmm *v = ctx;

	/* Whoever waits for the guest learns it without asking (a pipe's
	 * POLLIN; its POLLHUP if we die first). Once: the first mark wins. */
	if (v->cfg->ready_fd >= 0 && write(v->cfg->ready_fd, "r", 1) < 0) {
		/* the reader went away: nobody to tell */
	}
	__atomic_store_n(&v->boot_us, elapsed_ns / 1000 ? elapsed_ns / 1000 : 1, __ATOMIC_RELAXED);
	if (v->ctl_fd >= 0) {
		struct ctl_msg m;

		ctl_init(&m, CTL_EV_BOOTED, 0, 0, NULL);
		m.a = elapsed_ns / 1000;
		if (write(v->ctl_fd, &m, sizeof(m)) < 0) {
			/* a full or closed channel: the owner can still ask (STATUS) */
		}
	}
	if (v->cfg->print_boot_time)
		fprintf(stderr, "kiln-vmm: boot-time-us=%llu walls-us=%llu\n",
			(unsigned long long)(elapsed_ns / 1000),
			(unsigned long long)(__atomic_load_n(&v->walls_ns, __ATOMIC_RELAXED) / 1000));
}

static void kick_handler(int sig)
{
	(void)sig;
}

/* Block the signals the main loop reads from a signalfd (and the vCPU kick,
 * which only vCPU threads unblock). Done before any thread starts. */
static int setup_signals(struct vmm *v)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	/* A handler for the signalfd's signals too: jailed, the VMM is PID 1 of
	 * its namespace, which drops signals left at SIG_DFL even when blocked. */
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
	    sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGHUP, &sa, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		return -EINVAL;
	sigdelset(&set, VCPU_KICK_SIGNAL);
	v->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return v->sig_fd < 0 ? -errno : 0;
}

static int open_console(struct vmm *v, char *why, size_t whylen)
{
	switch (v->cfg->console) {
	case CONSOLE_STDIO:
		v->console_fd = STDOUT_FILENO;
		break;
	case CONSOLE_NONE:
		v->console_fd = -1;
		break;
	case CONSOLE_FILE:
		v->console_fd = open(v->cfg->console_path,
				     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (v->console_fd < 0) {
			snprintf(why, whylen, "cannot open console file %s: %s",
				 v->cfg->console_path, strerror(errno));
			return -1;
		}
		break;
	}
	return 0;
}

static void free_device(const struct virtio_dev_ops *ops, void *dev)
{
	if (ops == &vblk_ops)
		vblk_free(dev);
	else if (ops == &vrng_ops)
		vrng_free(dev);
	else if (ops == &vsock_ops)
		vsock_free(dev);
	else if (ops == &vnet_ops)
		vnet_free(dev);
}

/* Put a virtio device on the next MMIO window and GSI, and describe it in the
 * DSDT. Takes ownership of dev, also on failure. */
static int add_virtio(struct vmm *v, const struct virtio_dev_ops *ops, void *dev)
{
	struct virtio_slot *slot;
	uint64_t base;
	unsigned gsi;
	int ret;

	if (v->nvirtio >= VIRTIO_MAX_DEVS || v->n_acpi_devs >= ACPI_MAX_DEVICES) {
		free_device(ops, dev);
		return -ENOSPC;
	}
	slot = &v->virtio[v->nvirtio];
	base = VIRTIO_MMIO_BASE + v->nvirtio * VIRTIO_MMIO_STRIDE;
	gsi = VIRTIO_GSI_FIRST + v->nvirtio;
	*slot = (struct virtio_slot){ .ops = ops, .dev = dev, .irq = { v->vm, gsi, &v->irqs_held, false } };
	v->nvirtio++; /* the slot owns dev from here on; free_virtio() releases it */
	ret = kvm_vm_irqfd(v->vm, gsi);
	if (!ret)
		ret = virtio_mmio_create(&slot->mmio, ops, dev, v->vm->mem, irq_line_pulse, &slot->irq);
	if (!ret)
		ret = virtio_mmio_register(slot->mmio, &v->mmio, base);
	if (ret)
		return ret;
	v->acpi_devs[v->n_acpi_devs++] = (struct acpi_dev){ ACPI_DEV_VIRTIO, base, VIRTIO_MMIO_SIZE,
							    gsi };
	return 0;
}

static void free_virtio(struct vmm *v)
{
	/* Device threads first: they use the transports freed below. */
	for (unsigned i = 0; i < v->nvirtio; i++)
		if (v->virtio[i].ops == &vsock_ops)
			vsock_stop(v->virtio[i].dev);
		else if (v->virtio[i].ops == &vnet_ops)
			vnet_stop(v->virtio[i].dev);
	for (unsigned i = 0; i < v->nvirtio; i++) {
		virtio_mmio_free(v->virtio[i].mmio);
		free_device(v->virtio[i].ops, v->virtio[i].dev);
	}
	v->nvirtio = 0;
}

/* --ready-fd: open for writing, and never able to block a vCPU thread. */
static int check_ready_fd(struct vmm *v, char *why, size_t whylen)
{
	int fl, fd = v->cfg->ready_fd;

	if (fd < 0)
		return 0;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY) {
		snprintf(why, whylen, "--ready-fd %d is not open for writing", fd);
		return VMM_EXIT_USAGE;
	}
	if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		snprintf(why, whylen, "--ready-fd %d: %s", fd, strerror(errno));
		return VMM_EXIT_USAGE;
	}
	return 0;
}

/* --control-fd must be a SOCK_SEQPACKET socket; it is made non-blocking, so
 * an owner that stops reading loses messages and never stalls us. */
static int check_control_fd(struct vmm *v, char *why, size_t whylen)
{
	int fd = v->cfg->control_fd, type = 0, fl;
	socklen_t len = sizeof(type);

	if (fd < 0)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET) {
		snprintf(why, whylen, "--control-fd %d is not a SOCK_SEQPACKET socket", fd);
		return VMM_EXIT_USAGE;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		snprintf(why, whylen, "--control-fd %d: %s", fd, strerror(errno));
		return VMM_EXIT_USAGE;
	}
	v->ctl_fd = fd;
	return 0;
}

static void ctl_send(struct vmm *v, const struct ctl_msg *m)
{
	if (write(v->ctl_fd, m, sizeof(*m)) < 0) {
		/* full or closed: replies are the owner's to read */
	}
}

/* CTL_SNAPSHOT: fds[0] the state file, fds[1] the memory file. */
static void ctl_snapshot(struct vmm *v, const int *fds, unsigned nfds, struct ctl_msg *rep)
{
	struct snapshot_dev devs[VIRTIO_MAX_DEVS];
	struct snapshot_src src = { .vm = v->vm, .vcpus = v->vcpus, .nvcpus = v->nvcpus,
				    .devs = devs, .ndevs = v->nvirtio, .serial = v->serial };
	struct snapshot_result res;

	rep->result = -EINVAL;
	if (!v->paused) {
		snprintf(rep->text, sizeof(rep->text), "snapshot: the VM is running: pause it first");
		return;
	}
	if (nfds != 2) {
		snprintf(rep->text, sizeof(rep->text),
			 "snapshot: needs two fds (state file, memory file), got %u", nfds);
		return;
	}
	for (unsigned i = 0; i < v->nvirtio; i++)
		devs[i] = (struct snapshot_dev){ v->virtio[i].mmio,
						 VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE,
						 v->virtio[i].irq.gsi, v->virtio[i].ops->device_id };
	rep->result = snapshot_save(&src, fds[0], fds[1], &res, rep->text, sizeof(rep->text));
	rep->a = res.state_bytes;
	rep->b = res.mem_bytes;
}

/* One request from the control channel; false once the channel is gone. */
static bool control(struct vmm *v)
{
	struct ctl_msg req, rep;
	const char *bad = NULL;
	int fds[CTL_MAX_FDS];
	unsigned nfds = 0;
	int r = ctl_recv(v->ctl_fd, &req, fds, &nfds, &bad);

	if (r == -EINTR || r == -EAGAIN)
		return true;
	if (r == -EBADMSG) {
		ctl_init(&rep, CTL_REPLY, 0, -EBADMSG, bad);
		ctl_send(v, &rep);
		return true;
	}
	if (r)
		return false;
	ctl_init(&rep, CTL_REPLY, req.id, 0, NULL);
	switch (nfds && req.type != CTL_SNAPSHOT ? 0 : req.type) {
	case 0:
		rep.result = -EINVAL;
		snprintf(rep.text, sizeof(rep.text), "this request carries no fds");
		break;
	case CTL_PAUSE:
		if (!v->paused) {
			r = vcpus_pause(v->vcpus, v->nvcpus, 5000);
			v->paused = r == 0;
			rep.result = r;
			if (r)
				snprintf(rep.text, sizeof(rep.text), "the vCPUs did not stop: %s",
					 strerror(-r));
		}
		break;
	case CTL_RESUME:
		if (v->paused)
			vcpus_resume(&v->env);
		v->paused = false;
		break;
	case CTL_STATUS:
		rep.a = v->paused ? CTL_STATE_PAUSED : CTL_STATE_RUNNING;
		rep.b = __atomic_load_n(&v->boot_us, __ATOMIC_RELAXED);
		break;
	case CTL_SNAPSHOT:
		ctl_snapshot(v, fds, nfds, &rep);
		break;
	default:
		rep.result = -EINVAL;
		snprintf(rep.text, sizeof(rep.text), "not a request");
		break;
	}
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	ctl_send(v, &rep);
	return true;
}

/* Disks: opened (or taken from an inherited fd) here, so a bad path is bad input. */
static int add_drives(struct vmm *v, char *why, size_t whylen)
{
	for (unsigned i = 0; i < v->cfg->ndrives; i++) {
		const struct drive_config *d = &v->cfg->drives[i];
		struct vblk_params p = { .read_only = d->read_only, .serial = d->serial };
		struct vblk *b = NULL;
		int fd = d->fd, ret;

		if (d->path[0]) {
			fd = open(d->path, (d->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
			if (fd < 0) {
				snprintf(why, whylen, "cannot open drive %s: %s", d->path, strerror(errno));
				return VMM_EXIT_USAGE;
			}
			v->drive_fd[i] = fd;
		} else if (fcntl(fd, F_GETFD) < 0) {
			snprintf(why, whylen, "drive fd %d is not open", fd);
			return VMM_EXIT_USAGE;
		}
		p.fd = fd;
		ret = vblk_create(&b, &p);
		if (ret) {
			snprintf(why, whylen, "drive %u (%s): %s", i, d->path[0] ? d->path : "fd",
				 strerror(-ret));
			return VMM_EXIT_USAGE;
		}
		ret = add_virtio(v, &vblk_ops, b);
		if (ret) {
			snprintf(why, whylen, "cannot attach drive %u: %s", i, strerror(-ret));
			return VMM_EXIT_ERROR;
		}
	}
	return 0;
}

static int add_vsock(struct vmm *v, char *why, size_t whylen)
{
	struct vsock_params p = { .guest_cid = v->cfg->vsock_cid, .uds_path = v->cfg->vsock_path };
	struct vsock *vs = NULL;
	int ret;

	if (!v->cfg->vsock_path[0])
		return 0;
	ret = vsock_create(&vs, &p);
	if (ret) {
		snprintf(why, whylen, "cannot listen on vsock socket %s: %s", v->cfg->vsock_path,
			 strerror(-ret));
		return VMM_EXIT_USAGE;
	}
	ret = add_virtio(v, &vsock_ops, vs);
	if (ret) {
		snprintf(why, whylen, "cannot attach the vsock device: %s", strerror(-ret));
		return VMM_EXIT_ERROR;
	}
	v->vsock = vs;
	v->vsock_mmio = v->virtio[v->nvirtio - 1].mmio;
	return 0;
}

#ifdef KILN_TEST_HOOKS
/* Test builds only (build/hooks/kiln-vmm, --test-hooks): a guest write to
 * TESTHOOK_PORT makes the vCPU thread do something its filter forbids, so
 * the tests can see the seccomp wall hold. Value 1: socket(AF_INET). */
#include <sys/socket.h>
#define TESTHOOK_PORT 0x4ff

static void testhook_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	(void)opaque;
	(void)off;
	if (is_write && len >= 1 && data[0] == 1) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		fprintf(stderr, "kiln-vmm: test hook: socket(AF_INET) was allowed (fd %d)\n", fd);
		if (fd >= 0)
			close(fd);
	}
}
#endif

/* The network device, when kiln-net gave us a socket (--net fd=N). The fd is
 * the caller's: vnet never closes it, so it is closed at teardown here. */
static int add_net(struct vmm *v, char *why, size_t whylen)
{
	struct vnet_params p = { .fd = v->cfg->net_fd };
	struct vnet *vn = NULL;
	int ret;

	if (v->cfg->net_fd < 0)
		return 0;
	memcpy(p.mac, v->cfg->net_mac, sizeof(p.mac));
	ret = vnet_create(&vn, &p);
	if (ret) {
		snprintf(why, whylen, "--net fd=%d: %s", v->cfg->net_fd,
			 ret == -EINVAL || ret == -ENOTSOCK ? "not a connected SOCK_SEQPACKET socket"
							     : strerror(-ret));
		return VMM_EXIT_USAGE;
	}
	ret = add_virtio(v, &vnet_ops, vn);
	if (ret) {
		snprintf(why, whylen, "cannot attach the network device: %s", strerror(-ret));
		return VMM_EXIT_ERROR;
	}
	v->net = vn;
	v->net_mmio = v->virtio[v->nvirtio - 1].mmio;
	return 0;
}

static int register_devices(struct vmm *v)
{
	uint64_t limit = v->cfg->console == CONSOLE_FILE ? CONSOLE_FILE_LIMIT : 0;
	int ret;

	v->serial_irq = (struct irq_line){ v->vm, SERIAL_COM1_IRQ, &v->irqs_held, false };
	ret = kvm_vm_irqfd(v->vm, SERIAL_COM1_IRQ);
	if (ret)
		return ret;
	v->serial = serial_create(v->console_fd, limit, irq_line_pulse, &v->serial_irq);
	if (!v->serial)
		return -ENOMEM;
	v->kbd = (struct i8042){ on_reset, v };
	v->power = (struct power){ on_poweroff, on_panic, v };
	v->timer = (struct boottimer){ .start_ns = v->start_ns, .marked = on_boot_mark, .ctx = v };

	ret = io_register(&v->pio, SERIAL_COM1_PORT, SERIAL_NPORTS, serial_io, v->serial);
	v->acpi_devs[v->n_acpi_devs++] = (struct acpi_dev){ ACPI_DEV_UART, SERIAL_COM1_PORT,
							    SERIAL_NPORTS, SERIAL_COM1_IRQ };
	if (!ret)
		ret = io_register(&v->pio, I8042_DATA_PORT, I8042_CMD_PORT - I8042_DATA_PORT + 1,
				  i8042_io, &v->kbd);
	if (!ret)
		ret = io_register(&v->pio, ACPI_SLEEP_CTL_PORT, 2, power_sleep_io, &v->power);
	if (!ret)
		ret = io_register(&v->pio, PVPANIC_PORT, 1, power_pvpanic_io, &v->power);
	if (!ret)
		ret = io_register(&v->pio, BOOTTIMER_PORT, 4, boottimer_io, &v->timer);
#ifdef KILN_TEST_HOOKS
	if (!ret && v->cfg->test_hooks)
		ret = io_register(&v->pio, TESTHOOK_PORT, 1, testhook_io, NULL);
#endif
	if (!ret) {
		struct vrng *rng = NULL;

		ret = vrng_create(&rng);
		if (!ret)
			ret = add_virtio(v, &vrng_ops, rng);
	}
	return ret;
}

/* Kernel and initrd into guest RAM. Failures here are bad input (exit 2). */
static int load_guest(struct vmm *v, char *why, size_t whylen)
{
	const struct vmm_config *c = v->cfg;
	struct boot_kernel *k = &v->kernel;
	const char *reason = NULL;
	int kfd = -1, ifd = -1, ret = -1;

	kfd = open(c->kernel, O_RDONLY | O_CLOEXEC);
	if (kfd < 0) {
		snprintf(why, whylen, "cannot open kernel %s: %s", c->kernel, strerror(errno));
		goto out;
	}
	if (boot_load_elf(v->vm->mem, kfd, k, &reason)) {
		snprintf(why, whylen, "kernel %s: %s", c->kernel, reason);
		goto out;
	}
	if (c->initrd[0]) {
		struct stat st;

		ifd = open(c->initrd, O_RDONLY | O_CLOEXEC);
		if (ifd < 0 || fstat(ifd, &st) < 0) {
			snprintf(why, whylen, "cannot open initrd %s: %s", c->initrd, strerror(errno));
			goto out;
		}
		if (!S_ISREG(st.st_mode) || st.st_size == 0) {
			snprintf(why, whylen, "initrd %s is not a non-empty regular file", c->initrd);
			goto out;
		}
		v->initrd_size = (uint64_t)st.st_size;
		if (boot_load_initrd(v->vm->mem, ifd, v->initrd_size, k, &v->initrd_gpa)) {
			snprintf(why, whylen,
				 "initrd %s (%llu MiB) does not fit in %llu MiB of guest RAM next to the kernel",
				 c->initrd, (unsigned long long)(v->initrd_size >> 20),
				 (unsigned long long)c->mem_mib);
			goto out;
		}
	}
	ret = 0;
out:
	if (kfd >= 0)
		close(kfd);
	if (ifd >= 0)
		close(ifd);
	return ret;
}

/* ACPI tables (once every device is known), start info, boot vCPU registers. */
static int setup_boot(struct vmm *v, char *why, size_t whylen)
{
	const struct vmm_config *c = v->cfg;
	uint64_t rsdp = 0;
	int ret;

	ret = acpi_build(v->vm->mem, c->cpus, v->acpi_devs, v->n_acpi_devs, &rsdp);
	if (ret) {
		snprintf(why, whylen, "cannot build ACPI tables: %s", strerror(-ret));
		return ret;
	}
	ret = boot_setup_pvh(v->vm->mem, c->cmdline, v->initrd_gpa, v->initrd_size, rsdp);
	if (ret) {
		snprintf(why, whylen, "kernel command line is too long");
		return ret;
	}
	ret = vcpu_setup_pvh(&v->vcpus[0], v->kernel.entry, (uint32_t)BOOT_START_INFO);
	if (ret)
		snprintf(why, whylen, "cannot set the boot vCPU's registers: %s", strerror(-ret));
	return ret;
}

/* --restore: what the flags describe, for the state file to match; the
 * devices in the order vmm_run() adds them (drives, vsock, net, rng). */
static void restore_want(const struct vmm_config *c, struct restore_want *w)
{
	memset(w, 0, sizeof(*w));
	w->cpus = c->cpus;
	w->mem_size = c->mem_mib << 20;
	for (unsigned i = 0; i < c->ndrives && w->ndevices < SNAP_MAX_DEVICES; i++)
		w->device_ids[w->ndevices++] = VIRTIO_ID_BLOCK;
	if (c->vsock_path[0] && w->ndevices < SNAP_MAX_DEVICES)
		w->device_ids[w->ndevices++] = VIRTIO_ID_VSOCK;
	if (c->net_fd >= 0 && w->ndevices < SNAP_MAX_DEVICES)
		w->device_ids[w->ndevices++] = VIRTIO_ID_NET;
	if (w->ndevices < SNAP_MAX_DEVICES)
		w->device_ids[w->ndevices++] = VIRTIO_ID_RNG;
}

/* Before anything of the VM exists: the snapshot read and checked. */
static int open_restore(struct vmm *v, char *why, size_t whylen)
{
	struct restore_want want;
	struct snap_cpu host;
	int ret;

	memset(&host, 0, sizeof(host));
	ret = restore_host_cpu(&host);
	if (ret) {
		snprintf(why, whylen, "cannot read this host's CPU from /dev/kvm: %s", strerror(-ret));
		return VMM_EXIT_ERROR;
	}
	restore_want(v->cfg, &want);
	ret = restore_open(&v->restore, v->cfg->restore_dir, &host, &want, why, whylen);
	return ret ? VMM_EXIT_USAGE : 0;
}

/* The VM-wide state, every device's, COM1's; the vCPUs restore themselves. */
static int restore_state(struct vmm *v, char *why, size_t whylen)
{
	int ret;

	/* Until every vCPU has set its LAPIC (vcpu_env.restored). */
	__atomic_store_n(&v->irqs_held, true, __ATOMIC_SEQ_CST);
	v->env.restored = irqs_release;
	ret = restore_vm(v->restore, v->vm, why, whylen);

	for (unsigned i = 0; i < v->nvirtio && !ret; i++)
		ret = restore_virtio(v->restore, i, v->virtio[i].mmio,
				     VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE, v->virtio[i].irq.gsi,
				     why, whylen);
	if (!ret)
		restore_serial(v->restore, v->serial);
	v->env.restore = restore_file(v->restore);
	v->env.restoring = v->nvcpus;
	return ret;
}

static void forward_stdin(struct vmm *v, bool *open_in)
{
	uint8_t buf[64];
	size_t room = serial_rx_room(v->serial);
	ssize_t n;

	if (room == 0)
		return;
	n = read(STDIN_FILENO, buf, room < sizeof(buf) ? room : sizeof(buf));
	if (n <= 0) {
		if (n == 0 || (errno != EINTR && errno != EAGAIN))
			*open_in = false;
		return;
	}
	serial_rx(v->serial, buf, (size_t)n);
}

static void main_loop(struct vmm *v)
{
	bool in_open = v->cfg->console == CONSOLE_STDIO, ctl_open = v->ctl_fd >= 0;

	while (!__atomic_load_n(&v->env.stopping, __ATOMIC_ACQUIRE)) {
		struct pollfd pfd[4] = {
			{ .fd = v->stop_efd, .events = POLLIN },
			{ .fd = v->sig_fd, .events = POLLIN },
			{ .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN },
			{ .fd = ctl_open ? v->ctl_fd : -1, .events = POLLIN },
		};
		int n = poll(pfd, 4, in_open && serial_rx_room(v->serial) == 0 ? 20 : -1);

		if (n < 0 && errno != EINTR)
			break;
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			char msg[64];

			if (read(v->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				snprintf(msg, sizeof(msg), "stopped by %s", strsignal((int)si.ssi_signo));
				vmm_stop(v, VMM_EXIT_SIGNAL_BASE + (int)si.ssi_signo, msg);
			}
		}
		if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR))
			forward_stdin(v, &in_open);
		/* The owner's hang-up ends the channel, not the VM. */
		if (pfd[3].revents & (POLLIN | POLLHUP | POLLERR))
			ctl_open = control(v);
	}
}

int vmm_run(const struct vmm_config *cfg, char *why, size_t whylen)
{
	struct vmm *v;
	const char *reason = NULL;
	uint64_t t, walls;
	int status = VMM_EXIT_ERROR;
	int ret;

	v = calloc(1, sizeof(*v));
	if (!v) {
		snprintf(why, whylen, "out of memory");
		return VMM_EXIT_ERROR;
	}
	v->cfg = cfg;
	v->start_ns = now_ns();
	v->console_fd = v->stop_efd = v->sig_fd = v->ctl_fd = -1;
	for (unsigned i = 0; i < CONFIG_MAX_DRIVES; i++)
		v->drive_fd[i] = -1;
	v->status = -1;
	pthread_mutex_init(&v->lock, NULL);
	if (vcpu_env_init(&v->env)) {
		snprintf(why, whylen, "cannot set up the vCPUs' pause lock");
		pthread_mutex_destroy(&v->lock);
		free(v);
		return VMM_EXIT_ERROR;
	}

	if (cfg->restore_dir[0]) {
		status = open_restore(v, why, whylen);
		if (status)
			goto out;
		status = VMM_EXIT_ERROR;
	}
	ret = kvm_vm_create(&v->vm, cfg->mem_mib << 20, v->restore ? restore_mem_fd(v->restore) : -1,
			    &reason);
	if (ret) {
		snprintf(why, whylen, "cannot create the VM: %s: %s", reason, strerror(-ret));
		goto out;
	}
	v->env.vm = v->vm;
	v->env.pio = &v->pio;
	v->env.mmio = &v->mmio;
	v->env.stop = vmm_stop;
	v->env.ctx = v;
	for (unsigned i = 0; i < cfg->cpus; i++) {
		ret = vcpu_create(&v->vcpus[i], &v->env, i, cfg->cpus);
		v->nvcpus = i + 1;
		if (ret) {
			snprintf(why, whylen, "cannot create vCPU %u: %s", i, strerror(-ret));
			goto out;
		}
	}
	status = VMM_EXIT_USAGE;
	if (!v->restore && load_guest(v, why, whylen))
		goto out;
	status = VMM_EXIT_ERROR;
	if (open_console(v, why, whylen))
		goto out;
	status = check_ready_fd(v, why, whylen);
	if (!status)
		status = check_control_fd(v, why, whylen);
	if (!status)
		status = add_drives(v, why, whylen);
	if (!status)
		status = add_vsock(v, why, whylen);
	if (!status)
		status = add_net(v, why, whylen);
	if (status)
		goto out;
	status = VMM_EXIT_ERROR;
	ret = register_devices(v);
	if (ret) {
		snprintf(why, whylen, "cannot set up devices: %s", strerror(-ret));
		goto out;
	}
	if (v->restore) {
		status = VMM_EXIT_USAGE;
		if (restore_state(v, why, whylen))
			goto out;
		status = VMM_EXIT_ERROR;
	} else if (setup_boot(v, why, whylen)) {
		goto out;
	}
	v->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->stop_efd < 0 || setup_signals(v)) {
		snprintf(why, whylen, "cannot set up signal handling: %s", strerror(errno));
		goto out;
	}
	/* Everything is open: close the jail, then start the threads, each of
	 * which filters itself before it touches the guest. */
	t = now_ns();
	if (!cfg->no_jail && jail_finish(cfg, why, whylen))
		goto out;
	if (v->vsock) {
		ret = vsock_start(v->vsock, v->vsock_mmio, !cfg->no_seccomp);
		if (ret) {
			snprintf(why, whylen, "cannot start the vsock thread: %s", strerror(-ret));
			goto out;
		}
	}
	if (v->net) {
		ret = vnet_start(v->net, v->net_mmio, !cfg->no_seccomp);
		if (ret) {
			snprintf(why, whylen, "cannot start the network thread: %s", strerror(-ret));
			goto out;
		}
	}
	v->env.seccomp = !cfg->no_seccomp;
	walls = jail_begin_ns() + (now_ns() - t);
	for (unsigned i = 0; i < v->nvcpus; i++) {
		ret = vcpu_start(&v->vcpus[i]);
		if (ret) {
			vmm_stop(v, VMM_EXIT_ERROR, "cannot start a vCPU thread");
			break;
		}
	}
	/* Last: threads inherit the filter of the thread that creates them. */
	t = now_ns();
	if (!cfg->no_seccomp && seccomp_apply(SECCOMP_ROLE_MAIN))
		vmm_stop(v, VMM_EXIT_ERROR, "cannot install the seccomp filter");
	__atomic_store_n(&v->walls_ns, walls + (now_ns() - t), __ATOMIC_RELAXED);
	/* A restored guest marked its boot long ago: it is ready once its
	 * vCPUs run, every wall up. */
	if (v->restore)
		on_boot_mark(v, now_ns() - v->start_ns);
	main_loop(v);

	pthread_mutex_lock(&v->lock);
	status = v->status >= 0 ? v->status : VMM_EXIT_ERROR;
	snprintf(why, whylen, "%s", v->status >= 0 ? v->why : "main loop failed");
	pthread_mutex_unlock(&v->lock);
out:
	__atomic_store_n(&v->env.stopping, 1, __ATOMIC_RELEASE);
	vcpus_resume(&v->env);
	for (unsigned i = 0; i < v->nvcpus; i++)
		vcpu_kick(&v->vcpus[i]);
	for (unsigned i = 0; i < v->nvcpus; i++)
		vcpu_destroy(&v->vcpus[i]);
	if (v->ctl_fd >= 0) {
		struct ctl_msg m;

		ctl_init(&m, CTL_EV_EXIT, 0, status, why);
		ctl_send(v, &m);
	}
	free_virtio(v);
	for (unsigned i = 0; i < CONFIG_MAX_DRIVES; i++)
		if (v->drive_fd[i] >= 0)
			close(v->drive_fd[i]);
	serial_free(v->serial);
	if (v->console_fd >= 0 && v->cfg->console == CONSOLE_FILE)
		close(v->console_fd);
	if (v->stop_efd >= 0)
		close(v->stop_efd);
	if (v->sig_fd >= 0)
		close(v->sig_fd);
	kvm_vm_free(v->vm);
	restore_free(v->restore);
	vcpu_env_destroy(&v->env);
	pthread_mutex_destroy(&v->lock);
	free(v);
	return status;
}
