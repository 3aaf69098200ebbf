/*
 * fuzz.h — what every libFuzzer harness in fuzz/ shares: the entry points
 * libFuzzer calls (declared here for -Wmissing-prototypes) and FUZZ_CHECK,
 * which turns a broken property into a crash libFuzzer records as a finding.
 *
 * Each harness is built with clang -fsanitize=fuzzer,address,undefined
 * (cmake -DAUTHD_FUZZ=ON, see scripts/fuzz.sh); the seed corpora live in
 * fuzz/corpus/<harness>/.
 */
#ifndef AUTHD_FUZZ_H
#define AUTHD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK aborts with the failed condition when cond is false: abort()
 * is what libFuzzer catches, saves as crash-<sha1> and reports. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
