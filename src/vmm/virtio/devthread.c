#include "vmm/virtio/devthread.h"

#include <errno.h>
#include <signal.h>

void devthread_init(struct devthread *t)
{
	t->started = false;
	t->stop = 0;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
}

void devthread_destroy(struct devthread *t)
{
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
}

static void *devthread_main(void *arg)
{
	struct devthread *t = arg;
	int ret = t->filter ? seccomp_apply(t->role) : 0;

	pthread_mutex_lock(&t->lock);
	t->ret = ret;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	if (!ret)
		t->loop(t->arg);
	return NULL;
}

int devthread_start(struct devthread *t, void (*loop)(void *arg), void *arg, bool filter,
		    enum seccomp_role role)
{
	sigset_t all, old;
	int ret;

	if (t->started)
		return -EBUSY;
	t->loop = loop;
	t->arg = arg;
	t->filter = filter;
	t->role = role;
	t->ret = 1;
	__atomic_store_n(&t->stop, 0, __ATOMIC_RELEASE);
	/* Signals are for the vCPU and main threads, never this one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&t->thread, NULL, devthread_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return ret;
	/* Fail closed: nothing of the guest's moves before the thread is filtered. */
	pthread_mutex_lock(&t->lock);
	while (t->ret == 1)
		pthread_cond_wait(&t->cond, &t->lock);
	ret = t->ret;
	pthread_mutex_unlock(&t->lock);
	if (ret)
		pthread_join(t->thread, NULL);
	t->started = ret == 0;
	return ret;
}

bool devthread_stopping(const struct devthread *t)
{
	return __atomic_load_n(&t->stop, __ATOMIC_ACQUIRE);
}

void devthread_stop(struct devthread *t, void (*wake)(void *arg), void *arg)
{
	if (!t->started)
		return;
	__atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
	wake(arg);
	pthread_join(t->thread, NULL);
	t->started = false;
}
