"""Run a job: render what is missing, survive crashes, record every outcome.

The commit protocol of one item: render -> PNG to a temp file, fsync, rename (``output.
atomic_write_bytes``) -> sidecar the same way -> one manifest line, fsync'd. A crash between
any two steps is repaired on the next start: temp leftovers are deleted, and a final PNG whose
embedded recipe carries the item's id is adopted (its sidecar rewritten from that recipe, its
manifest line appended), so at most the image in flight is rendered again, to the same bytes.

Render failures (out of memory, NaN output) are recorded and the batch goes on; an out of
memory is retried once with model offload and VAE tiling, and the recipe says so. Problems
that would hit every later item too (a full disk, an unwritable folder) stop the batch.

Under ``accelerate launch`` process r of w renders the items whose index is r modulo w and
appends to its own manifest shard; process 0 holds the folder lock for the whole launch.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import warnings as warnings_mod
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

from .. import config as config_mod
from .. import faults, pipeline
from ..errors import LocalFluxError, OutputError, RecipeError, first_line
from ..io.png import save_png, sidecar_bytes, signer_for
from ..model_cache import MODELS
from ..output import atomic_write_bytes, ensure_output_dir, temp_leftovers
from ..progress import progress_bar
from ..recipe import add_extension, read_recipe
from ..render import prompt_warnings
from .jobs import Item, Job, render_plan
from .lock import FolderLock
from .manifest import ManifestWriter, Record, read_states, record

log = logging.getLogger(__name__)

LOW_MEMORY = {"memory.offload": "model", "memory.vae_tiling": "on"}


class RenderFailure(Exception):
    """This item could not be rendered; the reason goes into the manifest and the batch goes on."""


@dataclass
class Status:
    done: list[Item] = field(default_factory=list)
    failed: list[tuple[Item, str]] = field(default_factory=list)
    pending: list[Item] = field(default_factory=list)
    adoptable: int = 0  # pending items whose finished file is already on disk


@dataclass
class Outcome:
    status: Status  # of the whole job at the end (process 0) or of this process's share
    rendered: int = 0
    adopted: int = 0
    interrupted: bool = False
    is_main: bool = True


# ---------------------------------------------------------------- state


def job_status(job: Job, states: dict[str, Record] | None = None) -> Status:
    """Done / failed / pending for every item, from the manifest and the files (reads only)."""
    if states is None:
        states = read_states(job.folder) if job.folder.is_dir() else {}
    status = Status()
    for item in job.items:
        entry = states.get(item.item_id)
        path = job.folder / item.filename
        if entry is not None and entry.state == "done" and (job.folder / entry.file).is_file():
            status.done.append(item)
        elif entry is not None and entry.state == "failed":
            status.failed.append((item, entry.reason or "unknown reason"))
        else:
            status.pending.append(item)
            status.adoptable += path.is_file()
    return status


# ---------------------------------------------------------------- processes


class Group:
    """The processes of this run: just this one, or those that ``accelerate launch`` started."""

    def __init__(self) -> None:
        self.state = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:

            # Without cpu=True accelerate treats CPU-only processes as unrelated single runs.
            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
            if self.state.device.type == "cuda":
                torch.cuda.set_device(self.state.device)  # "auto" then means this process's own GPU

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def all_ok(self, ok: bool) -> bool:
        """True when every process passes ``ok=True`` (a tensor all-reduce: nothing is unpickled)."""
        if self.state is None:
            return ok

        flag = torch.tensor([1 if ok else 0], device=self.state.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())


# ---------------------------------------------------------------- running


def run_job(job: Job, *, retry_failed: bool = False, progress: bool = True, emit=None) -> Outcome:
    """Render the job's pending items (or only its failed ones) and return what happened."""

    emit = emit or (lambda path: print(path, flush=True))
    group = Group()
    lock, error = None, None
    if group.rank == 0:
        try:
            ensure_output_dir(job.folder)
            lock = FolderLock(job.folder).acquire()
            _remove_temp_leftovers(job.folder)
        except LocalFluxError as exc:
            error = exc
    if not group.all_ok(error is None):
        raise error or OutputError(f"process 0 of this launch could not open the job folder {str(job.folder)!r}; "
                                   "see its message")
    try:
        outcome = _run_share(job, group, retry_failed, progress, emit)
        group.barrier()
        if group.rank == 0:
            outcome.status = job_status(job)
        outcome.is_main = group.rank == 0
        return outcome
    finally:
        if lock is not None:
            lock.release()


def _run_share(job: Job, group: Group, retry_failed: bool, progress: bool, emit) -> Outcome:
    status = job_status(job)
    wanted = [item for item, _ in status.failed] if retry_failed else status.pending
    mine = [item for item in wanted if item.index % group.world == group.rank]
    writer = ManifestWriter(job.folder, group.rank)
    outcome = Outcome(status)
    bar = _bar(len(mine), progress)
    try:
        with _Interrupts() as interrupts:
            for item in mine:
                if interrupts.requested:
                    outcome.interrupted = True
                    break
                adopted = _adopt(job, item)
                if adopted is not None:
                    writer.append(adopted)
                    outcome.adopted += 1
                else:
                    entry = _render_item(job, item)
                    writer.append(entry)
                    outcome.rendered += entry.state == "done"
                    if entry.state == "done":
                        emit(str(job.folder / entry.file))
                    else:
                        log.warning("%s failed: %s", item.label, entry.reason)
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        # The second Ctrl-C: stop now. Every manifest line written is whole, and a file renamed
        # into place but not yet recorded is adopted by the next run; only temp files are left.
        if group.world == 1:
            _remove_temp_leftovers(job.folder)
        raise
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    outcome.status = job_status(job)
    return outcome


def _adopt(job: Job, item: Item) -> Record | None:
    """The manifest record for a finished file already in place (a crash before its manifest line)."""

    path = job.folder / item.filename
    sidecar = path.with_suffix(".json")
    if not path.exists():
        if sidecar.is_file():
            _remove_own_sidecar(sidecar, item)
        return None
    try:
        recipe = read_recipe(path)
    except RecipeError:
        recipe = {}
    batch = (recipe["extensions"].get("batch") or {}) if recipe else {}
    if batch.get("item_id") != item.item_id:
        raise OutputError(f"{str(path)!r} exists but is not {item.label} of this job; move it out of the job folder "
                          "(localflux never overwrites files)")
    if item.plan.config.output.sidecar and not sidecar.exists():
        atomic_write_bytes(sidecar, sidecar_bytes(recipe))
    return record(item, "done", file=item.filename, sha256=_sha256(path), low_memory=batch.get("low_memory"))


def _remove_own_sidecar(sidecar: Path, item: Item) -> None:
    """A sidecar whose PNG was deleted (to have it rendered again) is replaced, if it is this item's."""

    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or (data.get("batch") or {}).get("item_id") != item.item_id:
        raise OutputError(f"{str(sidecar)!r} exists but is not {item.label} of this job; move it out of the job folder")
    sidecar.unlink()


def _render_item(job: Job, item: Item) -> Record:
    """Render and save one item; a render failure becomes a 'failed' record, not an exception."""


    attempts = [(item.plan, None)]
    for attempt in range(2):
        plan, low_memory = attempts[attempt]
        try:
            faults.out_of_memory(item.index, attempt)
            image, recipe = _render(item, plan, low_memory)
            break
        except RenderFailure as exc:
            return record(item, "failed", reason=str(exc))
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_memory()
            if attempt == 1:
                return record(item, "failed", reason=f"out of memory, also with model offload and VAE tiling "
                                                      f"({first_line(exc)})")
            log.warning("%s: out of memory; retrying with model offload and VAE tiling", item.label)
            attempts.append((_low_memory_plan(item.plan),
                             f"out of memory on the first attempt ({first_line(exc)}); rendered again with "
                             "model offload and VAE tiling, which may differ slightly from an unconstrained render"))
    path = job.folder / item.filename
    save_png(image, path, recipe, sidecar=plan.config.output.sidecar, credentials=signer_for(plan.config.output))
    if low_memory is not None:
        _free_memory()  # back to the normal plan for the next item
    return record(item, "done", file=item.filename, sha256=_sha256(path), low_memory=low_memory)


def _render(item: Item, plan, low_memory: str | None):

    try:  # input images are read again here; one that changed or went missing since the check fails this item
        plan = render_plan(item, plan)
    except LocalFluxError as exc:
        raise RenderFailure(str(exc)) from None
    model = pipeline.load(plan)
    warnings = prompt_warnings(plan.family, model.pipe, plan.request)
    with _NanWatch(model.pipe, inject=faults.nan_output(item.index)) as watch, warnings_mod.catch_warnings():
        # NaN pixels are reported below as the item's failure; numpy's cast warning would only repeat it.
        warnings_mod.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        result = pipeline.render_batch(plan, model, plan.seeds, warnings, progress=False)[0]
    if watch.found:
        raise RenderFailure("the decoded image contains NaN (not-a-number) values; try --dtype float32 or "
                            "bfloat16 instead of float16")
    recipe = result.recipe
    recipe["index"] = item.index
    add_extension(recipe, "batch", {"item_id": item.item_id, "index": item.index, "variant": item.variant,
                                    "low_memory": low_memory})
    return result.image, recipe


def _low_memory_plan(plan):

    return pipeline.plan(config_mod.replace(plan.config, **LOW_MEMORY))


def _is_out_of_memory(exc: BaseException) -> bool:

    # MPS reports running out of memory as a plain RuntimeError.
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory() -> None:
    """Drop loaded pipelines so the next attempt (or item) starts from a clean device."""


    MODELS.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _NanWatch:
    """Notes whether the VAE decoder produced non-finite values (then the PNG would be garbage)."""

    def __init__(self, pipe, inject: bool = False) -> None:
        self.decoder = pipe.vae.decoder
        self.inject = inject
        self.found = False

    def __enter__(self) -> "_NanWatch":

        def hook(module, args, output):
            if self.inject:
                output = output * float("nan")
            if not torch.isfinite(output).all():
                self.found = True
            return output

        self.handle = self.decoder.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


class _Interrupts:
    """First Ctrl-C: finish the current image, then stop. Second: stop at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # print, not logging: this runs in a signal handler, where logging's lock could deadlock
        print("localflux: stopping after the current image (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _remove_temp_leftovers(folder: Path) -> None:

    for path in temp_leftovers(folder):
        path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bar(total: int, progress: bool):
    if not progress or total < 2:
        return None

    return progress_bar(total, "batch", "img", leave=True)

