#!/bin/sh
# redis-server without libfaketime: under its preload redis-server misbehaves, and
# the wall clock it keeps is not what tests move (they inject heed's clock).
unset LD_PRELOAD FAKETIME
exec "${HEED_REAL_REDIS_SERVER:-redis-server}" "$@"
