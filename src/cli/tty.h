/*
 * The local terminal for `-t` (kiln run, kiln exec): raw mode while the
 * guest's terminal is in charge, put back on every way out; its size for the
 * guest; SIGWINCH as a pipe to poll.
 */
#ifndef KILN_CLI_TTY_H
#define KILN_CLI_TTY_H

#include <stdbool.h>

#define TTY_DIM_MAX 4096u /* the agent protocol's bound on rows and columns */

/* Raw mode on stdin when it is a terminal (else nothing): 0 or -errno. The
 * old mode comes back with tty_restore, which also runs at exit. */
int tty_raw(void);
/* Idempotent; async-signal-safe. */
void tty_restore(void);
/* The size of stdin's terminal (or stdout's), clamped to 1..TTY_DIM_MAX; 24 x 80
 * when neither is a terminal or it reports no size. */
void tty_size(unsigned *rows, unsigned *cols);
/* Catches SIGWINCH from here on: the fd to poll, or -1. */
int tty_winch_fd(void);
/* True when SIGWINCH came since the last call (drains the pipe). */
bool tty_winch_take(void);

#endif
