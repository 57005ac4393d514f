/* `hubfs load` linked against tests/loader/fake_cudart.c instead of the CUDA runtime. */
#include "loader_cli.h"

int main(int argc, char **argv)
{
    return loader_cli_load(argc, argv, NULL);
}
