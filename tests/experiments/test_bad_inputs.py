"""Bad inputs, end to end through the entry points, as a user gives them.

Every case must end with exit status 2 and one line ``error: …`` on stderr naming the thing at
fault (the config key and value; the file, line and field; the checkpoint file, tensor or
field), without a traceback, and must leave the files an earlier run left in its workdir as
they were.

Each entry point's cases run together in one process of their own
(``tests/experiments/entry.py``: a test process may hold another entry point's flags), and one
case of each entry point also runs as a real ``python -m`` process. In arguments and messages
``{in}`` is the directory of bad inputs and ``{wd}`` the case's workdir.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import models as model_presets
from rlhf_jax.checkpoints import export_hf
from rlhf_jax.checkpoints.scalar_model import CONFIG_FILE, save_scalar_model
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.models import CausalLM, ModelConfig, ScalarHeadModel
from tests.experiments.entry import invoke_all, run

SFT = ["--config=configs/sft.py:tiny", "--config.mesh.devices=1"]
PRETRAIN = [*SFT, "--config.stage=pretrain", "--config.data.kind=pretrain"]
RM = ["--config=configs/rm.py:tiny", "--config.mesh.devices=1"]
PPO = ["--config=configs/ppo.py:tiny", "--config.mesh.devices=1", "--config.reward.token_count=5",
       "--config.value_init=policy"]
PIPELINE = ["--config=configs/instructgpt.py:micro"]  # in-process runs name their config file
HH = ["--config=configs/instructgpt.py:hh_rlhf", "--config.base.init={in}/hf"]
SUMMARIZE = ["--config=configs/instructgpt.py:summarize", "--config.base.init={in}/hf"]
GOOD = {"demonstration": {"prompt": "What is two plus two?", "response": "Four."},
        "comparison": {"prompt": "Name a colour.", "responses": ["Red.", "Seven."],
                       "ranking": [0, 1]},
        "prompt": {"prompt": "Name a colour."},
        "pretrain": {"text": "The sky is blue."}}
STAGE = {"demonstration": SFT, "comparison": RM, "prompt": PPO, "pretrain": PRETRAIN}
# An earlier run's results, which a failed run must leave as they were.
EARLIER = {"result.json": '{"loss": 1.25}\n',
           "metrics.jsonl": '{"step": 1, "split": "train", "loss": 1.25}\n'}


def lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def record_faults(kind: str) -> dict:
    """``{fault: (file contents, flags, what the message names)}`` for files of ``kind``."""
    good, first = GOOD[kind], next(iter(GOOD[kind]))
    return {
        "malformed_json": (lines(good, b'{"' + first.encode() + b'": "unterminated'), [],
                           ["{file}:2: malformed JSON"]),
        "not_utf8": (lines(good, good, b'{"' + first.encode() + b'": "caf\xe9"}'), [],
                     ["{file}:3: not UTF-8 text (byte 0xe9"]),
        "json_array": (lines(list(good.values())), [],
                       ["{file}:1: expected a JSON object, got list"]),
        "empty_file": (b"\n", [], ["{file}: no records: the file is empty"]),
        "every_line_skipped": (lines({"x": 1}, {"x": 2}, dict(good, **{first: 7})),
                               ["--config.data.on_error=skip"],
                               ["{file}: no records: on_error='skip' skipped all 3 lines",
                                f"{{file}}:1: field '{first}': missing"]),
        "missing_field": (lines(good, {k: v for k, v in good.items() if k != first}), [],
                          [f"{{file}}:2: field '{first}': missing"]),
        "wrong_type": (lines(dict(good, **{first: ["a", "list"]})), [],
                       [f"{{file}}:1: field '{first}': expected a string, got list"]),
        "empty_string": (lines(dict(good, **{first: "  "})), [],
                         [f"{{file}}:1: field '{first}': empty"]),
    }


def comparison(**fields) -> bytes:
    return lines(dict(GOOD["comparison"], **fields))


RECORDS = {  # case -> (kind, file contents, flags, what the message names)
    **{f"{kind}_{fault}": (kind, *fault_case) for kind in GOOD
       for fault, fault_case in record_faults(kind).items()},
    "comparison_k_1": ("comparison", comparison(responses=["Red."], ranking=[0]), [],
                       ["{file}:1: field 'responses': K=1 responses, expected 2 to 4 (k_max=4)"]),
    "comparison_k_over_k_max": (
        "comparison", comparison(responses=["A.", "B.", "C.", "D.", "E."], ranking=[0, 1, 2, 3, 4]),
        [], ["{file}:1: field 'responses': K=5 responses, expected 2 to 4 (k_max=4)"]),
    "comparison_k_10": (
        "comparison", comparison(responses=[f"R{i}." for i in range(10)], ranking=list(range(10))),
        ["--config.data.k_max=9"],
        ["{file}:1: field 'responses': K=10 responses, expected 2 to 9"]),
    "comparison_ranking_strings": (
        "comparison", comparison(ranking=["0", "1"]), [],
        ["{file}:1: field 'ranking': expected a list of integer indices"]),
    "comparison_ranking_duplicates": ("comparison", comparison(ranking=[1, 1]), [],
                                      ["{file}:1: field 'ranking': [1, 1] is not a permutation"]),
    "comparison_empty_response": ("comparison", comparison(responses=["Red.", ""]), [],
                                  ["{file}:1: field 'responses[1]': empty response"]),
    "comparison_responses_not_a_list": (
        "comparison", comparison(responses="Red."), [],
        ["{file}:1: field 'responses': expected a list of strings, got str"]),
}
PUBLIC = {  # case -> (preset, file contents, what the message names)
    "hh_rlhf_no_assistant_turn": (HH, lines(
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.",
         "rejected": "\n\nHuman: Hi\n\nAssistant: No."},
        {"chosen": "\n\nHuman: Hi there", "rejected": "\n\nHuman: Hi there"}),
        ["{file}:2: field 'chosen': no '\\n\\nAssistant:' turn"]),
    "hh_rlhf_rejected_elsewhere": (HH, lines(
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.",
         "rejected": "\n\nHuman: Bye\n\nAssistant: No."}),
        ["{file}:1: field 'rejected': does not continue the conversation of 'chosen'"]),
    "summarize_bad_choice": (SUMMARIZE, lines(
        {"info": {"post": "My cat sleeps all day."},
         "summaries": [{"text": "Cat."}, {"text": "Dog."}], "choice": 2}),
        ["{file}:1: field 'choice': expected 0 or 1, got 2"]),
    "summarize_one_summary": (SUMMARIZE, lines(
        {"info": {"post": "My cat sleeps all day."}, "summaries": [{"text": "Cat."}], "choice": 0}),
        ["{file}:1: field 'summaries': expected a list of two"]),
}


def _file(case: str, texts: list[str]) -> list[str]:
    return [t.replace("{file}", f"{{in}}/{case}.jsonl") for t in texts]


TRAIN = {  # case -> (arguments after --workdir, what the error line names)
    **{case: ([*STAGE[kind], f"--config.data.path={{in}}/{case}.jsonl",
               "--config.data.toy_records=0", *flags_], _file(case, names))
       for case, (kind, _, flags_, names) in RECORDS.items()},
    "rm_normalize_demonstrations": (
        [*RM, "--config.data.toy_records=60", "--config.normalize.toy_records=0",
         "--config.normalize.path={in}/demonstration_missing_field.jsonl"],
        ["{in}/demonstration_missing_field.jsonl:2: field 'prompt': missing"]),
    # configs
    "unknown_field": ([*SFT, "--config.no_such_field=1"],
                      ["--config.no_such_field=1: the config has no field 'no_such_field'"]),
    "unknown_nested_field": ([*SFT, "--config.optimizer.lr=0.1"],
                             ["--config.optimizer.lr=0.1: the config has no field 'lr'"]),
    "ture_for_a_bool": ([*SFT, "--config.data.chat=ture"],
                        ["--config.data.chat=ture: ('Non-boolean argument to boolean flag'"]),
    "string_for_an_int": ([*SFT, "--config.batch_size=eight"],
                          ["--config.batch_size=eight: invalid literal for int()"]),
    "batch_size_0": ([*SFT, "--config.batch_size=0"], ["config.batch_size=0: must be positive"]),
    "microbatches_do_not_divide": ([*SFT, "--config.microbatches=3"],
                                   ["config.microbatches=3: must divide", "batch of 8 rows"]),
    "minibatches_do_not_divide": (
        [*PPO, "--config.ppo.minibatches=3"],
        ["config.ppo.minibatches=3: must divide", "batch of 16 episodes"]),
    "top_p_0": ([*PPO, "--config.sampling.top_p=0"],
                ["config.sampling.top_p=0.0: must be in (0, 1]"]),
    "top_p_1.5": ([*PPO, "--config.sampling.top_p=1.5"],
                  ["config.sampling.top_p=1.5: must be in (0, 1]"]),
    "negative_temperature": ([*PPO, "--config.sampling.temperature=-0.5"],
                             ["config.sampling.temperature=-0.5: must be >= 0"]),
    "log_every_0": ([*SFT, "--config.log_every=0"], ["config.log_every=0: must be positive"]),
    "profile_steps_reversed": (
        [*SFT, "--config.profile_steps=7,5"],
        ["config.profile_steps=(7, 5): must be (first, last) steps with 1 <= first <= last"]),
    "b2_of_1": ([*SFT, "--config.optimizer.b2=1"], ["config.optimizer.b2=1.0: must be in [0, 1)"]),
    "mesh_does_not_fit": ([*SFT, "--config.mesh.data=3"],
                          ["config.mesh: data=3, fsdp=1, tensor=1 do not fit 1 devices"]),
    "more_devices_than_there_are": ([*SFT, "--config.mesh.devices=64"],
                                    ["config.mesh.devices=64: must be in [0, 8]"]),
    "model_heads_do_not_divide": (
        [*SFT, "--config.model.n_kv_heads=3"],
        ["config.model: ModelConfig.n_kv_heads=3: must divide n_heads=4"]),
    "prompt_plus_response_over_context": (
        [*PPO, "--config.data.max_prompt_len=480"],
        ["config.data.max_prompt_len=480: plus sampling.max_new_tokens=48 is 528 tokens, more "
         "than the model's context of 512"]),
    "rm_prompt_leaves_no_response": (
        [*RM, "--config.data.max_prompt_len=160"],
        ["config.data.max_prompt_len=160: must be less than data.max_len=160 (the responses get "
         "the rest)"]),
    "rows_over_context": ([*SFT, "--config.data.max_len=1024"],
                          ["config.data.max_len=1024: must be at most the model's context of 512"]),
    "missing_data_file": (
        [*SFT, "--config.data.path={in}/nowhere.jsonl", "--config.data.toy_records=0"],
        ["config.data.path='{in}/nowhere.jsonl': no such file"]),
    "no_data": ([*SFT, "--config.data.toy_records=0"], ["config.data.path='': is empty"]),
    "missing_config_file": (["--config=configs/nowhere.py:tiny"],
                            ["--config=configs/nowhere.py:tiny: [Errno 2] No such file"]),
    "unknown_preset": (["--config=configs/sft.py:huge"],
                       ["--config=configs/sft.py:huge: ValueError: unknown SFT preset 'huge'"]),
    "unknown_preset_argument": (["--config=configs/sft.py:tiny,recs=5"],
                                ["--config=configs/sft.py:tiny,recs=5", "unknown key 'recs'"]),
    "unknown_stage": ([*SFT, "--config.stage=kto"], ["config.stage='kto': must be one of"]),
    "unknown_on_error": ([*SFT, "--config.data.on_error=ignore"],
                         ["config.data.on_error='ignore': must be one of ('raise', 'skip')"]),
    "unknown_value_init": (
        [*PPO, "--config.value_init=copy"],
        ["config.value_init='copy': must be one of ('reward', 'policy', 'shared')"]),
    "negative_lora_rank": ([*SFT, "--config.lora.rank=-1"],
                           ["config.lora: LoraConfig.rank=-1: must be an integer >= 0"]),
    "unknown_lora_target": ([*RM, "--config.lora.rank=4", "--config.lora.targets=('q', 'wq')"],
                            ["config.lora: LoraConfig.targets=('q', 'wq'): each must be one of"]),
    "unknown_advantage": ([*PPO, "--config.ppo.advantage=vtrace"],
                          ["config.ppo: PPOConfig.advantage='vtrace' must be one of"]),
    "grpo_with_one_sample": ([*PPO, "--config.ppo.advantage=grpo"],
                             ["config.ppo: PPOConfig.advantage='grpo' compares the samples of a "
                              "prompt: samples_per_prompt=1 must be >= 2"]),
    "dpo_prompt_leaves_no_response": (
        ["--config=configs/dpo.py:tiny", "--config.mesh.devices=1",
         "--config.data.max_prompt_len=200"],
        ["config.data.max_prompt_len=200: must be less than data.max_len=160 (the responses get "
         "the rest)"]),
    "unknown_preference_loss": (["--config=configs/dpo.py:tiny", "--config.mesh.devices=1",
                                 "--config.dpo.loss=kto"],
                                ["config.dpo: DPOConfig.loss='kto' must be one of"]),
    "eval_prompts_under_a_batch": ([*PPO, "--config.eval_prompts=4"],
                                   ["config.eval_prompts=4: must be a positive multiple of batch_size=16"]),
    # checkpoints
    "missing_checkpoint": ([*SFT, "--config.init={in}/nowhere"],
                           ["config.init='{in}/nowhere': no such file"]),
    "no_config_json": ([*SFT, "--config.init={in}/no_config"],
                       ["{in}/no_config: no config.json (not a Hugging Face model directory)"]),
    "truncated_safetensors": (
        [*SFT, "--config.init={in}/truncated", "--config.data.toy_records=40"],
        ["{in}/truncated/model.safetensors: not a readable safetensors file"]),
    "not_gguf": ([*SFT, "--config.init={in}/not.gguf"],
                 ["{in}/not.gguf: not a readable GGUF file"]),
    "unknown_architecture": ([*SFT, "--config.init={in}/bert"],
                             ["{in}/bert/config.json: unknown architecture model_type='bert'"]),
    "no_tokenizer": ([*SFT, "--config.init={in}/no_tokenizer"],
                     ["{in}/no_tokenizer: no tokenizer could be loaded"]),
    "vocabulary_under_the_tokenizer": (
        [*SFT, "--config.init={in}/small_vocab"],
        ["{in}/small_vocab: vocab_size=200 is smaller than the tokenizer's 259 tokens"]),
    "random_model_vocabulary_under_the_tokenizer": (
        [*SFT, "--config.model.vocab_size=100"],
        ["config.model.vocab_size=100 is smaller than the tokenizer's 259 tokens"]),
    "reward_model_without_model_json": (
        [*PPO, "--config.reward.token_count=-1", "--config.reward.path={in}/no_model_json"],
        [f"config.reward.path='{{in}}/no_model_json': has no {CONFIG_FILE}"]),
    # flags
    "unknown_flag": ([*SFT, "--steps=3"], ["Unknown command line flag 'steps'"]),
    # data that prompt hygiene and the user split leave empty
    "every_prompt_too_long": (
        [*SFT, "--config.data.toy_records=40", "--config.data.max_prompt_tokens=1"],
        ["0 demonstrations left after prompt hygiene: {wd}/toy/demonstrations.jsonl: of 40 "
         "valid records, 40 longer than max_prompt_tokens=1"]),
    "too_few_validation_prompts": ([*PPO, "--config.data.toy_records=20"],
                                   ["validation prompts, fewer than one batch (batch_size=16)"]),
}
INSTRUCTGPT = {
    **{case: ([*preset, f"--config.data.comparisons={{in}}/{case}.jsonl"], _file(case, names))
       for case, (preset, _, names) in PUBLIC.items()},
    "real_data_without_comparisons": (HH, ["config.data.comparisons='': must name a comparisons"]),
    "real_data_missing_comparisons": (
        [*HH, "--config.data.comparisons={in}/nowhere.jsonl"],
        ["config.data.comparisons='{in}/nowhere.jsonl': no such file"]),
    "real_data_two_rounds": (
        [*HH, "--config.data.comparisons={in}/hh_rlhf_no_assistant_turn.jsonl",
         "--config.rounds=2"],
        ["config.rounds=2: must be 1 without simulated labelers"]),
    "stage_rows_over_checkpoint_context": (
        [*HH, "--config.data.comparisons={in}/hh_rlhf_no_assistant_turn.jsonl",
         "--config.sft.data.max_len=1024"],
        ["config.sft.data.max_len=1024: must be at most the model's context of 512"]),
    "unknown_pipeline_preset": (["--config=configs/instructgpt.py:huge"],
                                ["unknown pipeline preset 'huge'"]),
    "unknown_format": ([*PIPELINE, "--config.data.format=csv"],
                       ["config.data.format='csv': must be one of"]),
    "stage_top_p": ([*PIPELINE, "--config.ppo.sampling.top_p=1.5"],
                    ["config.ppo.sampling.top_p=1.5: must be in (0, 1]"]),
    "k_min_1": ([*PIPELINE, "--config.comparisons.k_min=1"],
                ["config.comparisons.k_min=1: must be in [2, 9]"]),
    "best_of_0": ([*PIPELINE, "--config.evaluation.best_of_n=0"],
                  ["config.evaluation.best_of_n=0: must be positive"]),
    "evaluation_dtype": ([*PIPELINE, "--config.evaluation.dtype=int8"],
                         ["config.evaluation.dtype='int8': must be one of ('float32', "
                          "'bfloat16', 'float16')"]),
    "unknown_method": ([*PIPELINE, "--config.methods=('dpo', 'kto')"],
                       ["config.methods=('dpo', 'kto'): must be distinct names among ('dpo', "
                        "'dpo_kwise', 'rloo', 'grpo', 'reinforce_pp')"]),
    "samples_per_prompt_not_dividing": (
        [*PIPELINE, "--config.samples_per_prompt=3"],
        ["config.samples_per_prompt=3: must divide ppo.batch_size=8"]),
}
GENERATE = {  # no workdir
    "no_model": (["--prompt=Hi"], ["flag --model=None: Flag --model must have a value"]),
    "missing_model": (["--prompt=Hi", "--model={in}/nowhere"], ["{in}/nowhere: no such file"]),
    "truncated_model": (["--prompt=Hi", "--model={in}/truncated"],
                        ["{in}/truncated/model.safetensors: not a readable safetensors file"]),
    "top_p_1.5": (["--prompt=Hi", "--model={in}/hf", "--top_p=1.5"],
                  ["SamplingConfig.top_p=1.5: must be in (0, 1]"]),
    "negative_temperature": (["--prompt=Hi", "--model={in}/hf", "--temperature=-1"],
                             ["SamplingConfig.temperature=-1.0: must be >= 0"]),
}
CASES = {"experiments.train": TRAIN, "experiments.instructgpt": INSTRUCTGPT,
         "experiments.generate": GENERATE}
REAL = {"experiments.train": "demonstration_not_utf8",  # run as `python -m` processes too
        "experiments.instructgpt": "summarize_bad_choice", "experiments.generate": "no_model"}


def tiny_model(**changes) -> tuple[ModelConfig, dict]:
    config = ModelConfig.from_dict(dict(model_presets.get_config("tiny"), **changes))
    params = CausalLM(config).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return config, nn.meta.unbox(params)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> str:
    """The directory of bad inputs: record files, checkpoints, reward models."""
    root = str(tmp_path_factory.mktemp("bad_inputs"))
    for case, contents in [*((c, r[1]) for c, r in RECORDS.items()),
                           *((c, p[1]) for c, p in PUBLIC.items())]:
        with open(os.path.join(root, f"{case}.jsonl"), "wb") as f:
            f.write(contents)

    hf = export_hf(*tiny_model(), os.path.join(root, "hf"), byte_tokenizer())
    for name in ("no_config", "truncated", "bert", "no_tokenizer"):
        shutil.copytree(hf, os.path.join(root, name))
    os.remove(os.path.join(root, "no_config", "config.json"))
    weights = os.path.join(root, "truncated", "model.safetensors")
    os.truncate(weights, os.path.getsize(weights) // 2)
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(root, "bert", "config.json"), "w") as f:
        json.dump(dict(config, model_type="bert"), f)
    for name in os.listdir(os.path.join(root, "no_tokenizer")):
        if name not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(root, "no_tokenizer", name))
    export_hf(*tiny_model(vocab_size=200), os.path.join(root, "small_vocab"), byte_tokenizer())
    with open(os.path.join(root, "not.gguf"), "wb") as f:
        f.write(b"not a GGUF file" * 10)

    # A reward model as the RM stage saves it, whose head gives NaN; and one without model.json.
    config = ModelConfig.from_dict(model_presets.get_config("tiny"))
    params = nn.meta.unbox(ScalarHeadModel(config).init(jax.random.key(1),
                                                        jnp.zeros((1, 8), jnp.int32))["params"])
    params["head"]["bias"] = jnp.full_like(params["head"]["bias"], jnp.nan)
    save_scalar_model(os.path.join(root, "nan_reward_model"), config, params, {}, byte_tokenizer())
    shutil.copytree(os.path.join(root, "nan_reward_model"), os.path.join(root, "no_model_json"))
    os.remove(os.path.join(root, "no_model_json", CONFIG_FILE))
    return root


def fill(texts: list[str], inputs: str, workdir: str) -> list[str]:
    return [t.replace("{in}", inputs).replace("{wd}", workdir) for t in texts]


def snapshot(directory: str) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes."""
    files = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(parent, name), "rb") as f:
                files[os.path.relpath(os.path.join(parent, name), directory)] = f.read()
    return files


def earlier_run(workdir: str) -> dict[str, bytes]:
    """Writes ``EARLIER`` into ``workdir``; returns its snapshot."""
    os.makedirs(workdir, exist_ok=True)
    for name, text in EARLIER.items():
        with open(os.path.join(workdir, name), "w") as f:
            f.write(text)
    return snapshot(workdir)


def arguments(module: str, case: str, inputs: str, workdir: str) -> list[str]:
    argv, _ = CASES[module][case]
    return fill(argv if module == "experiments.generate" else [f"--workdir={workdir}", *argv],
                inputs, workdir)


def assert_user_error(status: int, stderr: str, names: list[str]) -> None:
    """Exit status 2; stderr's last line is one ``error: …`` line holding every one of
    ``names``; no traceback."""
    assert "Traceback" not in stderr, stderr
    assert status == 2, stderr
    last = re.split(r"[\r\n]", stderr.rstrip())[-1]  # progress bars end their lines with \r
    assert last.startswith("error: "), stderr
    for name in names:
        assert name in last, f"{name!r} not in {last!r}"


def assert_untouched(workdir: str, before: dict[str, bytes]) -> None:
    after = snapshot(workdir)
    assert {name: after.get(name) for name in before} == before


@pytest.fixture(scope="module")
def batches(bad, tmp_path_factory) -> dict:
    """``{(module, case): (status, stderr, workdir, its snapshot before)}`` of every case, each
    entry point's in one process of its own (never this one: a test process may hold another
    entry point's flags)."""
    results = {}
    for module in CASES:
        cases = sorted(CASES[module])
        workdirs = [str(tmp_path_factory.mktemp(case)) for case in cases]
        befores = [earlier_run(w) for w in workdirs]
        outcomes = invoke_all(module, [arguments(module, c, bad, w)
                                       for c, w in zip(cases, workdirs)])
        for case, workdir, before, (status, stderr) in zip(cases, workdirs, befores, outcomes):
            results[module, case] = status, stderr, workdir, before
    return results


@pytest.mark.parametrize("module, case", [(m, c) for m in CASES for c in sorted(CASES[m])])
def test_in_one_process(module, case, bad, batches):
    status, stderr, workdir, before = batches[module, case]
    assert_user_error(status, stderr, fill(CASES[module][case][1], bad, workdir))
    assert_untouched(workdir, before)


@pytest.mark.parametrize("module", sorted(REAL))
def test_real_process(module, bad, tmp_path):
    workdir = str(tmp_path / "run")
    before = earlier_run(workdir)
    status, stderr = run(module, arguments(module, REAL[module], bad, workdir))
    assert_user_error(status, stderr, fill(CASES[module][REAL[module]][1], bad, workdir))
    assert_untouched(workdir, before)


def test_missing_workdir(bad):
    [(status, stderr)] = invoke_all("experiments.train", [SFT])
    assert_user_error(status, stderr, ["flag --workdir=None: Flag --workdir must have a value"])


def test_non_finite_reward_stops_ppo_and_keeps_the_earlier_checkpoints(bad, tmp_path):
    """One PPO iteration on the toy reward, then the same run continued with a reward model whose
    head gives NaN: it stops at step 2 naming the score and its rows, before any checkpoint."""
    workdir = str(tmp_path / "run")
    tiny = [f"--workdir={workdir}", *PPO, "--config.batch_size=2", "--config.eval_prompts=2",
            "--config.ppo.minibatches=1", "--config.sampling.max_new_tokens=4",
            "--config.data.max_prompt_len=16", "--config.data.toy_records=40",
            "--config.ptx.toy_records=0", "--config.save_every=1", "--config.eval_every=0"]
    [(status, stderr)] = invoke_all("experiments.train", [[*tiny, "--config.iterations=1"]])
    assert status == 0, stderr
    before = snapshot(workdir)
    [(status, stderr)] = invoke_all("experiments.train", [[
        *tiny, "--config.iterations=2", "--config.reward.token_count=-1",
        f"--config.reward.path={bad}/nan_reward_model"]])
    assert_user_error(status, stderr, ["step 2: non-finite", "score in 2 of 2 rows"])
    assert_untouched(workdir, before)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
