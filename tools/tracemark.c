#include "cli.h"
int main(int argc, char **argv) { return argc > 1 ? cmd_strip(argc, argv) : 0; }
