#include "fs.h"

#include <stdio.h>

int fs_mount_command(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "hubfs mount: not implemented yet\n");
    return 2;
}
