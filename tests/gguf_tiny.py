"""Write a tiny FLUX transformer as a Q8_0 GGUF file in diffusers key layout (test helper).

diffusers' BFL-key conversion hard-codes FLUX's real width (3072), so a tiny file must already use
diffusers' key names; weights whose rows are a multiple of Q8_0's 32-element block are quantized,
the rest (biases, norms, narrow layers) stay float32, as real FLUX GGUF files keep their norms.
"""

from __future__ import annotations

import numpy as np


def write_q8_gguf(state_dict: dict, path, arch: str = "flux") -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    for name, tensor in state_dict.items():
        data = tensor.detach().float().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
