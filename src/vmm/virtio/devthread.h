/*
 * The event thread of a virtio device that works off the vCPU threads
 * (vsock, net): started with every signal blocked, filtered by its own
 * seccomp role before it touches the guest (the start waits for that result:
 * fail closed), stopped by a flag plus the device's own wake-up, joined.
 */
#ifndef KILN_VMM_VIRTIO_DEVTHREAD_H
#define KILN_VMM_VIRTIO_DEVTHREAD_H

#include <pthread.h>
#include <stdbool.h>

#include "vmm/seccomp.h"

struct devthread {
	pthread_t thread;
	bool started;
	int stop;                 /* atomic */
	pthread_mutex_t lock;     /* the thread reports its filter's result */
	pthread_cond_t cond;
	int ret;                  /* 1 until reported, then 0 or -errno */
	bool filter;
	enum seccomp_role role;
	void (*loop)(void *arg);  /* runs until devthread_stopping() */
	void *arg;
};

void devthread_init(struct devthread *t);
void devthread_destroy(struct devthread *t);
/* Run loop(arg) on a new thread; with filter, the thread first installs
 * role's seccomp filter and this returns that result (0 or -errno). */
int devthread_start(struct devthread *t, void (*loop)(void *arg), void *arg, bool filter,
		    enum seccomp_role role);
/* For the loop: has a stop been asked? */
bool devthread_stopping(const struct devthread *t);
/* Ask the loop to stop, wake it with wake(arg), join. Safe if not started. */
void devthread_stop(struct devthread *t, void (*wake)(void *arg), void *arg);

#endif
