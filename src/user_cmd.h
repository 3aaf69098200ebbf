/*
 * user_cmd.h — `authd user ...`: local operator commands on the store.
 */
#ifndef AUTHD_USER_CMD_H
#define AUTHD_USER_CMD_H

/* authd_user_command runs `authd user SUBCOMMAND ...`; argv[0] is "user".
 * Returns the process exit status: 0 done, 1 the store failed, 2 usage. */
int authd_user_command(int argc, char **argv);

#endif
