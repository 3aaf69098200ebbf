/*
 * check_config.h — `authd check-config`: validate the configuration a run
 * would use without serving, and print it with each value's source.
 */
#ifndef AUTHD_CHECK_CONFIG_H
#define AUTHD_CHECK_CONFIG_H

/* authd_check_config runs `authd check-config [OPTIONS]`; argv[0] is
 * "check-config", the rest are authd's own options. Prints the effective
 * configuration on stdout and each problem on stderr. Returns the process
 * exit status: 0 valid, 1 not. */
int authd_check_config(int argc, char **argv);

#endif
