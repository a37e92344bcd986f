"""Logical axis names, the one vocabulary shared by modules and sharding rules.

Modules annotate every kernel and activation with these names; the rules in
:mod:`rlhf_jax.parallel.rules` map them onto the mesh axes below. Parameter
dimensions and activation dimensions have different names so that, for example,
FSDP can shard a kernel's ``EMBED`` dimension while activations stay sharded
over the batch only.
"""

# Mesh axes.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Parameter dimensions.
LAYERS = "layers"  # the stacked-layer dimension added by nn.scan
VOCAB = "vocab"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
MLP = "mlp"
POSITIONS = "positions"
LORA_RANK = "lora_rank"  # the rank of a low-rank adapter (never sharded)

# Activation dimensions.
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV_HEADS = "activation_kv_heads"
ACT_HEAD_DIM = "activation_head_dim"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"
ACT_CACHE_LENGTH = "activation_cache_length"
