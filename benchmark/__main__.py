"""`python -m benchmark`. `kill -USR1 PID` prints the stack of every thread of a command that
seems stuck to its standard error, and the command goes on."""

import faulthandler
import signal

from benchmark.cli import main

faulthandler.register(signal.SIGUSR1, all_threads=True)
raise SystemExit(main())
