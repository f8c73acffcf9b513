"""``localflux batch``: render a job file (prompts x variants x seeds) into one folder, resumably."""

from __future__ import annotations

import sys

EXIT_FAILED_ITEMS = 1
EXIT_INTERRUPTED = 130


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="render a job file (prompts x seeds x variants) with a manifest; rerun to resume",
        description="Render every item of a TOML job into one folder. Running it again renders only what is "
                    "missing. Prints the path of each image written. Exit 1 if any item failed, 130 if stopped "
                    "with Ctrl-C. Under `accelerate launch` the items are shared among the processes.")
    parser.add_argument("job", help="the job file (.toml, see docs/batch.md)")
    parser.add_argument("--status", action="store_true", help="show done / failed / pending with reasons; render nothing")
    parser.add_argument("--retry-failed", action="store_true", help="render only the items that failed before")
    parser.add_argument("--out", "-o", metavar="DIR", help="the job's output folder (default: job.output)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key for every item, e.g. --set sampling.steps=8")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..batch.jobs import load_job

    job = load_job(args.job, sets=args.sets, out=args.out)
    if args.status:
        return _print_status(job)
    from ..batch.runner import run_job

    outcome = run_job(job, retry_failed=args.retry_failed, progress=not args.no_progress)
    if not outcome.is_main:
        return EXIT_FAILED_ITEMS if outcome.status.failed else 0
    status = outcome.status
    print(f"batch: {len(job.items)} items: {len(status.done)} done, {len(status.failed)} failed, "
          f"{len(status.pending)} pending (this run: {outcome.rendered} rendered, {outcome.adopted} recovered) "
          f"in {job.folder}", file=sys.stderr)
    for item, reason in status.failed[:20]:
        print(f"  failed: {item.label}: {reason}", file=sys.stderr)
    if outcome.interrupted:
        print(f"batch: stopped by Ctrl-C; run `localflux batch {args.job}` again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if status.failed:
        print(f"batch: run `localflux batch {args.job} --retry-failed` to try the failed items again", file=sys.stderr)
        return EXIT_FAILED_ITEMS
    return 0


def _print_status(job) -> int:
    from ..batch.runner import job_status

    status = job_status(job)
    print(f"job: {job.path} -> {job.folder}")
    print(f"items: {len(job.items)}")
    print(f"done: {len(status.done)}")
    print(f"failed: {len(status.failed)}")
    pending = f"pending: {len(status.pending)}"
    if status.adoptable:
        pending += f" ({status.adoptable} already on disk, recorded on the next run)"
    print(pending)
    for item, reason in status.failed:
        print(f"  failed {item.label} {item.filename}: {reason}")
    return 0
