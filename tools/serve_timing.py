"""The generation time that `sfv serve`'s page shows: a one-step student against its teacher at 25 steps with CFG,
measured through the page's own code path (sfv.serve.Server.generate) on the page's toy-world example frames.

    python tools/serve_timing.py [--student models/toy-sfv-v2] [--teacher models/toy-svd-v2]
                                 [--decoder models/toy-decoder-v2] [--repeats 5] [--threads 1]

Each model is loaded once, as by `sfv serve`; per setting one warm-up request, then `repeats` requests that cycle
through the example frames (seed = repeat). Prints the median and min–max of the time the page shows (the pipeline
call: conditioning, sampling, decoding) and the speed-up over the teacher.
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import torch

from sfv.console import ArgParser, check_positive, run_command


def build_parser() -> ArgParser:
    p = ArgParser(prog="serve_timing", description=__doc__.splitlines()[0])
    p.add_argument("--student", default="models/toy-sfv-v2")
    p.add_argument("--teacher", default="models/toy-svd-v2")
    p.add_argument("--decoder", default="models/toy-decoder-v2", help="fast decoder for the student ('' for none)")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=3.0, help="the teacher's max guidance scale (SVD's ramp from 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def time_requests(server, frames, request_kwargs: dict, repeats: int) -> list[float]:
    from sfv.serve import Request

    server.generate(frames[0], Request(**request_kwargs))  # warm-up
    return [server.generate(frames[i % len(frames)], Request(seed=i, **request_kwargs)).seconds for i in range(repeats)]


def main(args) -> int:
    from sfv.serve import Server, toy_examples
    from sfv.toy.teacher import FPS

    check_positive(args, "repeats", "threads", "teacher-steps")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        examples = toy_examples(out)
        frames = [path for path, _, _ in examples]
        common = {"fps": FPS, "motion_bucket_id": examples[0][1]}
        student = Server.load(args.student, cpu, torch.float32, out, args.decoder or None)
        rows.append(("student, 1 step", time_requests(student, frames, {**common, "steps": 1}, args.repeats)))
        if "tiny" in student.spec.decoders:
            rows.append(("student, 1 step, fast decoder",
                         time_requests(student, frames, {**common, "steps": 1, "decoder": "tiny"}, args.repeats)))
        del student
        teacher = Server.load(args.teacher, cpu, torch.float32, out)
        label = f"teacher, {args.teacher_steps} steps, CFG 1 → {args.cfg:g}"
        rows.append((label, time_requests(teacher, frames, {**common, "steps": args.teacher_steps, "guidance": args.cfg},
                                          args.repeats)))
    reference = statistics.median(rows[-1][1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.repeats} requests per setting after "
          f"1 warm-up; 8 frames of 32×32 at {FPS} fps\n")
    print("| setting | shown time, median (s) | min – max (s) | speed-up vs teacher |")
    print("|---|---|---|---|")
    for label, times in rows:
        median = statistics.median(times)
        print(f"| {label} | {median:.3f} | {min(times):.3f} – {max(times):.3f} | {reference / median:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(build_parser(), main))
