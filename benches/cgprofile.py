#!/usr/bin/env python3
"""Where the instructions per packet go, per function or per source line.

Takes two callgrind outputs of the same icount mode made with `--dump-instr=yes` at two
batch counts (as callgrind.sh does), subtracts them instruction by instruction, and
maps the difference onto the binary's disassembly, so start-up cancels as in the
headline figure. Usage:

  valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=a icount MODE 200
  valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=b icount MODE 1200
  benches/cgprofile.py a b BINARY PACKETS [--lines SYMBOL] [--asm SYMBOL]

PACKETS is the packet count between the two runs ((1200 - 200) * 32 = 32000).
Without options it prints each function's own (self) instructions per packet; with
--lines, the source lines of the functions whose name contains SYMBOL (inlined code
included, attributed to its own file and line); with --asm, their instructions.
"""
import collections
import re
import signal
import subprocess
import sys


def load(path):
    """Instruction address -> Ir of a callgrind file (call cost lines skipped)."""
    ir = collections.Counter()
    last = 0
    skip = False
    with open(path) as f:
        for line in f:
            if line.startswith("calls="):
                skip = True
                continue
            c = line[:1]
            if not (c.isdigit() or c in "+-*"):
                continue
            parts = line.split()
            a = parts[0]
            if a.startswith("0x"):
                addr = int(a, 16)
            elif a[0] == "+":
                addr = last + int(a[1:], 0)
            elif a[0] == "-":
                addr = last - int(a[1:], 0)
            elif a == "*":
                addr = last
            else:
                addr = int(a, 0)
            last = addr
            if skip:
                skip = False
                continue
            if len(parts) >= 3:
                ir[addr] += int(parts[2])
    return ir


def main():
    # Quiet when piped into `head`.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = sys.argv[1:]
    if len(args) < 4:
        sys.exit(__doc__)
    a, b = load(args[0]), load(args[1])
    binary, packets = args[2], float(args[3])
    mode, symbol = (args[4], args[5]) if len(args) >= 6 else (None, None)
    dis = subprocess.run(["objdump", "-d", "-C", "-l", "-w", "--no-show-raw-insn", binary],
                         capture_output=True, text=True, check=True).stdout
    per_fn = collections.Counter()
    per_line = collections.Counter()
    fn = None
    src = "?"
    on = False
    for line in dis.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            fn = m.group(2)
            on = symbol is not None and symbol in fn
            if on and mode == "--asm":
                print("\n==", fn[:140])
            continue
        m = re.match(r"^(/\S+):(\d+)", line)
        if m:
            src = "%s:%s" % (m.group(1).split("/src/")[-1], m.group(2))
            continue
        m = re.match(r"^\s*([0-9a-f]+):\s*(.*)$", line)
        if not m or fn is None:
            continue
        addr = int(m.group(1), 16)
        v = (b[addr] - a[addr]) / packets
        per_fn[fn] += v
        if on:
            per_line[src] += v
            if mode == "--asm" and v >= 0.05:
                print("%7.2f  %x  %-60s %s" % (v, addr, m.group(2)[:60], src))
    if mode == "--lines":
        for k, v in per_line.most_common(60):
            if v >= 0.3:
                print("%7.1f  %s" % (v, k))
        print("total %.1f" % sum(per_line.values()))
    elif mode is None:
        for k, v in per_fn.most_common(30):
            if v >= 0.3:
                print("%7.1f  %s" % (v, k[:130]))
        total = sum(b.values()) - sum(a.values())
        print("in the binary %.1f, in all %.1f" % (sum(per_fn.values()), total / packets))


if __name__ == "__main__":
    main()
