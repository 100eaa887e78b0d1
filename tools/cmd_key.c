#include "cli.h"
int cmd_keygen(int argc, char **argv) { (void)argc; (void)argv; return CLI_ERR; }
