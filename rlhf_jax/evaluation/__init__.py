"""The paper's evaluations in the simulated world: win rates, RM accuracy, alignment tax."""
