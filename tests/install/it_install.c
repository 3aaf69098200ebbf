/*
 * it_install.c — the programs built against the installed client library
 * (check-install.sh: pkg-config and find_package, shared and static) run
 * against the real authd over TLS; the installed binaries answer --version.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

static const char *const consumers[] = {
    "consumer_pc_shared",
    "consumer_pc_static",
    "consumer_cmake_shared",
    "consumer_cmake_static",
};

/* Each consumer registers its own user, logs in and verifies the token:
 * exit 0 and "consumer: ok <user id>". */
static void install_consumers_talk_to_authd(void **state)
{
    it_server *s = it_start(NULL);

    for (size_t i = 0; i < sizeof consumers / sizeof consumers[0]; i++) {
        char bin[512];
        char user[64];
        it_proc p;

        snprintf(bin, sizeof bin, "%s/bin/%s", INSTALL_TREE, consumers[i]);
        snprintf(user, sizeof user, "consumer%zu", i);
        const char *argv[] = { bin, s->url, IT_CA, user, NULL };
        it_run(argv, NULL, NULL, &p);
        if (p.status != 0 || strstr(p.out, "consumer: ok ") == NULL)
            fail_msg("%s: exit %d\nstdout: %s\nstderr: %s", consumers[i], p.status, p.out, p.err);
        it_proc_free(&p);
    }
    it_finish(s);
    (void)state;
}

/* The installed authd, authctl and authbench answer --version with their
 * name and version (help2man made the man pages from it). */
static void install_binaries_answer_version(void **state)
{
    static const char *const progs[] = { "authd", "authctl", "authbench" };

    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char bin[512];
        char want[64];
        it_proc p;

        snprintf(bin, sizeof bin, "%s/prefix/bin/%s", INSTALL_TREE, progs[i]);
        snprintf(want, sizeof want, "%s 0.", progs[i]);
        const char *argv[] = { bin, "--version", NULL };
        it_run(argv, NULL, NULL, &p);
        assert_int_equal(p.status, 0);
        if (strncmp(p.out, want, strlen(want)) != 0)
            fail_msg("%s --version printed '%s'", progs[i], p.out);
        it_proc_free(&p);
    }
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(install_consumers_talk_to_authd, it_teardown),
        cmocka_unit_test_teardown(install_binaries_answer_version, it_teardown),
    };
    return cmocka_run_group_tests_name("install", tests, NULL, NULL);
}
