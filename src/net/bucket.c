/* Token bucket (see bucket.h). */
#include "net/bucket.h"

#define BUCKET_MIN_BURST 4096u

void bucket_init(struct bucket *b, uint64_t rate, uint64_t now_ns)
{
	b->rate = rate;
	/* A fifth of a second's worth: smooth enough, and big reads stay possible. */
	b->burst = rate / 5 > BUCKET_MIN_BURST ? rate / 5 : BUCKET_MIN_BURST;
	b->tokens = b->burst;
	b->last_ns = now_ns;
}

uint64_t bucket_avail(struct bucket *b, uint64_t now_ns)
{
	uint64_t dt, add;

	if (!b->rate)
		return UINT64_MAX;
	if (now_ns > b->last_ns) {
		dt = now_ns - b->last_ns;
		/* dt capped, rate < 2^40: the product fits 128 bits easily. */
		if (dt > 10000000000ull)
			dt = 10000000000ull;
		add = (uint64_t)((unsigned __int128)b->rate * dt / 1000000000u);
		if (add >= b->burst - b->tokens) {
			b->tokens = b->burst;
			b->last_ns = now_ns;
		} else if (add) {
			b->tokens += add;
			/* Only the time those tokens took: the rest of dt counts towards
			 * the next one (rounded up: never early). */
			b->last_ns += (uint64_t)(((unsigned __int128)add * 1000000000u + b->rate - 1) /
						 b->rate);
		}
	}
	return b->tokens;
}

void bucket_take(struct bucket *b, uint64_t n)
{
	if (!b->rate)
		return;
	b->tokens = n > b->tokens ? 0 : b->tokens - n;
}

int bucket_wait_ms(struct bucket *b, uint64_t now_ns)
{
	uint64_t ms;

	if (bucket_avail(b, now_ns))
		return 0;
	/* Wait for a useful amount rather than single bytes. */
	ms = (b->burst < 2048 ? b->burst : 2048) * 1000 / b->rate + 1;
	return ms > 1000 ? 1000 : (int)ms;
}

int bucket_wait_for_ms(struct bucket *b, uint64_t n, uint64_t now_ns)
{
	uint64_t have = bucket_avail(b, now_ns), ms;

	if (!b->rate || have >= n)
		return 0;
	if (n > b->burst)
		n = b->burst;
	ms = (n - (have < n ? have : n)) * 1000 / b->rate + 1;
	return ms > 1000 ? 1000 : (int)ms;
}
