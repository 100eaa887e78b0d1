#ifndef TM_CLI_H
#define TM_CLI_H
int cmd_strip(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
#endif
