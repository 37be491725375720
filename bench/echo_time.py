#!/usr/bin/env python3
"""echo_time.py LOG FIFO -- STRATA ARGS...: start `strata ARGS` (a run with
--console) with FIFO (or, for "-", a pipe) as the guest's serial input,
type a line every 10 ms until the guest echoes it on its console (LOG, the
instance's .console.log), and print the seconds from the start to the
echo. The run goes on in the background; stop it with strata stop. A FIFO
must be held open by a writer (e.g. `sleep 1d >FIFO &`) for later input."""
import os, subprocess, sys, time

log, fifo, args = sys.argv[1], sys.argv[2], sys.argv[4:]
t0 = time.monotonic()
p = subprocess.Popen(args, stdin=subprocess.PIPE if fifo == "-" else open(fifo, "rb"),
                     stdout=subprocess.DEVNULL, stderr=open(os.devnull, "w"),
                     start_new_session=True)
if fifo != "-":
    p.stdin = open(fifo, "wb")
deadline = t0 + 300
while time.monotonic() < deadline:
    try:
        p.stdin.write(b"ping\n")
        p.stdin.flush()
    except BrokenPipeError:
        sys.exit("the run ended before the guest echoed")
    try:
        with open(log, "rb") as f:
            if b"ECHO ping" in f.read():
                print("%.3f" % (time.monotonic() - t0))
                sys.exit(0)
    except FileNotFoundError:
        pass
    time.sleep(0.01)
sys.exit("no echo in 300 s")
