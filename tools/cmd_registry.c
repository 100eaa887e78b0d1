#include "cli.h"
int cmd_registry(int argc, char **argv) { (void)argc; (void)argv; return CLI_ERR; }
