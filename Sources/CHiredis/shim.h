#ifndef SWITCHBOARD_CHIREDIS_SHIM_H
#define SWITCHBOARD_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>
#include <fcntl.h>
#endif
