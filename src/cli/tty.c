/*
 * The local terminal for -t (see tty.h). One saved mode per process: kiln
 * drives one terminal at a time.
 */
#include "cli/tty.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

static struct termios g_saved;
static volatile sig_atomic_t g_raw;
static int g_winch[2] = { -1, -1 };

void tty_restore(void)
{
	if (!g_raw)
		return;
	/* TCSANOW: never wait for output a stuck reader would never drain. */
	tcsetattr(STDIN_FILENO, TCSANOW, &g_saved);
	g_raw = 0;
}

int tty_raw(void)
{
	static bool registered;
	struct termios t;
	int ret = 0;

	if (g_raw || !isatty(STDIN_FILENO))
		goto out;
	if (tcgetattr(STDIN_FILENO, &g_saved)) {
		ret = -errno;
		goto out;
	}
	if (!registered && atexit(tty_restore) == 0)
		registered = true;
	t = g_saved;
	cfmakeraw(&t); /* no echo, no signals from keys, no output processing: the guest's pty does it */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	g_raw = 1;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t)) {
		ret = -errno;
		g_raw = 0;
	}
out:
	return ret;
}

static bool size_of(int fd, unsigned *rows, unsigned *cols)
{
	struct winsize ws;

	if (ioctl(fd, TIOCGWINSZ, &ws) || !ws.ws_row || !ws.ws_col)
		return false;
	*rows = ws.ws_row < TTY_DIM_MAX ? ws.ws_row : TTY_DIM_MAX;
	*cols = ws.ws_col < TTY_DIM_MAX ? ws.ws_col : TTY_DIM_MAX;
	return true;
}

void tty_size(unsigned *rows, unsigned *cols)
{
	if (!size_of(STDIN_FILENO, rows, cols) && !size_of(STDOUT_FILENO, rows, cols)) {
		*rows = 24;
		*cols = 80;
	}
}

static void on_winch(int sig)
{
	int saved = errno;
	char c = 1;

	if (write(g_winch[1], &c, 1) < 0) {
		/* full: a wake-up is pending already */
	}
	errno = saved;
}

int tty_winch_fd(void)
{
	struct sigaction sa;

	if (g_winch[0] < 0 && pipe2(g_winch, O_CLOEXEC | O_NONBLOCK))
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_winch;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGWINCH, &sa, NULL))
		return -1;
	return g_winch[0];
}

bool tty_winch_take(void)
{
	char buf[64];
	bool got = false;

	while (g_winch[0] >= 0 && read(g_winch[0], buf, sizeof(buf)) > 0)
		got = true;
	return got;
}
