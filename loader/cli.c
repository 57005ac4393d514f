#include "loader_cli.h"

#include <stdio.h>

int loader_cli_inspect(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "hubfs inspect: not implemented yet\n");
    return 2;
}

int loader_cli_load(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "hubfs load: not implemented yet\n");
    return 2;
}
