"""Shared runner of the offline-e5 example commands (``e5_attention.py``, ``e5_ratio.py``, ``e5_paper_claim.py``).

Each example is a list of *parts*: one ``mlret experiment`` command each, sized to finish within 30 minutes on
2 CPU cores. Parts of one question share one output folder, so the cell cache joins them: every part writes
the report of all finished cells so far, and the last one the complete report. Parts can run in any order,
resume when interrupted, and skip cells another part already finished.

    python examples/e5_<question>.py --list                  # the parts, their commands and minutes
    python examples/e5_<question>.py --part NAME [--part NAME ...] [--model offline-e5] [--out mlret-out/e5]
    python examples/e5_<question>.py --all                   # every part, one after the other
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Part:
    name: str
    folder: str  # output subfolder, shared by the parts of one question
    args: tuple[str, ...]  # `mlret experiment ...` arguments without --model/--models and --out
    minutes: str  # wall time on 2 CPU cores, measured and rounded up (see the example's docstring)
    model_flag: str = "--model"  # attention: --model MODEL; ratio: --models with MODEL substituted


def command(part: Part, model: str, out: str) -> list[str]:
    args = [a.replace("{model}", model) for a in part.args]
    if part.model_flag == "--model":
        args = [*args, "--model", model]
    return ["experiment", *args, "--out", os.path.join(out, part.folder)]


def run_parts(parts: list[Part], description: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--part", action="append", default=[], choices=[p.name for p in parts], help="part(s) to run")
    parser.add_argument("--all", action="store_true", help="run every part, one after the other")
    parser.add_argument("--list", action="store_true", help="print the parts and their commands")
    parser.add_argument("--model", default="offline-e5", help="the encoder (default offline-e5)")
    parser.add_argument("--out", default="mlret-out/e5", help="output root; each question has its own subfolder")
    args = parser.parse_args(argv)
    if args.list or not (args.part or args.all):
        for p in parts:
            print(f"{p.name:28s} ~{p.minutes} min  mlret {shlex.join(command(p, args.model, args.out))}")
        return 0 if args.list else 2
    from mlret_plugin.cli.main import main

    by_name = {p.name: p for p in parts}
    chosen = parts if args.all else [by_name[name] for name in dict.fromkeys(args.part)]  # in the order given
    for part in chosen:
        start = time.perf_counter()
        code = main(command(part, args.model, args.out))
        seconds = time.perf_counter() - start
        if code:  # the parts after it are not run: a chain stops at its first failure, and says so
            print(f"part {part.name}: FAILED (exit {code}); not run: {[p.name for p in chosen[chosen.index(part) + 1:]]}",
                  file=sys.stderr)
            return code
        print(f"part {part.name}: {seconds:.0f} s wall ({seconds / 60:.1f} min; listed ~{part.minutes} min), "
              f"report in {os.path.join(args.out, part.folder, 'report.md')}", file=sys.stderr)
    return 0
