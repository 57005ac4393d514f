/* loader_cli.h — the `hubfs inspect` and `hubfs load` subcommands. */
#ifndef HUBFS_LOADER_CLI_H
#define HUBFS_LOADER_CLI_H

int loader_cli_inspect(int argc, char **argv);
int loader_cli_load(int argc, char **argv);

#endif
