"""The test tiers, in one place: every test file is placed in one tier here, and
``tests/conftest.py`` marks each collected test with its tier, so ``-m TIER`` selects it
(pytest.ini describes the tiers; docs/tests.md gives each one's command and time).

A file's tests take its tier; an entry ``file::test`` places one test elsewhere (every case of a
parametrized test with it). ``tests/test_tiers.py`` checks that every test file is placed once,
that every entry names a file or test that exists, and that every collected test has exactly one
tier, so a new test file must be placed here.
"""

TIERS = {
    "unit": """
        test_files.py test_layers.py test_readme.py test_tiers.py benchmarks/test_max_length.py
        benchmarks/test_rounds.py benchmarks/test_trace_summary.py
        benchmarks/test_scripts.py::test_accelerator_retries_with_xla_only_after_a_cudnn_failure_other_than_memory
        checkpoints/test_errors.py checkpoints/test_gguf.py checkpoints/test_hf_parity.py
        checkpoints/test_lora_export.py checkpoints/test_smollm2.py checkpoints/test_train_state.py
        data/test_collate.py data/test_importers.py data/test_loaders.py
        data/test_prompt_filters.py data/test_records.py data/test_tokenize.py
        evaluation/test_models.py evaluation/test_stats.py
        experiments/test_generate_entry.py
        feedback/test_rubric.py feedback/test_toy.py feedback/test_world.py
        models/test_attention.py models/test_lora.py models/test_mixed_matmul.py
        models/test_transformer.py
        parallel/test_sharding.py
        parallel/test_multihost.py::test_initialize_from_env_takes_the_config_then_the_environment
        pipeline/test_loop.py pipeline/test_nonfinite.py pipeline/test_settings.py
        rl/test_critic_free.py rl/test_objectives.py rl/test_ppo_maths.py rl/test_preference.py
        sampling/test_filters.py sampling/test_generate.py sampling/test_hf_generate.py
        train/test_dpo.py train/test_lora_steps.py train/test_optim.py train/test_ppo.py
        train/test_scored_update.py
        train/test_steps.py
    """,
    "stage": """
        pipeline/test_stages.py pipeline/test_ppo_stage.py pipeline/test_stage_sharding.py
    """,
    "pipeline": """
        pipeline/test_ablations.py pipeline/test_instructgpt.py pipeline/test_real_data_presets.py
        pipeline/test_smollm2_preset.py
    """,
    "notebook": """
        notebooks/test_notebooks.py
    """,
    "slow": """
        benchmarks/test_scripts.py
        experiments/test_bad_inputs.py experiments/test_train_entry.py
        experiments/test_interrupt_sft.py experiments/test_interrupt_rm.py
        experiments/test_interrupt_ppo.py
        parallel/test_multihost.py
        parallel/test_multihost_stages.py parallel/test_multihost_preemption.py
        pipeline/test_instructgpt.py::test_sigterm_stops_the_pipeline_entry_point_and_the_same_command_resumes
    """,
}
# "tests/<path>[::<test>]" -> tier
PLACES = {f"tests/{entry}": tier for tier, entries in TIERS.items() for entry in entries.split()}


def tier_of(nodeid: str) -> str | None:
    """The tier of the test ``nodeid`` (``tests/…/test_x.py::test_y[case]``): its own entry's,
    else its file's; None if neither is placed."""
    test = nodeid.split("[", 1)[0]
    return PLACES.get(test, PLACES.get(test.split("::", 1)[0]))


