"""Read upscaler weight files, recognise the architecture, and build the network.

Accepted: ``.safetensors`` and ``.pth``/``.pt`` (the latter only through
``torch.load(weights_only=True)``, so a pickle that would run code is refused).  Key layouts: the
BasicSR/Real-ESRGAN one (``conv_first``, ``body.N.rdbM.convK``, ...), the old ESRGAN one
(``model.0``, ``model.1.sub.N.RDBM.convK.0``, ...), optionally wrapped in ``params_ema``/``params``.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import UpscaleError, first_line
from ..hashing import sha256_file
from .arch import RRDBNet, SRVGGNetCompact

PTH_SUFFIXES = (".pth", ".pt", ".ckpt")


@dataclass
class ArchSpec:
    """What a state dict describes; enough to rebuild the network."""

    arch: str  # "RRDBNet" | "SRVGGNetCompact"
    scale: int
    num_feat: int
    num_block: int = 0  # RRDBNet
    num_grow_ch: int = 0  # RRDBNet
    num_conv: int = 0  # SRVGGNetCompact
    num_params: int = 0

    def describe(self) -> str:
        if self.arch == "RRDBNet":
            return f"RRDBNet x{self.scale} ({self.num_block} blocks, {self.num_feat} feat)"
        return f"SRVGGNetCompact x{self.scale} ({self.num_conv} convs, {self.num_feat} feat)"


@dataclass
class LoadedUpscaler:
    model: torch.nn.Module
    spec: ArchSpec
    path: Path
    sha256: str
    name: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def pad_multiple(self) -> int:
        # x2plus / x1 RRDBNet fold the input with pixel-unshuffle and need even (or /4) sizes.
        return getattr(self.model, "unshuffle", 1)


def file_sha256(path: Path) -> str:
    return sha256_file(path)


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata from a weight file, or a one-line UpscaleError."""
    path = Path(path)
    if not path.is_file():
        raise UpscaleError(f"upscaler weights {str(path)!r} not found; check the path or run 'localflux weights list'")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise UpscaleError(f"upscaler weights {str(path)!r} are not a readable .safetensors file ({_short(exc)}); re-download or reinstall them") from None
        return tensors, metadata
    if suffix in PTH_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch's pickle-protocol warnings would break the one-line error
                warnings.simplefilter("ignore")
                loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))  # torch names the blocked global it met
            if found:
                raise UpscaleError(
                    f"{str(path)!r} contains Python objects or code ({found.group(1)}), not just tensors; refusing to unpickle it "
                    "(convert it to .safetensors with a tool you trust)"
                ) from None
            raise UpscaleError(
                f"upscaler weights {str(path)!r} are not a readable tensor-only PyTorch file (corrupt, or holding objects that "
                "safe loading refuses); re-download them or convert them to .safetensors"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
            raise UpscaleError(f"upscaler weights {str(path)!r} are not a readable PyTorch file ({_short(exc)}); re-download them") from None
        return _unwrap(loaded, path), {}
    raise UpscaleError(f"upscaler weights {str(path)!r} must be .safetensors or .pth, not {suffix or 'a file without suffix'!r}")


def _short(exc: BaseException) -> str:
    return first_line(exc, 160)


def _unwrap(loaded, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UpscaleError(f"{str(path)!r} does not hold a state dict of tensors; it is not an ESRGAN/Real-ESRGAN weight file")
    return dict(loaded)


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_FIXED = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}


def old_to_new_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an old-ESRGAN-layout RRDBNet state dict to the BasicSR names; other dicts pass through."""
    if "model.0.weight" not in state:
        return state
    trunk = [int(m.group(1)) for key in state if (m := re.match(r"^model\.1\.sub\.(\d+)\.weight$", key))]
    if len(trunk) != 1:
        raise UpscaleError("old-layout ESRGAN weights without a single trunk convolution (model.1.sub.N.weight); unsupported variant")
    renamed = {}
    for key, value in state.items():
        prefix, _, kind = key.rpartition(".")
        if m := _OLD_RDB.match(key):
            renamed[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif prefix == f"model.1.sub.{trunk[0]}":
            renamed[f"conv_body.{kind}"] = value
        elif prefix in _OLD_FIXED:
            renamed[f"{_OLD_FIXED[prefix]}.{kind}"] = value
        else:
            raise UpscaleError(f"old-layout ESRGAN weights have an unexpected key {key!r}; only the standard 4x ESRGAN layout is supported")
    return renamed


def detect_arch(state: dict[str, torch.Tensor]) -> ArchSpec:
    """Infer architecture, scale and sizes from tensor names and shapes."""
    num_params = int(sum(t.numel() for t in state.values()))
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        in_ch = state["conv_first.weight"].shape[1]
        scale = {3: 4, 12: 2, 48: 1}.get(int(in_ch))
        if scale is None:
            raise UpscaleError(f"RRDBNet weights take {in_ch} input channels; only 3 (x4), 12 (x2) or 48 (x1) are supported")
        blocks = {int(key.split(".")[1]) for key in state if key.startswith("body.")}
        return ArchSpec(
            "RRDBNet", scale, int(state["conv_first.weight"].shape[0]), num_block=len(blocks),
            num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]), num_params=num_params,
        )
    if "body.0.weight" in state and state["body.0.weight"].ndim == 4:
        indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("body.")})
        last = state[f"body.{indices[-1]}.weight"]
        out_ch = int(state["body.0.weight"].shape[1])
        scale = int(round((last.shape[0] / out_ch) ** 0.5))
        if scale * scale * out_ch != last.shape[0]:
            raise UpscaleError(f"SRVGGNetCompact weights end with {last.shape[0]} channels, not 3 x scale^2; unsupported")
        return ArchSpec("SRVGGNetCompact", scale, int(state["body.0.weight"].shape[0]), num_conv=(len(indices) - 3) // 2, num_params=num_params)
    sample = ", ".join(sorted(state)[:3])
    raise UpscaleError(f"weights with keys like {sample} are neither RRDBNet (Real-ESRGAN/ESRGAN) nor SRVGGNetCompact; unsupported upscaler")


def build_model(state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, ArchSpec]:
    """The network for ``state`` with the weights loaded strictly (every key must fit)."""
    state = old_to_new_keys(state)
    spec = detect_arch(state)
    if spec.arch == "RRDBNet":
        model = RRDBNet(3, 3, spec.scale, spec.num_feat, spec.num_block, spec.num_grow_ch)
    else:
        model = SRVGGNetCompact(3, 3, spec.num_feat, spec.num_conv, spec.scale)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise UpscaleError(f"weights look like {spec.describe()} but do not fit it ({_short(exc)})") from None
    return model, spec


def load_upscaler(path: Path, name: str | None = None) -> LoadedUpscaler:
    """Read ``path``, build its network (CPU, fp32, eval mode) and hash the file for the recipe."""
    path = Path(path)
    state, metadata = read_state_dict(path)
    model, spec = build_model(state)
    return LoadedUpscaler(model.eval(), spec, path, file_sha256(path), name or metadata.get("name") or path.stem, metadata)
