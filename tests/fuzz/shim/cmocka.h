/*
 * Just enough of cmocka for tests/unit/virtio_fake.h inside a fuzz harness:
 * its assertions become property checks that abort (tests/fuzz/fuzz.h).
 * Put first on the include path of the harnesses that use the fake driver.
 */
#ifndef KILN_TESTS_FUZZ_SHIM_CMOCKA_H
#define KILN_TESTS_FUZZ_SHIM_CMOCKA_H

#include "fuzz.h"

#define assert_true(c)		FZ_CHECK((c), "assert_true")
#define assert_non_null(p)	FZ_CHECK((p) != NULL, "assert_non_null")
#define assert_int_equal(a, b)	FZ_CHECK((long long)(a) == (long long)(b), "%lld != %lld", \
					 (long long)(a), (long long)(b))

#endif
