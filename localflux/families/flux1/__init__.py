"""FLUX.1 [schnell] and [dev] (``family.py``: the spec; ``loading.py``: weights to a pipeline)."""


