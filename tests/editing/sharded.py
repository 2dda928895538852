"""A sharded safetensors checkpoint written the Hugging Face way, for the merge tests."""

import json
from pathlib import Path

from safetensors.torch import save_file


def write_sharded(folder: Path, sd: dict, shards: int = 2, config: str = '{"model_type": "llama"}') -> Path:
    """``sd`` split round-robin over ``shards`` files model-0000i-of-0000n.safetensors, with its index and config."""
    folder.mkdir(parents=True)
    keys, weight_map = list(sd), {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: sd[k] for k in keys[s::shards]}, folder / name)
        weight_map.update({k: name for k in keys[s::shards]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(config)
    return folder
