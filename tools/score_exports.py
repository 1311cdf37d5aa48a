#!/usr/bin/env python
"""Score exported one-step students beside the teacher on a v2 held-out world, the way `make demo` scores its rows.

    python tools/score_exports.py --world runs/toy/world-eval --students models/toy-sfv-v2 runs/toy/full-d2-s0 \\
        [--student-steps 1,2] [--teacher-steps 25,8,4] [--samples 3] [--blocks 1] [--out rows.json]

Each student (an exported folder, or a `sfv distill` run folder: its export/) samples at every --student-steps on its
own training levels; the teacher (CFG 3) at every --teacher-steps. Every method draws --samples videos per
held-out conditioning, video (sample s, conditioning i) from a generator seeded 1000·s + i, exactly as the demo's
evaluation does, and is scored with the toy metric v2 (`score_futures`) against every possible future and the
world's true draws. With the demo's held-out world and the defaults, block 0 is the demo's own score of that model.

--blocks B draws B·samples videos per conditioning and scores each block of `samples` on its own (block b: samples
b·S … (b+1)·S − 1): the spread between blocks is what the evaluation's own sampling noise moves a score by, beside
the spread between training seeds. A larger held-out world (more conditionings) is the other way to shrink it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python tools/score_exports.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True, help="a v2 held-out world folder (python -m sfv.toy.world --preset v2 --samples R)")
    p.add_argument("--students", nargs="*", default=[], help="exported student folders or sfv distill run folders")
    p.add_argument("--student-steps", default="1", help="comma-separated step counts for every student (e.g. 1,2)")
    p.add_argument("--teacher", default="models/toy-svd-v2", help="the teacher's pipeline folder")
    p.add_argument("--teacher-steps", default="25,8,4", help="comma-separated teacher step counts ('' = none)")
    p.add_argument("--cfg", type=float, default=3.0, help="the teacher's guidance scale (the demo's: 3)")
    p.add_argument("--samples", type=int, default=3, help="videos per conditioning in one score (the demo's: 3)")
    p.add_argument("--blocks", type=int, default=1, help="independent blocks of --samples videos, each scored alone")
    p.add_argument("--out", help="also write the rows as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sfv.console import ArgParser, run_command

    return run_command(build_parser(ArgParser), score_exports, argv)


def _steps(text: str, flag: str) -> list[int]:
    from sfv.errors import InputError

    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{flag} '{text}': give comma-separated whole step counts, e.g. 1,2") from None
    if any(s < 1 for s in steps):
        raise InputError(f"{flag} '{text}': every step count must be ≥ 1")
    return steps


def _student_folder(path: str) -> Path:
    from sfv.errors import InputError

    folder = Path(path)
    if (folder / "export" / "model_index.json").is_file():
        return folder / "export"
    if not (folder / "model_index.json").is_file():
        raise InputError(f"student '{path}' has no model_index.json (nor export/model_index.json): give an exported "
                         "folder (sfv export) or the folder of a finished sfv distill run")
    return folder


def methods_of(args) -> list[dict]:
    """The rows to score: the teacher at each step count, then each student at each step count."""
    from sfv.errors import InputError

    methods = [{"name": f"teacher-{k}", "model": args.teacher, "steps": k, "cfg": args.cfg, "unet_evals": 2 * k}
               for k in _steps(args.teacher_steps, "--teacher-steps")]
    if methods and not (Path(args.teacher) / "model_index.json").is_file():
        raise InputError(f"--teacher '{args.teacher}' has no model_index.json: give the teacher's pipeline folder")
    names = set()
    for path in args.students:
        folder = _student_folder(path)
        name = Path(path).name
        if name in names:
            raise InputError(f"two students are named '{name}': give folders with different names")
        names.add(name)
        methods += [{"name": f"{name}-{k}", "model": str(folder), "steps": k, "cfg": 1.0, "unet_evals": k, "student_levels": True}
                    for k in _steps(args.student_steps, "--student-steps")]
    if not methods:
        raise InputError("nothing to score: give --students and/or --teacher-steps")
    return methods


def score_exports(args) -> int:
    from PIL import Image

    from sfv.errors import InputError
    from sfv.toy.evaluate import _generate, _model, _v2_parts, load_heldout_v2
    from sfv.toy.metric import score_futures
    from sfv.toy.world import read_world

    if args.samples < 2 or args.blocks < 1:
        raise InputError(f"--samples {args.samples} --blocks {args.blocks}: a score needs ≥ 2 samples, and ≥ 1 block")
    world = Path(args.world)
    info, rows_json = read_world(world) if (world / "scenes.jsonl").is_file() else ({}, [])
    if info.get("preset") != "v2":
        raise InputError(f"--world '{world}' is not a v2 toy world: write one with `python -m sfv.toy.world --preset v2 "
                         "--count 12 --samples 4 --out DIR`")
    references = max(r["sample"] for r in rows_json) + 1
    methods = methods_of(args)
    _, scenes, real, buckets = load_heldout_v2(world, references)
    images = [Image.fromarray(real[0, i, 0]) for i in range(len(scenes))]
    models: dict = {}
    rows = []
    print(f"{len(scenes)} held-out conditionings × {args.samples} samples × {args.blocks} block(s), {references} true draws each")
    for m in methods:
        videos, _ = _generate(_model(models, m), images, buckets, m, real.shape[3], real.shape[2], args.samples * args.blocks)
        blocks = []
        for b in range(args.blocks):
            s = score_futures(videos[b * args.samples:(b + 1) * args.samples], scenes, real)
            blocks.append({"toy_error": s["toy_error"], **_v2_parts(s)})
        errs = [b["toy_error"] for b in blocks]
        rows.append({**m, "toy_error": statistics.mean(errs), "blocks": blocks})
        print(f"{m['name']:28s} toy_error {statistics.mean(errs):.3f}"
              + (f"  blocks {' / '.join(f'{e:.3f}' for e in errs)}" if args.blocks > 1 else "")
              + f"  precision {blocks[0]['precision']:.3f}  coverage {blocks[0]['coverage']:.3f}"
              f"  energy {blocks[0]['energy']:.4f}  edge {blocks[0]['edge']:.3f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"world": str(world), "conditionings": len(scenes), "samples": args.samples,
                                              "blocks": args.blocks, "rows": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
