/* key.c -- placeholder while keys are written. */
#include "config.h"
#include "internal.h"
