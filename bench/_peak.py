"""The child wrapper that the memory benches run a command line (or ``-c CODE``) in: it prints
the child's own resident-set high-water mark (``VmHWM``) at exit."""

#: Runs a command line in a child and prints the child's own resident-set high-water mark
#: (``VmHWM``) at exit. ``ru_maxrss`` of a child is no good here: Linux carries the forked copy
#: of the parent's memory into it across ``exec``.
PEAK_WRAPPER = """
import runpy, sys
sys.argv = ["ww-callbacks", *sys.argv[1:]]
code = 0
try:
    if sys.argv[1] == "-c":
        exec(sys.argv[2])
    else:
        runpy.run_module("ww_callbacks", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
with open("/proc/self/status") as fh:
    hwm = [int(line.split()[1]) for line in fh if line.startswith("VmHWM:")][0]
print("VmHWM_KIB", hwm, file=sys.stderr)
sys.exit(code)
"""
