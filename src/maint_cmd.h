/*
 * maint_cmd.h — `authd backup` and `authd calibrate`: the operator's
 * maintenance commands (README "Backup and restore", "Calibrating argon2id").
 */
#ifndef AUTHD_MAINT_CMD_H
#define AUTHD_MAINT_CMD_H

/* authd_backup_command runs `authd backup DIR [--include-keys] [flags]`;
 * argv[0] is "backup". Returns the exit status: 0 the backup is complete in
 * DIR, 1 refused or failed (nothing is left at DIR), 2 usage. */
int authd_backup_command(int argc, char **argv);

/* authd_calibrate_command runs `authd calibrate [--target-ms N]
 * [--max-memory-kib M]`; argv[0] is "calibrate". Returns 0 (parameters
 * printed), 1 a hash failed, 2 usage. */
int authd_calibrate_command(int argc, char **argv);

#endif
