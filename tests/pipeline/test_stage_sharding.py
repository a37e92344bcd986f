"""A stage on a (2, 2, 2) mesh shards its parameters as the rules in its config say."""

import base64
import json
import os

from configs.sft import get_config
from rlhf_jax.pipeline.sft import run_sft


def saved_specs(workdir: str, step: int) -> dict[str, list]:
    """``{parameter path: partition spec}`` as orbax recorded them in the checkpoint."""
    with open(os.path.join(workdir, "checkpoints", str(step), "state", "_sharding")) as f:
        recorded = json.load(f)
    specs = {base64.b64decode(key).decode(): json.loads(value)["partition_spec"]
             for key, value in recorded.items()}
    return {name[len("params."):]: spec for name, spec in specs.items()
            if name.startswith("params.")}


def test_rules_given_in_the_config_shard_the_stage_params(tmp_path):
    config = get_config("tiny,records=200")
    config.steps, config.optimizer.warmup_steps = 2, 0
    # The `data` preset replicates every parameter; the config's rules split the MLP width over
    # `tensor` and the model width over `fsdp`.
    config.mesh.update(data=2, fsdp=2, tensor=2, devices=0, rules="data",
                       axis_rules=(("mlp", "tensor"), ("embed", "fsdp")))
    run_sft(config, str(tmp_path))
    specs = saved_specs(str(tmp_path), 2)
    # (layers, embed, mlp) and (layers, mlp, embed); heads keep the preset's rule: replicated.
    assert specs["trunk.layers.mlp.up.kernel"] == [None, "fsdp", "tensor"]
    assert specs["trunk.layers.mlp.gate.kernel"] == [None, "fsdp", "tensor"]
    assert specs["trunk.layers.mlp.down.kernel"] == [None, "tensor", "fsdp"]
    assert specs["trunk.layers.attn.q.kernel"] == [None, "fsdp"]  # (layers, embed, heads, dim)
    assert specs["trunk.embed.embedding"] == [None, "fsdp"]  # (vocab, embed)
    assert len(specs) == 12
