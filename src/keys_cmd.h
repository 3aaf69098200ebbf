/*
 * keys_cmd.h — `authd keys ...`: local operator commands on the key set
 * of --key-dir (keydir.h).
 */
#ifndef AUTHD_KEYS_CMD_H
#define AUTHD_KEYS_CMD_H

/* authd_keys_command runs `authd keys SUBCOMMAND ...`; argv[0] is "keys".
 * Returns the process exit status: 0 done, 1 failed, 2 usage. */
int authd_keys_command(int argc, char **argv);

#endif
