/* registry.c -- placeholder while the registry is written. */
#include "config.h"
#include "internal.h"
