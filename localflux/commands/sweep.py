"""``localflux sweep``: seeds x one varied setting, each cell a PNG with its recipe, plus a contact sheet."""

from __future__ import annotations

from .generate import add_render_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="render seeds x one varied setting and a labelled contact sheet",
        description="Lock seeds, vary one setting: renders every seed (rows) with every value (columns) of one "
                    "config key, writes each cell as a replayable PNG and one contact-sheet PNG. "
                    "Prints each cell's path, then the contact sheet's.")
    add_render_options(parser)
    parser.add_argument("--seeds", required=True, metavar="LIST", help="seeds, e.g. 1-6 or 1,5,9 (one row each)")
    parser.add_argument("--vary", required=True, metavar="KEY=V1,V2,...",
                        help="the key to vary (one column per value), e.g. sampling.guidance=2.5,3.5,4.5, "
                             "prompt.lighting=window,rim or lora[0].scale=0,0.5,1; "
                             "values with commas: KEY='[\"a, b\", \"c\"]'")
    parser.add_argument("--cell", type=int, default=256, metavar="PX", help="longest side of a cell on the sheet")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and the first cell's plan; render nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress lines")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..sweep import parse_seeds, parse_vary, run_sweep
    from .generate import config_from_args

    from ..errors import ConfigError

    for flag, value in (("--seed", args.seed), ("--count", args.count)):
        if value is not None:  # the rows come from --seeds alone; silently ignoring these would surprise
            raise ConfigError(f"sweep takes its seeds from --seeds (one row each); drop {flag} {value}")
    seeds = parse_seeds(args.seeds)
    key, values = parse_vary(args.vary)
    if not 16 <= args.cell <= 4096:
        raise ConfigError(f"--cell {args.cell} must be between 16 and 4096 pixels")
    if args.dry_run:
        from ..pipeline import describe
        from ..sweep import plan_sweep

        plans = plan_sweep(config_from_args(args), seeds, key, values)
        print(f"sweep: {len(seeds)} seed(s) x {len(values)} value(s) of {key} = {len(plans)} cells")
        print(f"rows (seeds): {', '.join(map(str, seeds))}")
        print(f"columns ({key}): {', '.join(map(str, values))}")
        print(describe(plans[0][4]))
        return 0
    # each cell's path as its file is written: an interrupted sweep still lists what it saved
    sweep = run_sweep(config_from_args(args), seeds, key, values, cell_size=args.cell, progress=not args.no_progress,
                      on_cell=lambda cell: print(cell.path, flush=True))
    print(sweep.sheet_path, flush=True)
    return 0
